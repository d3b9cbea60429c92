//! Deterministic sample chat-folder generator (WhatsApp-like SQLite store + media) for demo, tests and benchmarks.
