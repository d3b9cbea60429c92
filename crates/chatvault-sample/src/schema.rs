//! Table definitions: a trimmed-down copy of WhatsApp for Android's `msgstore.db` and `wa.db`
//! (column names as in the real app, rarely used columns dropped).

/// Per connection: generation speed only; none of these change the file's bytes.
pub(crate) const PRAGMAS_SESSION: &str = "
PRAGMA synchronous = OFF;
PRAGMA cache_size = -65536;
PRAGMA temp_store = MEMORY;
";

pub(crate) const MSGSTORE: &str = "
CREATE TABLE props (_id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT UNIQUE, value TEXT);
CREATE TABLE jid (
  _id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, server TEXT NOT NULL,
  agent INTEGER, device INTEGER, type INTEGER, raw_string TEXT);
CREATE UNIQUE INDEX jid_key_new_index ON jid (user, server, agent, device);
CREATE INDEX jid_raw_string_index ON jid (raw_string);
CREATE TABLE chat (
  _id INTEGER PRIMARY KEY AUTOINCREMENT, jid_row_id INTEGER UNIQUE, hidden INTEGER,
  subject TEXT, created_timestamp INTEGER, display_message_row_id INTEGER,
  last_message_row_id INTEGER, last_read_message_row_id INTEGER,
  last_read_receipt_sent_message_row_id INTEGER, archived INTEGER, sort_timestamp INTEGER,
  mod_tag INTEGER, gen REAL, spam_detection INTEGER, unseen_earliest_message_received_time INTEGER,
  unseen_message_count INTEGER, unseen_missed_calls_count INTEGER, unseen_row_count INTEGER,
  plaintext_disabled INTEGER, vcard_ui_dismissed INTEGER, change_number_notified_message_row_id INTEGER,
  show_group_description INTEGER, ephemeral_expiration INTEGER,
  last_read_ephemeral_message_row_id INTEGER, ephemeral_setting_timestamp INTEGER,
  unseen_important_message_count INTEGER NOT NULL DEFAULT 0, group_type INTEGER NOT NULL DEFAULT 0,
  last_message_reaction_row_id INTEGER);
CREATE TABLE group_participant_user (
  _id INTEGER PRIMARY KEY AUTOINCREMENT, group_jid_row_id INTEGER NOT NULL,
  user_jid_row_id INTEGER NOT NULL, rank INTEGER, pending INTEGER, add_timestamp INTEGER, label TEXT);
CREATE UNIQUE INDEX group_participant_user_index ON group_participant_user (group_jid_row_id, user_jid_row_id);
CREATE TABLE message (
  _id INTEGER PRIMARY KEY AUTOINCREMENT, chat_row_id INTEGER NOT NULL, from_me INTEGER NOT NULL,
  key_id TEXT NOT NULL, sender_jid_row_id INTEGER, status INTEGER, broadcast INTEGER,
  recipient_count INTEGER, participant_hash TEXT, origination_flags INTEGER, origin INTEGER,
  timestamp INTEGER, received_timestamp INTEGER, receipt_server_timestamp INTEGER,
  message_type INTEGER, text_data TEXT, starred INTEGER, lookup_tables INTEGER,
  sort_id INTEGER NOT NULL DEFAULT 0, message_add_on_flags INTEGER NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX message_key_index ON message (chat_row_id, from_me, key_id, sender_jid_row_id);
CREATE INDEX message_sort_id_index ON message (sort_id);
CREATE INDEX message_chat_sort_id_index ON message (chat_row_id, sort_id);
CREATE INDEX message_starred_index ON message (chat_row_id, starred) WHERE starred = 1;
CREATE TABLE message_media (
  message_row_id INTEGER PRIMARY KEY, chat_row_id INTEGER, autotransfer_retry_enabled INTEGER,
  multicast_id TEXT, media_job_uuid TEXT, transferred INTEGER, transcoded INTEGER, file_path TEXT,
  file_size INTEGER, suspicious_content INTEGER, trim_from INTEGER, trim_to INTEGER, face_x INTEGER,
  face_y INTEGER, media_key BLOB, media_key_timestamp INTEGER, width INTEGER, height INTEGER,
  has_streaming_sidecar INTEGER, gif_attribution INTEGER, thumbnail_height_width_ratio REAL,
  direct_path TEXT, first_scan_sidecar BLOB, first_scan_length INTEGER, message_url TEXT,
  mime_type TEXT, file_length INTEGER, media_name TEXT, file_hash TEXT, media_duration INTEGER,
  page_count INTEGER, enc_file_hash TEXT, partial_media_hash TEXT, partial_media_enc_hash TEXT,
  is_animated_sticker INTEGER, original_file_hash TEXT, mute_video INTEGER DEFAULT 0,
  media_caption TEXT);
CREATE INDEX message_media_chat_index ON message_media (chat_row_id, message_row_id);
CREATE INDEX media_hash_index ON message_media (file_hash);
CREATE TABLE receipt_user (
  _id INTEGER PRIMARY KEY AUTOINCREMENT, message_row_id INTEGER NOT NULL,
  receipt_user_jid_row_id INTEGER NOT NULL, receipt_timestamp INTEGER, read_timestamp INTEGER,
  played_timestamp INTEGER);
CREATE UNIQUE INDEX receipt_user_index ON receipt_user (message_row_id, receipt_user_jid_row_id);
CREATE TABLE message_add_on (
  _id INTEGER PRIMARY KEY AUTOINCREMENT, chat_row_id INTEGER NOT NULL, from_me INTEGER NOT NULL,
  key_id TEXT NOT NULL, sender_jid_row_id INTEGER, parent_message_row_id INTEGER NOT NULL,
  timestamp INTEGER, status INTEGER, message_add_on_type INTEGER);
CREATE INDEX message_add_on_parent_index ON message_add_on (parent_message_row_id);
CREATE TABLE message_add_on_reaction (
  message_add_on_row_id INTEGER PRIMARY KEY, reaction TEXT, sender_timestamp INTEGER);
CREATE VIRTUAL TABLE message_ftsv2 USING fts5(content, tokenize = 'unicode61');
";

pub(crate) const WA: &str = "
CREATE TABLE wa_contacts (
  _id INTEGER PRIMARY KEY AUTOINCREMENT, jid TEXT NOT NULL, is_whatsapp_user BOOLEAN NOT NULL,
  status TEXT, status_timestamp INTEGER, number TEXT, raw_contact_id INTEGER, display_name TEXT,
  phone_type INTEGER, phone_label TEXT, unseen_msg_count INTEGER, photo_ts INTEGER, thumb_ts INTEGER,
  photo_id_timestamp INTEGER, given_name TEXT, family_name TEXT, wa_name TEXT, sort_name TEXT,
  nickname TEXT, company TEXT, title TEXT, status_autodownload_disabled INTEGER,
  keep_timestamp INTEGER, is_spam_reported INTEGER, is_sidelist_synced BOOLEAN DEFAULT 0,
  is_business_synced BOOLEAN DEFAULT 0, disappearing_mode_duration INTEGER,
  disappearing_mode_timestamp LONG, history_sync_initial_phash TEXT);
CREATE INDEX wa_contacts_jid_index ON wa_contacts (jid);
";

/// `message.status` of an outgoing message the server delivered but nobody read yet.
pub(crate) const STATUS_DELIVERED: i64 = 5;
/// `message.status` of an outgoing message that was read.
pub(crate) const STATUS_READ: i64 = 13;
/// `message.status` of an incoming message.
pub(crate) const STATUS_RECEIVED: i64 = 0;
/// `message.message_type` of a text message.
pub(crate) const TYPE_TEXT: i64 = 0;

/// Keys in `props` that record how the folder was made.
pub(crate) const PROP_FINGERPRINT: &str = "chatvault_sample_spec";
pub(crate) const PROP_DAY: &str = "chatvault_sample_day";
