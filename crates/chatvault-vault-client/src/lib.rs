//! Blocking HTTP client for the Backup Key Vault.
