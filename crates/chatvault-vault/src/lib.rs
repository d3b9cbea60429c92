//! Backup Key Vault server (chatvault-vault binary): HTTP API, SQLite/PostgreSQL stores.
