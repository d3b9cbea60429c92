//! Client API: device home, key custody (64-digit key or vault password), high-level operations.
