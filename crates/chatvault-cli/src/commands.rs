//! One function per subcommand.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use chatvault_client::{ClientError, Home};
use chatvault_format::key::BackupKey;
use chatvault_repo::backup::{self, BackupOptions};
use chatvault_repo::check::{self, CheckOptions};
use chatvault_repo::repository::Repository;
use chatvault_repo::restore::{self, RestoreOptions};
use serde_json::json;
use zeroize::Zeroizing;

use crate::args::*;
use crate::exit;
use crate::ui::{self, Bar};

/// A key given by the user that does not work for what it was given for (crypt15).
#[derive(Debug)]
pub struct WrongKey(pub String);
impl std::fmt::Display for WrongKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for WrongKey {}

pub fn run(cli: Cli) -> Result<u8> {
    let ctx = Ctx::new(&cli)?;
    match &cli.command {
        Command::Init(a) => init(&ctx, a),
        Command::Backup(a) => backup_cmd(&ctx, a),
        Command::Snapshots(a) => snapshots(&ctx, a.json),
        Command::Restore(a) => restore_cmd(&ctx, a),
        Command::Check(a) => check_cmd(&ctx, a),
        Command::Key(KeyCommand::Show { yes }) => key_show(&ctx, *yes),
        Command::Whatsapp(c) => whatsapp(&ctx, c),
        Command::Sample(a) => sample(a),
        Command::Demo { keep } => crate::demo::run(keep.as_deref(), ctx.quiet),
    }
}

/// Resolved global settings.
struct Ctx {
    home: Home,
    repo: Option<String>,
    key_file: Option<PathBuf>,
    quiet: bool,
}

fn default_home() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".chatvault"),
        None => PathBuf::from(".chatvault"),
    }
}

impl Ctx {
    fn new(cli: &Cli) -> Result<Self> {
        Ok(Ctx {
            home: Home::at(cli.home.clone().unwrap_or_else(default_home)),
            repo: cli.repo.clone(),
            key_file: cli.key_file.clone(),
            quiet: cli.quiet,
        })
    }

    /// The repository location: --repo / CHATVAULT_REPO, else the device's configuration.
    fn location(&self) -> Result<String> {
        if let Some(r) = &self.repo {
            return Ok(r.clone());
        }
        match self.home.config()? {
            Some(c) => Ok(c.repo),
            None => Err(ClientError::NotConfigured(self.home.dir().to_path_buf()).into()),
        }
    }

    /// The backup key, from (in order) CHATVAULT_KEY, --key-file, this device's home, or an
    /// interactive prompt.
    fn key(&self) -> Result<BackupKey> {
        if let Some(k) = key_from_env_or_file(self.key_file.as_deref())? {
            return Ok(k);
        }
        let cfg = self.home.config()?;
        let same_repo = match (&self.repo, &cfg) {
            (Some(r), Some(c)) => *r == c.repo,
            (None, Some(_)) => true,
            _ => false,
        };
        if same_repo && let Some(k) = self.home.load_key()? {
            return Ok(k);
        }
        if let Some(text) = ui::prompt_secret("Enter the 64-digit backup key: ")? {
            return BackupKey::parse_hex(&text).context("reading the typed key");
        }
        bail!(
            "no backup key available: set CHATVAULT_KEY to the 64-digit key, pass --key-file FILE, \
             or run this on the device that made the backup"
        )
    }

    fn open(&self) -> Result<Repository> {
        let location = self.location()?;
        let key = self.key()?;
        Ok(chatvault_client::open(&location, &key)?)
    }
}

fn key_from_env_or_file(file: Option<&Path>) -> Result<Option<BackupKey>> {
    if let Some(v) = std::env::var_os("CHATVAULT_KEY") {
        let v = Zeroizing::new(
            v.into_string()
                .map_err(|_| anyhow!("CHATVAULT_KEY is not valid text"))?,
        );
        return Ok(Some(
            BackupKey::parse_hex(&v).context("reading CHATVAULT_KEY")?,
        ));
    }
    if let Some(path) = file {
        let bytes = Zeroizing::new(
            std::fs::read(path).with_context(|| format!("reading key file {}", path.display()))?,
        );
        return Ok(Some(
            BackupKey::from_key_file(&bytes)
                .with_context(|| format!("key file {}", path.display()))?,
        ));
    }
    Ok(None)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

fn init(ctx: &Ctx, a: &InitArgs) -> Result<u8> {
    debug_assert!(a.key);
    let location = ctx
        .repo
        .clone()
        .ok_or_else(|| anyhow!("give the repository location with --repo URL|PATH"))?;
    if let Some(p) = &a.key_out
        && p.exists()
    {
        bail!("--key-out {}: file exists; choose a new file", p.display());
    }
    let (repo, key) = chatvault_client::enable_with_key(&ctx.home, &location)?;
    if let Some(p) = &a.key_out {
        let mut text = key.to_hex();
        text.push('\n');
        write_private(p, text.as_bytes())?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "End-to-end encrypted backup is on.")?;
    writeln!(
        out,
        "Repository: {} (id {})",
        repo.storage().location(),
        repo.id().short()
    )?;
    writeln!(out)?;
    writeln!(out, "Your 64-digit backup key:")?;
    writeln!(out)?;
    writeln!(out, "    {}", key.to_grouped_hex().as_str())?;
    writeln!(out)?;
    writeln!(
        out,
        "Write it down or keep it in a password manager. Without it (or this device) your backups \
         cannot be restored: nobody, including the storage provider, can recover them."
    )?;
    Ok(exit::OK)
}

fn backup_cmd(ctx: &Ctx, a: &BackupArgs) -> Result<u8> {
    let repo = ctx.open()?;
    let bar = Bar::new(ctx.quiet || a.json, "backing up");
    let opts = BackupOptions {
        hostname: a.host.clone(),
        force_reread: a.force,
    };
    let r = backup::backup(&repo, &a.paths, &opts, &bar);
    bar.finish();
    let out = r?;
    let s = &out.snapshot.summary;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"id": out.id, "snapshot": out.snapshot}))?
        );
    } else {
        println!(
            "snapshot {} saved: {} files, {} dirs, {} bytes; {} files read, {} new bytes in {} blobs, {} bytes uploaded",
            out.id.short(),
            s.files,
            s.dirs,
            s.bytes,
            s.files_read,
            s.new_bytes,
            s.new_blobs,
            s.uploaded_bytes
        );
        for p in &s.unreadable {
            eprintln!("not backed up: {}: {}", p.path, p.error);
        }
        for p in &s.changed_while_reading {
            eprintln!("changed while reading (may be inconsistent): {p}");
        }
    }
    if s.is_complete() {
        Ok(exit::OK)
    } else {
        eprintln!(
            "backup is partial: {} item(s) not backed up, {} changed while reading",
            s.unreadable.len(),
            s.changed_while_reading.len()
        );
        Ok(exit::PARTIAL)
    }
}

fn snapshots(ctx: &Ctx, json_out: bool) -> Result<u8> {
    let repo = ctx.open()?;
    let all = repo.snapshots()?;
    let mut damaged = 0;
    if json_out {
        let v: Vec<_> = all
            .iter()
            .map(|(id, s)| match s {
                Ok(s) => {
                    json!({"id": id, "short_id": id.short(), "time": s.time, "hostname": s.hostname,
                    "paths": s.paths, "files": s.summary.files, "bytes": s.summary.bytes,
                    "complete": s.summary.is_complete(), "parent": s.parent})
                }
                Err(e) => {
                    damaged += 1;
                    json!({"id": id, "short_id": id.short(), "error": e.to_string()})
                }
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{:<10} {:<32} {:<16} {:>8} {:>14}  paths",
            "id", "time", "host", "files", "bytes"
        );
        for (id, s) in &all {
            match s {
                Ok(s) => println!(
                    "{:<10} {:<32} {:<16} {:>8} {:>14}  {}{}",
                    id.short(),
                    s.time,
                    s.hostname,
                    s.summary.files,
                    s.summary.bytes,
                    s.paths.join(", "),
                    if s.summary.is_complete() {
                        ""
                    } else {
                        "  (partial)"
                    }
                ),
                Err(e) => {
                    damaged += 1;
                    println!("{:<10} DAMAGED: {e}", id.short())
                }
            }
        }
        println!("{} snapshot(s)", all.len());
    }
    Ok(if damaged > 0 { exit::DAMAGED } else { exit::OK })
}

fn restore_cmd(ctx: &Ctx, a: &RestoreArgs) -> Result<u8> {
    let repo = ctx.open()?;
    let (id, snap) = repo.find_snapshot(&a.snapshot)?;
    let bar = Bar::new(ctx.quiet || a.json, "restoring");
    let opts = RestoreOptions {
        include: a.include.clone(),
        overwrite: a.overwrite,
    };
    let r = restore::restore(&repo, &snap, &a.target, &opts, &bar);
    bar.finish();
    let out = r?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"snapshot": id, "files": out.files, "dirs": out.dirs,
                "bytes": out.bytes, "failed": out.failed.iter().map(|(p, e)| json!({"path": p, "error": e})).collect::<Vec<_>>()})
            )?
        );
    } else {
        println!(
            "restored snapshot {} ({}) to {}: {} files, {} dirs, {} bytes",
            id.short(),
            snap.time,
            a.target.display(),
            out.files,
            out.dirs,
            out.bytes
        );
    }
    if out.failed.is_empty() {
        Ok(exit::OK)
    } else {
        eprintln!(
            "{} item(s) could not be restored (nothing unverified was written):",
            out.failed.len()
        );
        for (p, e) in &out.failed {
            eprintln!("  {p}: {e}");
        }
        Ok(exit::DAMAGED)
    }
}

fn check_cmd(ctx: &Ctx, a: &CheckArgs) -> Result<u8> {
    let repo = ctx.open()?;
    let bar = Bar::new(ctx.quiet || a.json, "checking");
    let r = check::check(
        &repo,
        CheckOptions {
            read_data: a.read_data,
        },
        &bar,
    );
    bar.finish();
    let report = r?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for w in &report.warnings {
            println!("warning: {w}");
        }
        for e in &report.errors {
            println!("error: {e}");
        }
        for (snap, items) in &report.damaged {
            println!("snapshot {snap}: cannot restore intact:");
            for i in items {
                println!("  {i}");
            }
        }
        println!(
            "{}: {} snapshots, {} packs, {} blobs{}",
            if report.ok() {
                "no errors found"
            } else {
                "repository has errors"
            },
            report.snapshots,
            report.packs,
            report.blobs,
            if a.read_data {
                format!(", {} blobs read and verified", report.blobs_verified)
            } else {
                String::new()
            }
        );
    }
    Ok(if report.ok() { exit::OK } else { exit::DAMAGED })
}

fn key_show(ctx: &Ctx, yes: bool) -> Result<u8> {
    let key = ctx
        .home
        .load_key()?
        .ok_or_else(|| ClientError::NotConfigured(ctx.home.dir().to_path_buf()))?;
    if !yes {
        match ui::prompt_line(
            "Anyone who sees the key can read your backups. Type `show` to display it: ",
        )? {
            Some(s) if s == "show" => {}
            Some(_) => bail!("not confirmed; the key was not shown"),
            None => bail!(
                "refusing to print the key without confirmation: run on a terminal, or pass --yes"
            ),
        }
    }
    println!("{}", key.to_grouped_hex().as_str());
    Ok(exit::OK)
}

fn whatsapp(ctx: &Ctx, c: &WhatsappCommand) -> Result<u8> {
    let (a, decrypt) = match c {
        WhatsappCommand::Decrypt(a) => (a, true),
        WhatsappCommand::Encrypt(a) => (a, false),
    };
    let key = match key_from_env_or_file(a.key.as_deref().or(ctx.key_file.as_deref()))? {
        Some(k) => k,
        None => match ui::prompt_secret("Enter the 64-digit key: ")? {
            Some(t) => BackupKey::parse_hex(&t)?,
            None => bail!("no key: pass --key KEY_FILE or set CHATVAULT_KEY to the 64 hex digits"),
        },
    };
    if a.output.symlink_metadata().is_ok() {
        bail!("{} exists; choose a new output file", a.output.display());
    }
    let out_dir = match a.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if decrypt {
        let input = std::fs::File::open(&a.input)
            .with_context(|| format!("opening {}", a.input.display()))?;
        let d = match chatvault_whatsapp::decrypt_to_file(key.expose_bytes(), input, &out_dir) {
            Ok(d) => d,
            Err(chatvault_whatsapp::Error::WrongKey) => {
                return Err(WrongKey(
                    "wrong key: this 64-digit key does not decrypt this backup".into(),
                )
                .into());
            }
            Err(e) => return Err(e).with_context(|| format!("decrypting {}", a.input.display())),
        };
        let (len, kind) = (d.output_len(), d.kind());
        d.persist_noclobber(&a.output)
            .with_context(|| format!("writing {}", a.output.display()))?;
        println!(
            "decrypted {} → {} ({len} bytes, {kind:?})",
            a.input.display(),
            a.output.display()
        );
    } else {
        let db =
            std::fs::read(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
        let enc = chatvault_whatsapp::encrypt(
            key.expose_bytes(),
            &db,
            &chatvault_whatsapp::EncryptOptions::default(),
            &mut rand_core::OsRng,
        )?;
        let tmp = out_dir.join(format!(".chatvault-crypt15-{}", std::process::id()));
        write_private(&tmp, &enc)?;
        std::fs::hard_link(&tmp, &a.output)
            .with_context(|| format!("writing {}", a.output.display()))?;
        std::fs::remove_file(&tmp)?;
        println!(
            "encrypted {} → {} ({} bytes)",
            a.input.display(),
            a.output.display(),
            enc.len()
        );
    }
    Ok(exit::OK)
}

fn sample(a: &SampleArgs) -> Result<u8> {
    use chatvault_sample::SampleSpec;
    let spec = match a.preset {
        Preset::Small => SampleSpec::small(),
        Preset::Benchmark => SampleSpec::benchmark(),
    }
    .with_seed(a.seed);
    match a.next_day {
        None => {
            let s = chatvault_sample::generate(&a.dir, &spec)?;
            println!(
                "generated {}: {} messages in {} chats, {} media files ({} bytes), msgstore.db {} bytes",
                a.dir.display(),
                s.messages,
                s.chats,
                s.media_files,
                s.media_bytes,
                s.msgstore_bytes
            );
        }
        Some(day) => {
            let d = chatvault_sample::next_day(&a.dir, &spec, day)?;
            println!(
                "day {}: {} messages, {} media files ({} bytes) added; {} edited, {} deleted",
                d.day,
                d.messages_added,
                d.media_files_added,
                d.media_bytes_added,
                d.messages_edited,
                d.messages_deleted
            );
        }
    }
    Ok(exit::OK)
}
