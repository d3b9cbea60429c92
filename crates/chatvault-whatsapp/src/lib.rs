//! WhatsApp crypt15 backup interop (decrypt/encrypt) with the 64-digit key.
