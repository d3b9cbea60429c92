//! Integration tests: generate the small preset, check it like a backup tool would, advance it.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use chatvault_sample::{
    Error, MEDIA_DIR, MSGSTORE_DB, MediaKind, PAGE_SIZE, SampleSpec, WA_DB, changed_pages,
    generate, next_day,
};
use rusqlite::Connection;

/// Every file under `root`, by relative path, with its bytes and (media files only: databases
/// are written now) modification time.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let meta = fs::metadata(&path).unwrap();
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                let mtime = if rel.starts_with(MEDIA_DIR) {
                    meta.modified().unwrap()
                } else {
                    std::time::UNIX_EPOCH
                };
                out.insert(rel, (fs::read(&path).unwrap(), mtime));
            }
        }
    }
    out
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn kind_of(rel: &Path) -> MediaKind {
    let dir = rel.iter().nth(1).unwrap().to_str().unwrap();
    MediaKind::ALL
        .into_iter()
        .find(|k| k.dir_name() == dir)
        .unwrap_or_else(|| panic!("unexpected media folder {dir}"))
}

#[test]
fn small_preset_is_a_consistent_chat_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("phone");
    let spec = SampleSpec::small();
    let summary = generate(&dir, &spec).unwrap();

    assert_eq!(summary.messages, spec.messages);
    assert_eq!(summary.media_files, spec.media_files);
    assert_eq!(summary.media_bytes, spec.media_bytes_target);
    assert!(dir.join(WA_DB).is_file());
    assert!(!dir.join("Databases/msgstore.db-wal").exists());
    let db_len = fs::metadata(dir.join(MSGSTORE_DB)).unwrap().len();
    assert_eq!(db_len, summary.msgstore_bytes);
    assert!((2_000_000..6_000_000).contains(&db_len), "{db_len}");

    let conn = Connection::open(dir.join(MSGSTORE_DB)).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(count(&conn, "PRAGMA page_size"), PAGE_SIZE as i64);
    assert_eq!(
        count(&conn, "SELECT count(*) FROM message"),
        spec.messages as i64
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM chat"),
        i64::from(spec.chats)
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM message_media"),
        i64::from(spec.media_files)
    );
    let hits = count(
        &conn,
        "SELECT count(*) FROM message_ftsv2 WHERE message_ftsv2 MATCH 'dinner'",
    );
    assert!(hits > 10, "FTS hits: {hits}");
    let joined = count(
        &conn,
        "SELECT count(*) FROM message_ftsv2 f JOIN message m ON m._id = f.rowid
         WHERE message_ftsv2 MATCH 'tomorrow' AND m.text_data LIKE '%tomorrow%'",
    );
    assert!(joined > 10, "FTS rows must match message rows: {joined}");

    // Every media row points at a file of the recorded size; every file is in range.
    let mut stmt = conn
        .prepare("SELECT file_path, file_size FROM message_media")
        .unwrap();
    let rows: Vec<(String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (path, size) in &rows {
        assert_eq!(
            fs::metadata(dir.join(path)).unwrap().len(),
            *size as u64,
            "{path}"
        );
    }
    let media: Vec<_> = snapshot(&dir)
        .into_iter()
        .filter(|(rel, _)| rel.starts_with(MEDIA_DIR))
        .collect();
    assert_eq!(media.len(), spec.media_files as usize);
    for (rel, (bytes, _)) in &media {
        let kind = kind_of(rel);
        assert!(
            kind.size_range().contains(&(bytes.len() as u64)),
            "{rel:?}: {}",
            bytes.len()
        );
        let magic: &[u8] = match kind {
            MediaKind::Image => b"\xFF\xD8\xFF",
            MediaKind::VoiceNote => b"OggS",
            MediaKind::Video => b"\0\0\0\x20ftyp",
            MediaKind::Document => b"%PDF-",
            _ => unreachable!(),
        };
        assert!(bytes.starts_with(magic), "{rel:?}");
    }
}

#[test]
fn generation_is_byte_identical_and_seed_dependent() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = SampleSpec::small();
    generate(&tmp.path().join("a"), &spec).unwrap();
    generate(&tmp.path().join("b"), &spec).unwrap();
    let (a, b) = (
        snapshot(&tmp.path().join("a")),
        snapshot(&tmp.path().join("b")),
    );
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (rel, file) in &a {
        assert!(file == &b[rel], "{rel:?} differs between two generations");
    }

    generate(&tmp.path().join("c"), &spec.clone().with_seed(99)).unwrap();
    let db = Path::new(MSGSTORE_DB);
    assert_ne!(snapshot(&tmp.path().join("c"))[db].0, a[db].0);
}

#[test]
fn next_day_appends_and_scatters_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("phone");
    let spec = SampleSpec::small();
    generate(&dir, &spec).unwrap();
    let db = dir.join(MSGSTORE_DB);
    let before = tmp.path().join("before.db");
    fs::copy(&db, &before).unwrap();

    let day = next_day(&dir, &spec, 1).unwrap();
    assert_eq!(day.day, 1);
    assert_eq!(day.messages_added, u64::from(spec.day_messages));
    assert_eq!(day.media_files_added, spec.day_media_files);
    assert_eq!(day.media_bytes_added, spec.day_media_bytes_target);
    assert_eq!(day.messages_deleted, u64::from(spec.day_deletes));
    assert!(day.messages_marked_read > 0);

    let conn = Connection::open(&db).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let expected = spec.messages + day.messages_added - day.messages_deleted;
    assert_eq!(
        count(&conn, "SELECT count(*) FROM message"),
        expected as i64
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM message_media"),
        i64::from(spec.media_files + spec.day_media_files)
    );
    let media = snapshot(&dir)
        .keys()
        .filter(|rel| rel.starts_with(MEDIA_DIR))
        .count();
    assert_eq!(media, (spec.media_files + spec.day_media_files) as usize);
    drop(conn);

    let changed = changed_pages(&before, &db, PAGE_SIZE).unwrap();
    let total = (day.msgstore_bytes / PAGE_SIZE as u64) as usize;
    assert!(
        changed.len() > 40,
        "too few changed pages: {}",
        changed.len()
    );
    assert!(
        changed.len() < total / 3,
        "too many changed pages: {} of {total}",
        changed.len()
    );
    // Scattered: changes in every quarter of the old file, not only appended at its end.
    let old_pages = fs::metadata(&before).unwrap().len() / PAGE_SIZE as u64;
    for q in 0..4 {
        let (lo, hi) = (old_pages * q / 4, old_pages * (q + 1) / 4);
        assert!(
            changed.iter().any(|&p| (lo..hi).contains(&p)),
            "no changed page in quarter {q}"
        );
    }
}

#[test]
fn next_day_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = SampleSpec::small();
    for name in ["a", "b"] {
        let dir = tmp.path().join(name);
        generate(&dir, &spec).unwrap();
        next_day(&dir, &spec, 1).unwrap();
        next_day(&dir, &spec, 2).unwrap();
    }
    let (a, b) = (
        snapshot(&tmp.path().join("a")),
        snapshot(&tmp.path().join("b")),
    );
    assert_eq!(a.len(), b.len());
    for (rel, file) in &a {
        assert!(file == &b[rel], "{rel:?} differs after two days");
    }
}

#[test]
fn next_day_rejects_wrong_order_and_other_spec() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("phone");
    let spec = SampleSpec::small();
    generate(&dir, &spec).unwrap();
    assert!(matches!(
        next_day(&dir, &spec, 2),
        Err(Error::DayOutOfOrder {
            expected: 1,
            got: 2
        })
    ));
    assert!(matches!(
        next_day(&dir, &spec.clone().with_seed(7), 1),
        Err(Error::SpecMismatch)
    ));
    next_day(&dir, &spec, 1).unwrap();
    assert!(matches!(
        next_day(&dir, &spec, 1),
        Err(Error::DayOutOfOrder { expected: 2, .. })
    ));
    assert!(matches!(
        next_day(&tmp.path().join("nothing"), &spec, 1),
        Err(Error::NotASample(_))
    ));
}

#[test]
fn generate_refuses_non_empty_directory() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("keep.txt"), b"mine").unwrap();
    assert!(matches!(
        generate(tmp.path(), &SampleSpec::small()),
        Err(Error::NotEmpty(_))
    ));
    assert_eq!(fs::read(tmp.path().join("keep.txt")).unwrap(), b"mine");
}
