//! Repository format primitives: backup key, subkeys, AEAD envelopes, typed ids, on-disk structures. No I/O.
