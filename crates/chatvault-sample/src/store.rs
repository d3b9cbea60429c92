//! Building the chat folder (`generate`) and advancing it by one simulated day (`next_day`).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::{Rng, RngCore};
use rand_chacha::ChaCha20Rng;
use rusqlite::{Connection, OptionalExtension, Statement, params};

use crate::calendar::{DAY_MS, HISTORY_START_MS};
use crate::error::IoContext;
use crate::media::{self, MediaKind, Planned};
use crate::rng::{self, Weighted};
use crate::schema::{self, STATUS_DELIVERED, STATUS_READ, STATUS_RECEIVED, TYPE_TEXT};
use crate::{Error, SampleSpec, text};

/// The message store, relative to the chat folder.
pub const MSGSTORE_DB: &str = "Databases/msgstore.db";
/// The contacts database, relative to the chat folder.
pub const WA_DB: &str = "Databases/wa.db";
/// The media folder, relative to the chat folder.
pub const MEDIA_DIR: &str = "Media";
/// Page size of both databases (Android's default).
pub const PAGE_SIZE: usize = 4096;

/// Messages per transaction while generating the history.
const BATCH: u64 = 5_000;

/// What [`generate`](crate::generate) wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// `dir/Databases/msgstore.db`.
    pub msgstore: PathBuf,
    /// `dir/Databases/wa.db`.
    pub wa_db: PathBuf,
    /// Contacts written.
    pub contacts: u32,
    /// Chats written, group chats included.
    pub chats: u32,
    /// Messages written, media messages included.
    pub messages: u64,
    /// Media files written.
    pub media_files: u32,
    /// Total bytes of the media files.
    pub media_bytes: u64,
    /// Size of `msgstore.db` in bytes (WAL checkpointed, no `-wal` file left).
    pub msgstore_bytes: u64,
}

/// What one [`next_day`](crate::next_day) changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DaySummary {
    /// The day applied (1 for the first day after the history).
    pub day: u32,
    /// Messages appended, media messages included.
    pub messages_added: u64,
    /// Media files added.
    pub media_files_added: u32,
    /// Total bytes of the media files added.
    pub media_bytes_added: u64,
    /// Outgoing messages of the previous day marked read.
    pub messages_marked_read: u64,
    /// Messages of this day whose text was edited.
    pub messages_edited: u64,
    /// Reactions added to messages of the last week.
    pub reactions_added: u64,
    /// Old messages starred.
    pub messages_starred: u64,
    /// Old text messages deleted.
    pub messages_deleted: u64,
    /// Size of `msgstore.db` in bytes afterwards.
    pub msgstore_bytes: u64,
}

struct Contact {
    number: String,
    given: &'static str,
    family: &'static str,
}

/// A chat as the generator needs it.
struct Chat {
    row: i64,
    /// `jid` rows of the other members of a group; empty for an individual chat.
    participants: Vec<i64>,
}

/// Latest activity of a chat, written to the `chat` row at the end of a run.
#[derive(Default, Clone)]
struct ChatActivity {
    last_id: i64,
    last_ts: i64,
    last_read_id: i64,
    unseen: i64,
}

fn contacts(spec: &SampleSpec) -> Vec<Contact> {
    let mut rng = rng::stream(spec.seed, rng::STREAM_CONTACTS);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(spec.contacts as usize);
    while out.len() < spec.contacts as usize {
        let cc = ["1", "44", "49", "34", "39", "33", "91", "55"][rng.gen_range(0..8u32) as usize];
        let number = format!(
            "{cc}{:010}",
            rng.gen_range(1_000_000_000..10_000_000_000u64)
        );
        let given = text::GIVEN_NAMES[rng.gen_range(0..text::GIVEN_NAMES.len() as u32) as usize];
        let family = text::FAMILY_NAMES[rng.gen_range(0..text::FAMILY_NAMES.len() as u32) as usize];
        if seen.insert(number.clone()) {
            out.push(Contact {
                number,
                given,
                family,
            });
        }
    }
    out
}

/// How active each chat is: Zipf over a seeded random ranking (a few chats dominate).
fn chat_weights(spec: &SampleSpec) -> Vec<u64> {
    let mut rng = rng::stream(spec.seed, rng::STREAM_CHAT_WEIGHTS);
    let mut ranks: Vec<u64> = (1..=u64::from(spec.chats)).collect();
    ranks.shuffle(&mut rng);
    ranks.iter().map(|r| 1_000_000 / r).collect()
}

/// A time of day in milliseconds, mostly between 7:00 and midnight.
fn time_of_day(rng: &mut impl Rng) -> i64 {
    const HOUR: i64 = 3_600_000;
    if rng.gen_bool(0.85) {
        rng.gen_range(7 * HOUR..24 * HOUR)
    } else {
        rng.gen_range(0..24 * HOUR)
    }
}

fn open(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open(path)?;
    conn.execute_batch(schema::PRAGMAS_SESSION)?;
    Ok(conn)
}

fn create(path: &Path, schema_sql: &str) -> Result<Connection, Error> {
    let conn = Connection::open(path)?;
    // `journal_mode` returns a row, so it can't go through execute_batch in every version.
    conn.pragma_update(None, "page_size", 4096)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    debug_assert_eq!(mode, "wal");
    conn.execute_batch(schema::PRAGMAS_SESSION)?;
    conn.execute_batch(schema_sql)?;
    Ok(conn)
}

fn close(conn: Connection) -> Result<(), Error> {
    conn.close().map_err(|(_, e)| Error::Sqlite(e))
}

fn file_len(path: &Path) -> Result<u64, Error> {
    Ok(fs::metadata(path).at(path)?.len())
}

/// Creates the chat folder; see the crate docs.
pub fn generate(dir: &Path, spec: &SampleSpec) -> Result<Summary, Error> {
    spec.validate()?;
    if dir.exists() && fs::read_dir(dir).at(dir)?.next().is_some() {
        return Err(Error::NotEmpty(dir.to_path_buf()));
    }
    let db_dir = dir.join("Databases");
    fs::create_dir_all(&db_dir).at(&db_dir)?;
    let media_root = dir.join(MEDIA_DIR);
    for kind in MediaKind::ALL {
        let d = media_root.join(kind.dir_name());
        fs::create_dir_all(&d).at(&d)?;
    }
    let people = contacts(spec);
    let wa_db = dir.join(WA_DB);
    write_wa_db(&wa_db, spec, &people)?;

    let msgstore = dir.join(MSGSTORE_DB);
    let writer = media::Writer::spawn(dir.to_path_buf(), spec.seed);
    let built = build_msgstore(&msgstore, spec, &people, &writer);
    let written = writer.finish();
    let messages = built?;
    let (media_files, media_bytes) = written?;
    Ok(Summary {
        msgstore_bytes: file_len(&msgstore)?,
        msgstore,
        wa_db,
        contacts: spec.contacts,
        chats: spec.chats,
        messages,
        media_files,
        media_bytes,
    })
}

fn write_wa_db(path: &Path, spec: &SampleSpec, people: &[Contact]) -> Result<(), Error> {
    let mut rng = rng::stream(spec.seed, rng::STREAM_CONTACTS + 100);
    let conn = create(path, schema::WA)?;
    conn.execute_batch("BEGIN")?;
    {
        let mut insert = conn.prepare(
            "INSERT INTO wa_contacts (jid, is_whatsapp_user, status, status_timestamp, number,
               raw_contact_id, display_name, phone_type, unseen_msg_count, photo_ts, thumb_ts,
               photo_id_timestamp, given_name, family_name, wa_name, sort_name,
               status_autodownload_disabled, keep_timestamp, is_spam_reported)
             VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, 2, 0, ?7, ?7, ?7, ?8, ?9, ?8, ?6, 0, 0, 0)",
        )?;
        for (i, c) in people.iter().enumerate() {
            let name = format!("{} {}", c.given, c.family);
            let photo = HISTORY_START_MS / 1000 - rng.gen_range(0..30_000_000i64);
            insert.execute(params![
                format!("{}@s.whatsapp.net", c.number),
                text::status(&mut rng),
                HISTORY_START_MS - rng.gen_range(0..400 * DAY_MS),
                format!("+{}", c.number),
                i as i64 + 1,
                name,
                photo,
                c.given,
                c.family,
            ])?;
        }
    }
    conn.execute_batch("COMMIT")?;
    close(conn)
}

/// Prepared statements and counters shared by the history and by `next_day`.
struct Emitter<'c, 'w> {
    message: Statement<'c>,
    fts: Statement<'c>,
    media: Statement<'c>,
    receipt: Statement<'c>,
    add_on: Statement<'c>,
    reaction: Statement<'c>,
    writer: &'w media::Writer,
    next_id: i64,
    /// `WA0001` counters per kind and calendar day.
    counters: HashMap<(MediaKind, i64), u32>,
    /// `next_day`'s day number (0 for the history): selects the media content streams.
    day: u32,
    media_index: u32,
}

/// One message written by the [`Emitter`].
struct Emitted {
    id: i64,
    from_me: bool,
    is_text: bool,
}

impl<'c, 'w> Emitter<'c, 'w> {
    fn new(
        conn: &'c Connection,
        writer: &'w media::Writer,
        next_id: i64,
        day: u32,
    ) -> Result<Self, Error> {
        Ok(Self {
            message: conn.prepare(
                "INSERT INTO message (_id, chat_row_id, from_me, key_id, sender_jid_row_id, status,
                   broadcast, recipient_count, origination_flags, origin, timestamp,
                   received_timestamp, receipt_server_timestamp, message_type, text_data, starred,
                   lookup_tables, sort_id, message_add_on_flags)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, 0, 0, ?8, ?9, ?10, ?11, ?12, 0, 0, ?1, ?13)",
            )?,
            fts: conn.prepare("INSERT INTO message_ftsv2 (rowid, content) VALUES (?1, ?2)")?,
            media: conn.prepare(
                "INSERT INTO message_media (message_row_id, chat_row_id, autotransfer_retry_enabled,
                   media_job_uuid, transferred, transcoded, file_path, file_size, suspicious_content,
                   trim_from, trim_to, face_x, face_y, media_key, media_key_timestamp, width, height,
                   has_streaming_sidecar, gif_attribution, thumbnail_height_width_ratio, direct_path,
                   message_url, mime_type, file_length, media_name, file_hash, media_duration,
                   page_count, enc_file_hash, is_animated_sticker, mute_video)
                 VALUES (?1, ?2, 0, ?3, 1, 0, ?4, ?5, 0, 0, 0, 0, 0, ?6, ?7, ?8, ?9, ?10, 0, ?11,
                   ?12, ?13, ?14, ?5, ?15, ?16, ?17, ?18, ?19, 0, 0)",
            )?,
            receipt: conn.prepare(
                "INSERT INTO receipt_user (message_row_id, receipt_user_jid_row_id,
                   receipt_timestamp, read_timestamp, played_timestamp)
                 VALUES (?1, ?2, ?3, ?4, NULL)",
            )?,
            add_on: conn.prepare(
                "INSERT INTO message_add_on (chat_row_id, from_me, key_id, sender_jid_row_id,
                   parent_message_row_id, timestamp, status, message_add_on_type)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 56)",
            )?,
            reaction: conn.prepare(
                "INSERT INTO message_add_on_reaction (message_add_on_row_id, reaction, sender_timestamp)
                 VALUES (last_insert_rowid(), ?1, ?2)",
            )?,
            writer,
            next_id,
            counters: HashMap::new(),
            day,
            media_index: 0,
        })
    }

    /// Writes one message (with its FTS row, media row and file, receipts, maybe a reaction).
    /// `read`: whether outgoing messages and their receipts are already read.
    fn emit(
        &mut self,
        rng: &mut ChaCha20Rng,
        chat: &Chat,
        ts: i64,
        media: Option<Planned>,
        read: bool,
    ) -> Result<Emitted, Error> {
        let id = self.next_id;
        self.next_id += 1;
        let from_me = rng.gen_bool(0.4);
        let sender = if from_me || chat.participants.is_empty() {
            0
        } else {
            chat.participants[rng.gen_range(0..chat.participants.len() as u32) as usize]
        };
        let status = match (from_me, read) {
            (false, _) => STATUS_RECEIVED,
            (true, true) => STATUS_READ,
            (true, false) => STATUS_DELIVERED,
        };
        let (message_type, text) = match media {
            None => (TYPE_TEXT, Some(text::message(rng))),
            Some(m) => (
                m.kind.message_type(),
                match m.kind {
                    MediaKind::Image | MediaKind::Video => text::caption(rng),
                    _ => None,
                },
            ),
        };
        let reacted = rng.gen_bool(0.02);
        let recipients = if from_me {
            chat.participants.len().max(1) as i64
        } else {
            0
        };
        let received = if from_me {
            ts
        } else {
            ts + rng.gen_range(200..5_000)
        };
        let server_receipt = if from_me {
            ts + rng.gen_range(300..3_000)
        } else {
            -1
        };
        self.message.execute(params![
            id,
            chat.row,
            from_me,
            key_id(rng),
            sender,
            status,
            recipients,
            ts,
            received,
            server_receipt,
            message_type,
            text,
            i64::from(reacted),
        ])?;
        if let Some(t) = &text {
            self.fts.execute(params![id, t])?;
        }
        if let Some(m) = media {
            self.media_row(rng, id, chat.row, ts, m)?;
        }
        if from_me && !chat.participants.is_empty() {
            let n = rng.gen_range(1..=4u32).min(chat.participants.len() as u32) as usize;
            let start = rng.gen_range(0..chat.participants.len() as u32) as usize;
            for k in 0..n {
                let who = chat.participants[(start + k) % chat.participants.len()];
                let delivered = ts + rng.gen_range(1_000..60_000);
                let read_at = read.then(|| delivered + rng.gen_range(60_000..10_800_000));
                self.receipt.execute(params![id, who, delivered, read_at])?;
            }
        }
        if reacted {
            let at = ts + rng.gen_range(10_000..3_600_000);
            self.react(rng, chat.row, id, at)?;
        }
        Ok(Emitted {
            id,
            from_me,
            is_text: media.is_none(),
        })
    }

    fn react(
        &mut self,
        rng: &mut ChaCha20Rng,
        chat: i64,
        parent: i64,
        ts: i64,
    ) -> Result<(), Error> {
        let from_me = rng.gen_bool(0.5);
        self.add_on
            .execute(params![chat, from_me, key_id(rng), 0, parent, ts])?;
        let emoji = ["👍", "❤️", "😂", "😮", "😢", "🙏"][rng.gen_range(0..6u32) as usize];
        self.reaction.execute(params![emoji, ts])?;
        Ok(())
    }

    fn media_row(
        &mut self,
        rng: &mut ChaCha20Rng,
        id: i64,
        chat: i64,
        ts: i64,
        m: Planned,
    ) -> Result<(), Error> {
        let counter = self.counters.entry((m.kind, ts / DAY_MS)).or_insert(0);
        *counter += 1;
        let relative_path = m.kind.relative_path(ts, *counter);
        let mut media_key = [0u8; 32];
        rng.fill_bytes(&mut media_key);
        let mut hashes = [0u8; 64];
        rng.fill_bytes(&mut hashes);
        let mut job_uuid = [0u8; 16];
        rng.fill_bytes(&mut job_uuid);
        let uuid = rng::hex_upper(&job_uuid).to_lowercase();
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            &uuid[..8],
            &uuid[8..12],
            &uuid[12..16],
            &uuid[16..20],
            &uuid[20..]
        );
        let direct_path = format!(
            "/v/t62.7118-24/{}_{}_{}_n.enc?ccb=11-4&oh=01_{}&oe={:X}",
            rng.gen_range(10_000_000..99_999_999u64),
            rng.gen_range(1_000_000_000_000_000..9_999_999_999_999_999u64),
            rng.gen_range(1_000_000_000_000_000..9_999_999_999_999_999u64),
            rng::token(rng, 40),
            ts / 1000 + 30 * 86_400
        );
        let url = format!("https://mmg.whatsapp.net{direct_path}&mms3=true");
        let (width, height, duration, pages, name) = match m.kind {
            MediaKind::Image => {
                let portrait = rng.gen_bool(0.6);
                let (w, h) = if portrait { (1200, 1600) } else { (1600, 1200) };
                (w, h, 0, 0, None)
            }
            MediaKind::Video => (848, 480, (m.size / 250_000) as i64 + 1, 0, None),
            MediaKind::VoiceNote => (0, 0, (m.size / 2_000) as i64 + 1, 0, None),
            MediaKind::Document => (
                0,
                0,
                0,
                (m.size / 60_000) as i64 + 1,
                Some(text::document_name(rng)),
            ),
        };
        let ratio = if height > 0 {
            Some(f64::from(height) / f64::from(width))
        } else {
            None
        };
        self.media.execute(params![
            id,
            chat,
            uuid,
            relative_path,
            m.size as i64,
            &media_key[..],
            ts / 1000,
            width,
            height,
            i64::from(m.kind == MediaKind::Video),
            ratio,
            direct_path,
            url,
            m.kind.mime_type(),
            name,
            rng::base64(&hashes[..32]),
            duration,
            pages,
            rng::base64(&hashes[32..]),
        ])?;
        self.writer.send(media::Job {
            relative_path,
            kind: m.kind,
            size: m.size,
            day: self.day,
            index: self.media_index,
            mtime_ms: ts,
        });
        self.media_index += 1;
        Ok(())
    }
}

/// A 32-hex-digit message key id, as Android WhatsApp generates them.
fn key_id(rng: &mut impl RngCore) -> String {
    let mut key = [0u8; 16];
    rng.fill_bytes(&mut key);
    rng::hex_upper(&key)
}

fn set_prop(conn: &Connection, key: &str, value: &str) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO props (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

fn build_msgstore(
    path: &Path,
    spec: &SampleSpec,
    people: &[Contact],
    writer: &media::Writer,
) -> Result<u64, Error> {
    let mut rng = rng::stream(spec.seed, rng::STREAM_HISTORY);
    let conn = create(path, schema::MSGSTORE)?;
    conn.execute_batch("BEGIN")?;
    set_prop(&conn, schema::PROP_FINGERPRINT, &spec.fingerprint())?;
    set_prop(&conn, schema::PROP_DAY, "0")?;
    let chats = write_chats(&conn, &mut rng, spec, people)?;

    let weights = Weighted::new(&chat_weights(spec));
    let plan = media::plan(
        &mut rng::stream(spec.seed, rng::STREAM_MEDIA_PLAN),
        spec.media_files,
        spec.media_bytes_target,
    );
    let mut activity = vec![ChatActivity::default(); chats.len()];
    let days = i64::from(spec.history_days);
    let last_day_start = HISTORY_START_MS + (days - 1) * DAY_MS;
    let day_weights: Vec<u64> = (0..days).map(|_| rng.gen_range(50..=150u64)).collect();
    let total_weight: u64 = day_weights.iter().sum();

    let mut em = Emitter::new(&conn, writer, 1, 0)?;
    let (mut emitted, mut cumulative, mut next_media) = (0u64, 0u64, 0usize);
    for (d, w) in day_weights.iter().enumerate() {
        cumulative += w;
        let upto =
            (u128::from(spec.messages) * u128::from(cumulative) / u128::from(total_weight)) as u64;
        let day_start = HISTORY_START_MS + d as i64 * DAY_MS;
        let mut times: Vec<i64> = (emitted..upto).map(|_| time_of_day(&mut rng)).collect();
        times.sort_unstable();
        for t in times {
            let ts = day_start + t;
            let c = weights.pick(&mut rng);
            let media_left = (plan.len() - next_media) as u64;
            let media = if rng.gen_range(0..spec.messages - emitted) < media_left {
                next_media += 1;
                Some(plan[next_media - 1])
            } else {
                None
            };
            let read = ts < last_day_start;
            let m = em.emit(&mut rng, &chats[c], ts, media, read)?;
            let a = &mut activity[c];
            a.last_id = m.id;
            a.last_ts = ts;
            if !m.from_me && !read {
                a.unseen += 1;
            } else {
                a.last_read_id = m.id;
            }
            emitted += 1;
            if emitted % BATCH == 0 {
                conn.execute_batch("COMMIT; BEGIN")?;
            }
        }
    }
    drop(em);
    update_chats(&conn, &chats, &activity, true)?;
    conn.execute_batch("COMMIT")?;
    close(conn)?;
    Ok(emitted)
}

fn write_chats(
    conn: &Connection,
    rng: &mut ChaCha20Rng,
    spec: &SampleSpec,
    people: &[Contact],
) -> Result<Vec<Chat>, Error> {
    let mut jid = conn.prepare(
        "INSERT INTO jid (_id, user, server, agent, device, type, raw_string)
         VALUES (?1, ?2, ?3, 0, 0, ?4, ?5)",
    )?;
    for (i, c) in people.iter().enumerate() {
        let raw = format!("{}@s.whatsapp.net", c.number);
        jid.execute(params![i as i64 + 1, c.number, "s.whatsapp.net", 0, raw])?;
    }
    let mut chat = conn.prepare(
        "INSERT INTO chat (_id, jid_row_id, hidden, subject, created_timestamp, archived,
           sort_timestamp, mod_tag, gen, spam_detection, unseen_message_count,
           unseen_missed_calls_count, unseen_row_count, plaintext_disabled, vcard_ui_dismissed,
           show_group_description, group_type)
         VALUES (?1, ?2, 0, ?3, ?4, ?5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, ?6)",
    )?;
    let mut member = conn.prepare(
        "INSERT INTO group_participant_user (group_jid_row_id, user_jid_row_id, rank, pending,
           add_timestamp)
         VALUES (?1, ?2, ?3, 0, ?4)",
    )?;
    let individual = spec.chats - spec.group_chats;
    let mut chats = Vec::with_capacity(spec.chats as usize);
    for i in 0..spec.chats {
        let row = i64::from(i) + 1;
        let created = HISTORY_START_MS - rng.gen_range(0..700 * DAY_MS);
        let archived = rng.gen_bool(0.05);
        if i < individual {
            chat.execute(params![row, row, None::<String>, created, archived, 0])?;
            chats.push(Chat {
                row,
                participants: Vec::new(),
            });
            continue;
        }
        let jid_row = people.len() as i64 + i64::from(i - individual) + 1;
        let user = format!("120363{:012}", rng.gen_range(0..1_000_000_000_000u64));
        let raw = format!("{user}@g.us");
        jid.execute(params![jid_row, user, "g.us", 1, raw])?;
        let subject = format!(
            "{} {}",
            [
                "Family",
                "Football",
                "Book club",
                "Flat",
                "Team",
                "Trip",
                "Class of 2012"
            ][rng.gen_range(0..7u32) as usize],
            [
                "🏠", "⚽", "📚", "🍕", "💼", "✈️", "🎓", "chat", "group", "2024"
            ][rng.gen_range(0..10u32) as usize]
        );
        chat.execute(params![row, jid_row, subject, created, archived, 1])?;
        // A partial Fisher–Yates shuffle picks distinct members.
        let n = rng.gen_range(2..=30u32).min(people.len() as u32);
        let mut pool: Vec<i64> = (1..=people.len() as i64).collect();
        let mut participants = Vec::with_capacity(n as usize);
        for k in 0..n as usize {
            let j = rng.gen_range(k as u32..pool.len() as u32) as usize;
            pool.swap(k, j);
            participants.push(pool[k]);
            member.execute(params![jid_row, pool[k], i64::from(k == 0), created])?;
        }
        chats.push(Chat { row, participants });
    }
    Ok(chats)
}

/// Writes the latest activity into the `chat` rows. `absolute`: the counters replace the stored
/// ones (history) rather than add to them (a day).
fn update_chats(
    conn: &Connection,
    chats: &[Chat],
    activity: &[ChatActivity],
    absolute: bool,
) -> Result<(), Error> {
    let sql = if absolute {
        "UPDATE chat SET display_message_row_id = ?2, last_message_row_id = ?2,
           last_read_message_row_id = ?3, last_read_receipt_sent_message_row_id = ?3,
           sort_timestamp = ?4, unseen_message_count = ?5, unseen_row_count = ?5
         WHERE _id = ?1"
    } else {
        "UPDATE chat SET display_message_row_id = ?2, last_message_row_id = ?2,
           last_read_message_row_id = max(coalesce(last_read_message_row_id, 0), ?3),
           last_read_receipt_sent_message_row_id = max(coalesce(last_read_message_row_id, 0), ?3),
           sort_timestamp = ?4, unseen_message_count = unseen_message_count + ?5,
           unseen_row_count = unseen_row_count + ?5
         WHERE _id = ?1"
    };
    let mut update = conn.prepare(sql)?;
    for (chat, a) in chats.iter().zip(activity) {
        if a.last_id != 0 {
            update.execute(params![
                chat.row,
                a.last_id,
                a.last_read_id,
                a.last_ts,
                a.unseen
            ])?;
        }
    }
    Ok(())
}

/// Advances the chat folder by one day; see the crate docs.
pub fn next_day(dir: &Path, spec: &SampleSpec, day: u32) -> Result<DaySummary, Error> {
    spec.validate()?;
    let msgstore = dir.join(MSGSTORE_DB);
    if !msgstore.is_file() {
        return Err(Error::NotASample(dir.to_path_buf()));
    }
    let conn = open(&msgstore)?;
    let prop = |key: &str| -> Result<Option<String>, Error> {
        Ok(conn
            .query_row("SELECT value FROM props WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    };
    if prop(schema::PROP_FINGERPRINT)?.as_deref() != Some(spec.fingerprint().as_str()) {
        return Err(Error::SpecMismatch);
    }
    let done: u32 = prop(schema::PROP_DAY)?
        .and_then(|d| d.parse().ok())
        .ok_or(Error::SpecMismatch)?;
    if day != done + 1 {
        return Err(Error::DayOutOfOrder {
            expected: done + 1,
            got: day,
        });
    }
    let writer = media::Writer::spawn(dir.to_path_buf(), spec.seed);
    let applied = apply_day(&conn, spec, day, &writer);
    let written = writer.finish();
    let mut summary = applied?;
    close(conn)?;
    let (files, bytes) = written?;
    summary.media_files_added = files;
    summary.media_bytes_added = bytes;
    summary.msgstore_bytes = file_len(&msgstore)?;
    update_contacts(&dir.join(WA_DB), spec, day)?;
    Ok(summary)
}

fn load_chats(conn: &Connection) -> Result<Vec<Chat>, Error> {
    let mut members: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut stmt = conn.prepare(
        "SELECT group_jid_row_id, user_jid_row_id FROM group_participant_user ORDER BY _id",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (group, user) = row?;
        members.entry(group).or_default().push(user);
    }
    let mut stmt = conn.prepare("SELECT _id, jid_row_id FROM chat ORDER BY _id")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
    let mut chats = Vec::new();
    for row in rows {
        let (row, jid) = row?;
        chats.push(Chat {
            row,
            participants: members.remove(&jid).unwrap_or_default(),
        });
    }
    Ok(chats)
}

/// Simulates day `day` in one transaction: the morning's read receipts, the day's messages (and
/// media, through `writer`), edits, reactions, stars and deletes, then the chats' latest activity.
/// Every step draws from the day's own random stream in this order, so a seed always gives the
/// same day.
fn apply_day(
    conn: &Connection,
    spec: &SampleSpec,
    day: u32,
    writer: &media::Writer,
) -> Result<DaySummary, Error> {
    let rng = rng::stream(spec.seed, rng::STREAM_DAY_BASE + u64::from(day));
    let chats = load_chats(conn)?;
    if chats.len() != spec.chats as usize {
        return Err(Error::SpecMismatch);
    }
    let max_before: i64 = conn.query_row("SELECT coalesce(max(_id), 0) FROM message", [], |r| {
        r.get(0)
    })?;
    let mut d = Day {
        conn,
        spec,
        rng,
        max_before,
        // Messages of about the last week: targets of reactions, spared by deletes.
        week: (spec.messages / u64::from(spec.history_days) * 7).max(1) as i64,
        day_start: HISTORY_START_MS + (i64::from(spec.history_days) + i64::from(day) - 1) * DAY_MS,
    };

    conn.execute_batch("BEGIN")?;
    let marked_read = d.mark_read()?;
    let (active, active_weights) = d.active_chats();
    let plan = media::plan(
        &mut d.rng,
        spec.day_media_files,
        spec.day_media_bytes_target,
    );
    let times = d.message_times();
    let mut em = Emitter::new(conn, writer, max_before + 1, day)?;
    let (activity, own_texts) =
        d.messages(&mut em, &chats, &active, &active_weights, &plan, &times)?;
    let edited = d.edits(own_texts)?;
    let reactions = d.reactions(&mut em)?;
    drop(em);
    let starred = d.stars()?;
    let deleted = d.deletes()?;

    update_chats(conn, &chats, &activity, false)?;
    set_prop(conn, schema::PROP_DAY, &day.to_string())?;
    conn.execute_batch("COMMIT")?;
    Ok(DaySummary {
        day,
        messages_added: u64::from(spec.day_messages),
        media_files_added: 0,
        media_bytes_added: 0,
        messages_marked_read: marked_read,
        messages_edited: edited,
        reactions_added: reactions,
        messages_starred: starred,
        messages_deleted: deleted,
        msgstore_bytes: 0,
    })
}

/// An own text message of the day, (id, time): what the edits step picks from.
type OwnText = (i64, i64);

/// What the steps of one simulated day ([`apply_day`]) share: the open database, the spec, the
/// day's random stream and where the day sits in the history.
struct Day<'c> {
    conn: &'c Connection,
    spec: &'c SampleSpec,
    /// The day's random stream; the steps draw from it in a fixed order (determinism).
    rng: ChaCha20Rng,
    /// The highest message id before the day (reactions, stars and deletes target older ones).
    max_before: i64,
    /// Messages of about the last week: targets of reactions, spared by deletes.
    week: i64,
    /// The day's first millisecond.
    day_start: i64,
}

impl Day<'_> {
    /// Morning: yesterday's outgoing messages and their receipts are read. Returns how many
    /// messages were marked read.
    fn mark_read(&mut self) -> Result<u64, Error> {
        let marked_read = self.conn.execute(
            "UPDATE message SET status = ?1 WHERE from_me = 1 AND status = ?2",
            params![STATUS_READ, STATUS_DELIVERED],
        )? as u64;
        self.conn.execute(
            "UPDATE receipt_user SET read_timestamp = receipt_timestamp + 1800000
             WHERE read_timestamp IS NULL",
            [],
        )?;
        Ok(marked_read)
    }

    /// The day's active chats (indices into the chat list, weighted picks without repeats) and
    /// their weights: the day's messages go only to these.
    fn active_chats(&mut self) -> (Vec<usize>, Vec<u64>) {
        let all_weights = chat_weights(self.spec);
        let picker = Weighted::new(&all_weights);
        let want = self.spec.day_active_chats.clamp(1, self.spec.chats) as usize;
        let mut active: Vec<usize> = Vec::with_capacity(want);
        for _ in 0..want * 100 {
            if active.len() == want {
                break;
            }
            let c = picker.pick(&mut self.rng);
            if !active.contains(&c) {
                active.push(c);
            }
        }
        let active_weights: Vec<u64> = active.iter().map(|&c| all_weights[c]).collect();
        (active, active_weights)
    }

    /// The times of the day's messages (milliseconds after the day's start), in order.
    fn message_times(&mut self) -> Vec<i64> {
        let mut times: Vec<i64> = (0..self.spec.day_messages)
            .map(|_| time_of_day(&mut self.rng))
            .collect();
        times.sort_unstable();
        times
    }

    /// The day's messages, in the active chats, with the planned media spread evenly among
    /// them. Returns each chat's latest activity and the own text messages (id, time) that the
    /// edits step picks from.
    fn messages(
        &mut self,
        em: &mut Emitter<'_, '_>,
        chats: &[Chat],
        active: &[usize],
        active_weights: &[u64],
        plan: &[Planned],
        times: &[i64],
    ) -> Result<(Vec<ChatActivity>, Vec<OwnText>), Error> {
        let active_picker = Weighted::new(active_weights);
        let mut activity = vec![ChatActivity::default(); chats.len()];
        let mut own_texts = Vec::new();
        let mut next_media = 0usize;
        let n = u64::from(self.spec.day_messages);
        for (i, t) in times.iter().enumerate() {
            let ts = self.day_start + t;
            let c = active[active_picker.pick(&mut self.rng)];
            let media_left = (plan.len() - next_media) as u64;
            let media = if self.rng.gen_range(0..n - i as u64) < media_left {
                next_media += 1;
                Some(plan[next_media - 1])
            } else {
                None
            };
            let m = em.emit(&mut self.rng, &chats[c], ts, media, false)?;
            let a = &mut activity[c];
            a.last_id = m.id;
            a.last_ts = ts;
            if m.from_me {
                a.last_read_id = m.id;
                if m.is_text {
                    own_texts.push((m.id, ts));
                }
            } else {
                a.unseen += 1;
            }
        }
        Ok((activity, own_texts))
    }

    /// Edits of the day's own messages (text and search index). Returns how many.
    fn edits(&mut self, mut own_texts: Vec<OwnText>) -> Result<u64, Error> {
        own_texts.shuffle(&mut self.rng);
        let mut edited = 0;
        for &(id, _) in own_texts.iter().take(self.spec.day_edits as usize) {
            let new_text = text::message(&mut self.rng);
            self.conn.execute(
                "UPDATE message SET text_data = ?2, message_add_on_flags = message_add_on_flags | 2
                 WHERE _id = ?1",
                params![id, new_text],
            )?;
            self.conn.execute(
                "UPDATE message_ftsv2 SET content = ?2 WHERE rowid = ?1",
                params![id, new_text],
            )?;
            edited += 1;
        }
        Ok(edited)
    }

    /// Reactions to messages of the last week. Returns how many.
    fn reactions(&mut self, em: &mut Emitter<'_, '_>) -> Result<u64, Error> {
        let mut reactions = 0;
        let (max_before, week) = (self.max_before, self.week);
        let day_end = self.day_start + DAY_MS;
        for _ in 0..self.spec.day_reactions {
            let parent = max_before - self.rng.gen_range(0..week.min(max_before).max(1));
            let chat: Option<i64> = self
                .conn
                .query_row(
                    "SELECT chat_row_id FROM message WHERE _id = ?1",
                    [parent],
                    |r| r.get(0),
                )
                .optional()?;
            let ts = self.day_start + self.rng.gen_range(0..DAY_MS);
            if let Some(chat) = chat {
                em.react(&mut self.rng, chat, parent, ts.min(day_end - 1))?;
                self.conn.execute(
                    "UPDATE message SET message_add_on_flags = message_add_on_flags | 1 WHERE _id = ?1",
                    [parent],
                )?;
                reactions += 1;
            }
        }
        Ok(reactions)
    }

    /// Stars anywhere in the history. Returns how many messages became starred.
    fn stars(&mut self) -> Result<u64, Error> {
        let mut starred = 0;
        for _ in 0..self.spec.day_stars {
            let id = self.rng.gen_range(1..=self.max_before.max(1));
            starred += self.conn.execute(
                "UPDATE message SET starred = 1 WHERE _id = ?1 AND starred = 0",
                [id],
            )? as u64;
        }
        Ok(starred)
    }

    /// Deletes of old text messages that no chat shows as its last one (with their search
    /// row, receipts and reactions). Returns how many.
    fn deletes(&mut self) -> Result<u64, Error> {
        let conn = self.conn;
        let mut deleted = 0;
        let oldest_spared = (self.max_before - self.week).max(1);
        for _ in 0..self.spec.day_deletes {
            for _attempt in 0..20 {
                let id = self.rng.gen_range(1..=oldest_spared);
                let n = conn.execute(
                    "DELETE FROM message WHERE _id = ?1 AND message_type = ?2
                       AND NOT EXISTS (SELECT 1 FROM chat WHERE last_message_row_id = ?1)",
                    params![id, TYPE_TEXT],
                )?;
                if n == 1 {
                    conn.execute("DELETE FROM message_ftsv2 WHERE rowid = ?1", [id])?;
                    conn.execute("DELETE FROM receipt_user WHERE message_row_id = ?1", [id])?;
                    conn.execute(
                        "DELETE FROM message_add_on_reaction WHERE message_add_on_row_id IN
                           (SELECT _id FROM message_add_on WHERE parent_message_row_id = ?1)",
                        [id],
                    )?;
                    conn.execute(
                        "DELETE FROM message_add_on WHERE parent_message_row_id = ?1",
                        [id],
                    )?;
                    deleted += 1;
                    break;
                }
            }
        }
        Ok(deleted)
    }
}

/// A couple of contacts change their "about" line.
fn update_contacts(path: &Path, spec: &SampleSpec, day: u32) -> Result<(), Error> {
    let mut rng = rng::stream(spec.seed, rng::STREAM_DAY_BASE + u64::from(day) + (1 << 32));
    let conn = open(path)?;
    let day_start = HISTORY_START_MS + (i64::from(spec.history_days) + i64::from(day) - 1) * DAY_MS;
    for _ in 0..2 {
        let id = rng.gen_range(1..=i64::from(spec.contacts));
        conn.execute(
            "UPDATE wa_contacts SET status = ?2, status_timestamp = ?3 WHERE _id = ?1",
            params![
                id,
                text::status(&mut rng),
                day_start + time_of_day(&mut rng)
            ],
        )?;
    }
    close(conn)
}
