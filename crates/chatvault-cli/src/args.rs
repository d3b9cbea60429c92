//! Command-line surface (validated by clap; resolved into actions in `commands`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// chatvault: end-to-end encrypted backups of chat history to storage you do not trust.
#[derive(Debug, Parser)]
#[command(name = "chatvault", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// Device home: this device's backup settings and key (one home = one phone).
    #[arg(long, global = true, env = "CHATVAULT_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Repository location (path, file:// URL); default: the one configured in the home.
    #[arg(long, global = true, env = "CHATVAULT_REPO", value_name = "URL|PATH")]
    pub repo: Option<String>,
    /// Read the backup key from this file (64 hex digits, or WhatsApp's encrypted_backup.key).
    /// The key can also come from the CHATVAULT_KEY environment variable; it is never taken on
    /// the command line.
    #[arg(long, global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Backup Key Vault URL (password mode). Repeat it, with --threshold, for a threshold vault
    /// of independent realms (docs/PROTOCOL.md §13): `--vault URL1 --vault URL2 --vault URL3
    /// --threshold 2`. The order of the realms matters and is kept in the home.
    #[arg(long, global = true, env = "CHATVAULT_VAULT", value_name = "URL")]
    pub vault: Vec<String>,
    /// Threshold vault: how many of the --vault realms must take part in a recovery (recommended
    /// more than half of them).
    #[arg(long, global = true, value_name = "T", value_parser = clap::value_parser!(u8).range(1..=16))]
    pub threshold: Option<u8>,
    /// Account id at the vault (password mode).
    #[arg(long, global = true, env = "CHATVAULT_ACCOUNT", value_name = "ID")]
    pub account: Option<String>,
    /// File holding the account token for the vault (or set CHATVAULT_ACCOUNT_TOKEN). With a
    /// threshold vault, give one per --vault (same order), or one accepted by every realm.
    #[arg(long, global = true, value_name = "FILE")]
    pub account_token_file: Vec<PathBuf>,
    /// The vault's server key (base64url) to pin. Every registration (init --password,
    /// key to-password, key change-password) and recovery is refused unless the vault proves this
    /// key. Without it (and no pin in the home) the vault's key is trusted on first use.
    #[arg(
        long,
        global = true,
        env = "CHATVAULT_VAULT_IDENTITY",
        value_name = "KEY"
    )]
    pub vault_identity: Option<String>,
    /// PEM file of the CA(s) that issued the vault's TLS certificate, for a vault with a private
    /// CA; without it the public web PKI is trusted for https:// vault URLs.
    #[arg(long, global = true, env = "CHATVAULT_VAULT_CA", value_name = "FILE")]
    pub vault_ca: Option<PathBuf>,
    /// More log output (-v info, -vv debug); logs never contain keys.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress output.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Most download bandwidth, in KiB/s (restore, check --read-data, and every other read of
    /// the repository); paced evenly by a token bucket.
    #[arg(long, global = true, env = "CHATVAULT_LIMIT_DOWNLOAD", value_name = "KIB/S", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit_download: Option<u64>,
    /// Most upload bandwidth, in KiB/s (backup, prune, …).
    #[arg(long, global = true, env = "CHATVAULT_LIMIT_UPLOAD", value_name = "KIB/S", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit_upload: Option<u64>,
    /// Go on although the repository looks rolled back (its newest snapshot is older than one
    /// this device or the vault saw before; exit code 9 otherwise).
    #[arg(long, global = true)]
    pub accept_rollback: bool,
    #[command(subcommand)]
    pub command: Command,
}

pub const EXIT_CODES: &str = "Exit codes:
  0  success
  1  error (see message)
  2  invalid command line
  3  partial: the backup or restore finished, but some files were skipped or changed
  4  wrong backup key or wrong password
  5  no repository, or this device has no backup configured
  6  repository damaged (check found errors, or an object failed verification)
  7  the vault destroyed the backup key after too many wrong passwords
  8  repository busy (locked by another operation)
  9  repository rolled back: newer snapshots seen before are missing (see --accept-rollback)";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enable end-to-end encrypted backup: create the repository and the backup key.
    Init(InitArgs),
    /// Back up folders or files into a new snapshot.
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(JsonArg),
    /// Restore a snapshot into a folder.
    Restore(RestoreArgs),
    /// Verify the repository (structure; with --read-data, every byte).
    Check(CheckArgs),
    /// Remove snapshots by a retention policy (data is freed by `prune`).
    Forget(ForgetArgs),
    /// Free the space of data no snapshot needs (two-phase, safe with running backups).
    Prune(PruneArgs),
    /// Repair a damaged repository.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Manage the backup key.
    #[command(subcommand)]
    Key(KeyCommand),
    /// WhatsApp crypt15 backups: decrypt or encrypt with the 64-digit key.
    #[command(subcommand)]
    Whatsapp(WhatsappCommand),
    /// Run the whole backup → lost phone → restore story on embedded defaults, narrated.
    #[cfg(feature = "demo")]
    Demo {
        /// Keep the demo's files in this (new or empty) folder instead of a removed temp folder.
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
        /// Tell the threshold story instead: register across this many realms (2-of-N), stop one,
        /// restore with the others, count a wrong password at each realm, and show that one
        /// realm's dump cannot check a password.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(3..=5))]
        realms: Option<u8>,
    },
    /// Turn end-to-end encrypted backup off: delete the vault record and the repository.
    Disable {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Generate a sample chat folder (WhatsApp-like database + media) for demos and benchmarks.
    Sample(SampleArgs),
    /// Upgrade the repository to the current format (2: padded packs). Older chatvault
    /// versions cannot open it afterwards.
    Migrate(JsonArg),
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// Machine-readable JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Keep the backup key yourself as a 64-digit key (printed once; stored in the home).
    #[arg(
        long,
        conflicts_with = "password",
        required_unless_present = "password"
    )]
    pub key: bool,
    /// Keep the backup key in a Backup Key Vault behind a password (needs --vault, --account and
    /// an account token; the password comes from CHATVAULT_PASSWORD or a confirmed prompt).
    #[arg(long)]
    pub password: bool,
    /// Also write the key to this file (0600).
    #[arg(long, value_name = "FILE")]
    pub key_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Folders or files to back up.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Host name to record (default: this machine's).
    #[arg(long)]
    pub host: Option<String>,
    /// Read every file again instead of trusting unchanged metadata.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id (or a unique prefix of at least 4 hex digits), or `latest`.
    #[arg(value_name = "ID|latest")]
    pub snapshot: String,
    /// Folder to restore into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub target: PathBuf,
    /// Restore only this path inside the snapshot, e.g. chats/Databases.
    #[arg(long, value_name = "PATH")]
    pub include: Option<PathBuf>,
    /// Replace files that already exist in the target.
    #[arg(long)]
    pub overwrite: bool,
    /// Parallel readers of the repository (default: one per core on a local folder, 6 on a
    /// cloud backend; there up to 16×N small reads at once, in the memory of N readers).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub readers: Option<u16>,
    /// Sync every file to disk before giving it its real name, so that not even a power loss
    /// leaves an incomplete file under its name (default: databases and their folders only;
    /// slower, bound by the disk's writes).
    #[arg(long)]
    pub durable: bool,
    /// Print progress as newline-delimited JSON events (`started`, `file`, `failed`,
    /// `messages_ready`), ending with a `summary` event.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Download and verify every pack.
    #[arg(long)]
    pub read_data: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Keep the newest N snapshots.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N days (UTC) that have one.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have one.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Show what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run `prune` afterwards (with its defaults).
    #[arg(long)]
    pub prune: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Show what would be condemned and deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete condemned data only once its plan is this old (e.g. 0, 30m, 1h, 2d). With 0 the
    /// data is deleted in the same run if no other operation is running.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub grace: std::time::Duration,
    /// Repack a pack when at least this percentage of it is unused.
    #[arg(long, value_name = "PERCENT", default_value_t = 10, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub repack_threshold: u8,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Rebuild lost or damaged index objects from the pack headers (exit 6 if some pack headers
    /// are damaged; the other packs are re-indexed).
    Index(RepairIndexArgs),
    /// Salvage packs with damaged blobs (as `check --read-data` names them): their intact blobs
    /// move to new packs, the damaged ones leave the index so that the next backup stores them
    /// again (exit 6 if a pack read differently twice and was left alone).
    Packs(RepairPacksArgs),
}

#[derive(Debug, Args)]
pub struct RepairPacksArgs {
    /// The packs: their ids, or at least their first 4 hex digits.
    #[arg(required = true, value_name = "PACK")]
    pub packs: Vec<String>,
    /// Read and verify the packs and report; write and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RepairIndexArgs {
    /// Read the pack headers and report; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Re-index every pack, ignoring the existing index objects (default: only packs that no
    /// readable index object lists).
    #[arg(long)]
    pub all: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `0`, `45s`, `30m`, `1h`, `2d` (a bare number is seconds).
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: use e.g. 0, 45s, 30m, 1h, 2d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("invalid duration unit in {s:?}: use s, m, h or d")),
    };
    n.checked_mul(mult)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Show the 64-digit backup key stored on this device (asks for confirmation).
    Show {
        /// Do not ask for confirmation (for scripts; the key goes to standard output).
        #[arg(long)]
        yes: bool,
    },
    /// Change the vault password (the backup key stays the same).
    ChangePassword,
    /// Switch to the 64-digit key: prints it and deletes the vault record.
    ToKey,
    /// Switch from the 64-digit key to a password kept by the vault.
    ToPassword,
}

#[derive(Debug, Subcommand)]
pub enum WhatsappCommand {
    /// Decrypt a .crypt15 backup to the SQLite database it holds.
    Decrypt(WaArgs),
    /// Encrypt a SQLite database into a .crypt15 backup.
    Encrypt(WaArgs),
}

#[derive(Debug, Args)]
pub struct WaArgs {
    /// Key file: 64 hex digits, or WhatsApp's encrypted_backup.key (or set CHATVAULT_KEY).
    #[arg(long = "key", value_name = "KEY_FILE")]
    pub key: Option<PathBuf>,
    /// Input file.
    pub input: PathBuf,
    /// Output file (must not exist).
    pub output: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Preset {
    /// A few MB: for tests and the demo.
    Small,
    /// ≈ 100 MB database + 300 MB media: for benchmarks.
    Benchmark,
}

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Folder to create (must be empty or missing), or to advance with --next-day.
    pub dir: PathBuf,
    /// Size preset.
    #[arg(long, value_enum, default_value = "small")]
    pub preset: Preset,
    /// Seed of the deterministic generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulate day N of chat activity on an existing sample (days go 1, 2, 3, …).
    #[arg(long, value_name = "N")]
    pub next_day: Option<u32>,
}
