//! Backup Key Vault protocol core (OPAQUE, guess limit, sealed records). Pure: no I/O; RNG and clock injected.
