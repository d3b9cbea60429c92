//! `chatvault demo`: the whole 64-digit-key story on embedded defaults, narrated.
//!
//! Generates a chat folder, enables E2EE backup (local folder as the cloud), backs up, adds a
//! day of chats and backs up again, "loses the phone", restores on a new device home with only
//! the repository and the 64-digit key, and verifies the restore byte for byte. Everything lives
//! in a temporary folder that is removed at the end (unless --keep).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use chatvault_client::Home;
use chatvault_format::key::BackupKey;
use chatvault_repo::backup::{self, BackupOptions};
use chatvault_repo::restore::{self, RestoreOptions};
use chatvault_repo::sqlite;
use chatvault_sample::SampleSpec;

use crate::ui::Bar;

pub fn run(keep: Option<&Path>, quiet: bool) -> Result<u8> {
    let tmp = tempdir(keep)?;
    let root = tmp.path.clone();
    let t0 = Instant::now();
    let chats = root.join("phone-a/WhatsApp");
    let cloud = root.join("cloud");
    let step = |n: u32, s: &str| println!("\n[{n}] {s}");

    step(
        1,
        "Generating a phone's chat folder (WhatsApp-like database + media)",
    );
    let spec = SampleSpec::small();
    let g = chatvault_sample::generate(&chats, &spec)?;
    println!(
        "    {} messages in {} chats, {} media files ({} bytes), msgstore.db {} bytes",
        g.messages, g.chats, g.media_files, g.media_bytes, g.msgstore_bytes
    );

    step(
        2,
        "Enabling end-to-end encrypted backup with a 64-digit key (the cloud is a local folder)",
    );
    let home_a = Home::at(root.join("phone-a/home"));
    let (repo, key) = chatvault_client::enable_with_key(&home_a, &cloud.to_string_lossy())?;
    // Only a digest is shown: the demo's key is printed nowhere.
    println!(
        "    repository {} created; key generated from the OS RNG and stored in the phone's home (0600)",
        repo.id().short()
    );
    let typed_back = key.to_grouped_hex();

    step(3, "First backup");
    let s1 = timed_backup(&repo, &chats, quiet)?;
    println!(
        "    snapshot {}: {} files, {} bytes uploaded",
        s1.0, s1.1, s1.2
    );

    step(
        4,
        "A day of chatting (new messages, media, edits), then an incremental backup",
    );
    let d = chatvault_sample::next_day(&chats, &spec, 1)?;
    println!(
        "    +{} messages, +{} media files ({} bytes), {} edited, {} deleted",
        d.messages_added,
        d.media_files_added,
        d.media_bytes_added,
        d.messages_edited,
        d.messages_deleted
    );
    let s2 = timed_backup(&repo, &chats, quiet)?;
    println!("    snapshot {}: {} bytes uploaded", s2.0, s2.2);
    drop(repo);

    step(
        5,
        "The phone is lost: its home (settings and key) is deleted",
    );
    std::fs::remove_dir_all(root.join("phone-a/home"))?;

    step(
        6,
        "New phone: restore with only the cloud copy and the 64-digit key typed back",
    );
    let key_b = BackupKey::parse_hex(&typed_back)?;
    let repo_b = chatvault_client::open(&cloud.to_string_lossy(), &key_b)?;
    let (id, snap) = repo_b.find_snapshot("latest")?;
    let target = root.join("phone-b");
    let bar = Bar::new(quiet, "restoring");
    let out = restore::restore(&repo_b, &snap, &target, &RestoreOptions::default(), &bar);
    bar.finish();
    let out = out?;
    ensure!(
        out.failed.is_empty(),
        "restore reported failures: {:?}",
        out.failed
    );
    println!(
        "    restored snapshot {}: {} files, {} bytes",
        id.short(),
        out.files,
        out.bytes
    );

    step(
        7,
        "Verifying: media byte-identical, databases intact with identical content",
    );
    let a = digest_tree(&chats)?;
    let b = digest_tree(&target.join("WhatsApp"))?;
    if a != b {
        bail!("restored tree differs from the original");
    }
    println!(
        "    {} files identical ({} SQLite databases checked with integrity_check + content digest)",
        a.len(),
        a.values().filter(|d| d.starts_with("sqlite:")).count()
    );

    step(8, "A wrong key is refused");
    let wrong = BackupKey::generate(&mut rand_core::OsRng);
    match chatvault_client::open(&cloud.to_string_lossy(), &wrong) {
        Err(e) => println!("    {e}"),
        Ok(_) => bail!("a wrong key opened the repository"),
    }
    println!("\nDemo passed in {:.1} s.", t0.elapsed().as_secs_f64());
    Ok(crate::exit::OK)
}

fn timed_backup(
    repo: &chatvault_repo::repository::Repository,
    path: &Path,
    quiet: bool,
) -> Result<(String, u64, u64)> {
    let bar = Bar::new(quiet, "backing up");
    let r = backup::backup(repo, &[path.to_path_buf()], &BackupOptions::default(), &bar);
    bar.finish();
    let out = r?;
    ensure!(
        out.snapshot.summary.is_complete(),
        "backup was partial: {:?}",
        out.snapshot.summary
    );
    Ok((
        out.id.short(),
        out.snapshot.summary.files,
        out.snapshot.summary.uploaded_bytes,
    ))
}

/// Relative path → digest of every regular file: BLAKE3 of the bytes, or for a SQLite database
/// the digest of its logical content after `PRAGMA integrity_check` (a consistent copy differs
/// from the live file in header counters, and its WAL is merged in). Journals (`-wal`, `-shm`)
/// of databases are left out: their content is inside the database's digest.
pub fn digest_tree(root: &Path) -> Result<BTreeMap<PathBuf, String>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) -> Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = e?.path();
            let m = std::fs::symlink_metadata(&p)?;
            if m.is_dir() {
                walk(root, &p, out)?;
            } else if m.is_file() {
                let name = p.file_name().unwrap_or_default().as_encoded_bytes();
                let parent = p.parent().unwrap_or(root);
                let is_journal = ["-wal", "-shm", "-journal"].iter().any(|s| {
                    name.ends_with(s.as_bytes())
                        && sqlite::is_sqlite(&parent.join(std::ffi::OsStr::new(
                            std::str::from_utf8(&name[..name.len() - s.len()]).unwrap_or(""),
                        )))
                });
                if is_journal {
                    continue;
                }
                if sqlite::is_sqlite(&p) {
                    let d = sqlite::logical_digest(&p)
                        .with_context(|| format!("verifying {}", p.display()))?;
                    out.insert(p.strip_prefix(root)?.to_path_buf(), format!("sqlite:{d}"));
                    continue;
                }
                let mut h = blake3::Hasher::new();
                let mut f = std::fs::File::open(&p)?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                out.insert(
                    p.strip_prefix(root)?.to_path_buf(),
                    h.finalize().to_hex().to_string(),
                );
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

struct TempDir {
    path: PathBuf,
    remove: bool,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn tempdir(keep: Option<&Path>) -> Result<TempDir> {
    if let Some(k) = keep {
        std::fs::create_dir_all(k)?;
        ensure!(
            std::fs::read_dir(k)?.next().is_none(),
            "{} is not empty",
            k.display()
        );
        return Ok(TempDir {
            path: k.to_path_buf(),
            remove: false,
        });
    }
    let path = std::env::temp_dir().join(format!(
        "chatvault-demo-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
    ));
    std::fs::create_dir_all(&path)?;
    Ok(TempDir { path, remove: true })
}
