//! `chatvault demo`: the whole story on embedded defaults, narrated: password mode with a real
//! (in-process) Backup Key Vault, then the 64-digit-key path.
//!
//! Every phone is a `chatvault_client::Device`, the SDK an app embeds (the threshold story,
//! which the SDK does not run yet, uses the same `backup_recorded` workflow as the CLI).
//!
//! Generates a chat folder, starts a vault on 127.0.0.1, enables E2EE backup with a password
//! (local folder as the cloud), backs up, adds a day of chats and backs up again, "loses the
//! phone", shows wrong passwords counting down, restores on a new device with the password and
//! verifies it, switches to the 64-digit key and restores once more with only the key. Everything lives
//! in a temporary folder that is removed at the end (unless --keep).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use chatvault_client::vault;
use chatvault_client::{Device, DeviceError, Home};
use chatvault_format::key::BackupKey;
use chatvault_repo::restore::{self, RestoreOptions};
use chatvault_repo::sqlite;
use chatvault_sample::SampleSpec;
use chatvault_vault_client::SecretString;

use crate::ui::Bar;

/// Prints the heading of step `n`.
fn step(n: u32, s: &str) {
    println!("\n[{n}] {s}");
}

/// A password that is never printed (kept in zeroized memory).
fn demo_password() -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(format!(
        "demo-{:08x}",
        rand_core::RngCore::next_u32(&mut rand_core::OsRng)
    ))
}

/// Where a story happens: the temporary folder, phone A's chat folder and the "cloud" (a local
/// folder).
struct Stage {
    root: PathBuf,
    chats: PathBuf,
    location: String,
    quiet: bool,
}

impl Stage {
    fn new(root: PathBuf, quiet: bool) -> Self {
        Stage {
            chats: root.join("phone-a/WhatsApp"),
            location: root.join("cloud").to_string_lossy().into_owned(),
            root,
            quiet,
        }
    }
}

pub fn run(keep: Option<&Path>, quiet: bool) -> Result<u8> {
    let tmp = tempdir(keep)?;
    let t0 = Instant::now();
    let stage = Stage::new(tmp.path.clone(), quiet);

    step(
        1,
        "Generating a phone's chat folder (WhatsApp-like database + media)",
    );
    let spec = SampleSpec::small();
    let g = chatvault_sample::generate(&stage.chats, &spec)?;
    println!(
        "    {} messages in {} chats, {} media files ({} bytes), msgstore.db {} bytes",
        g.messages, g.chats, g.media_files, g.media_bytes, g.msgstore_bytes
    );

    step(
        2,
        "Starting a Backup Key Vault on 127.0.0.1 (SQLite, OPAQUE, 10-guess limit)",
    );
    let vault = DemoVault::start(&stage.root.join("vault"))?;
    println!("    vault at {} (server key {})", vault.url, vault.identity);
    let story = PasswordStory {
        stage: &stage,
        vault: &vault,
        password: SecretString::from(demo_password().to_string()),
    };
    story.enable_and_back_up_twice(&spec)?;
    story.lose_the_phone()?;
    story.mistype_the_password()?;
    let phone_b = story.restore_with_the_password()?;
    let key_text = story.switch_to_the_key(&phone_b)?;
    story.restore_with_the_key(&key_text)?;

    drop(vault);
    println!("\nDemo passed in {:.1} s.", t0.elapsed().as_secs_f64());
    Ok(crate::exit::OK)
}

/// The password story (`chatvault demo`), one method a step. Every phone is a
/// [`Device`] (the SDK an app embeds), so the demo runs the same workflows, with the same
/// checks (rollback check, snapshot recorded on the device and at the vault), as an app.
struct PasswordStory<'a> {
    stage: &'a Stage,
    vault: &'a DemoVault,
    password: SecretString,
}

impl PasswordStory<'_> {
    const ACCOUNT: &'static str = "demo-user";

    /// An account token for the demo account (what the app's sign-in service hands out).
    fn token(&self) -> SecretString {
        SecretString::from(self.vault.token(Self::ACCOUNT))
    }

    fn phone(&self, name: &str) -> Device {
        Device::open(self.stage.root.join(name).join("home"))
    }

    /// Steps 3 to 5: enable with a password, back up, add a day of chats, back up again.
    fn enable_and_back_up_twice(&self, spec: &SampleSpec) -> Result<()> {
        let stage = self.stage;
        step(
            3,
            "Enabling end-to-end encrypted backup with a password (the cloud is a local folder)",
        );
        let phone_a = self.phone("phone-a");
        phone_a.enable_with_password(
            &stage.location,
            &self.vault.url,
            Self::ACCOUNT,
            self.token(),
            &self.password,
        )?;
        println!(
            "    repository created; random 256-bit key stored at the vault behind the password"
        );

        step(4, "First backup");
        let s1 = device_backup(&phone_a, &stage.chats, stage.quiet)?;
        println!(
            "    snapshot {}: {} files, {} bytes uploaded",
            short(&s1.id),
            s1.files,
            s1.uploaded_bytes
        );

        step(
            5,
            "A day of chatting (new messages, media, edits), then an incremental backup",
        );
        let d = chatvault_sample::next_day(&stage.chats, spec, 1)?;
        println!(
            "    +{} messages, +{} media files ({} bytes), {} edited, {} deleted",
            d.messages_added,
            d.media_files_added,
            d.media_bytes_added,
            d.messages_edited,
            d.messages_deleted
        );
        let s2 = device_backup(&phone_a, &stage.chats, stage.quiet)?;
        println!(
            "    snapshot {}: {} bytes uploaded (only new media and changed database pages)",
            short(&s2.id),
            s2.uploaded_bytes
        );
        Ok(())
    }

    /// Step 6: phone A's home (settings and key) is deleted.
    fn lose_the_phone(&self) -> Result<()> {
        step(
            6,
            "The phone is lost: its home (settings and key) is deleted",
        );
        std::fs::remove_dir_all(self.stage.root.join("phone-a/home"))?;
        Ok(())
    }

    /// Step 7: two wrong passwords on the new phone, each costing a guess.
    fn mistype_the_password(&self) -> Result<()> {
        step(
            7,
            "New phone: a mistyped password costs one of the 10 guesses",
        );
        let phone_b = self.phone("phone-b");
        for attempt in 1..=2 {
            let wrong = SecretString::from(format!("not-the-password-{attempt}"));
            match self.restore_with(&phone_b, &wrong) {
                Err(e @ DeviceError::WrongPassword { .. }) => {
                    println!("    attempt {attempt}: {e}")
                }
                Err(e) => bail!("a wrong password gave another error: {e}"),
                Ok(_) => bail!("a wrong password released the key"),
            }
        }
        Ok(())
    }

    /// Phone B's restore with `password`: key from the vault, home set up, rollback check
    /// against the vault's commitment, restore into `phone-b/`.
    fn restore_with(
        &self,
        phone_b: &Device,
        password: &SecretString,
    ) -> std::result::Result<chatvault_client::device::RestoreInfo, DeviceError> {
        let bar = Bar::new(self.stage.quiet, "restoring");
        let r = phone_b.restore_with_password(
            &self.stage.location,
            &self.vault.url,
            Self::ACCOUNT,
            self.token(),
            password,
            "latest",
            &self.stage.root.join("phone-b"),
            Some(&bar),
            None,
        );
        bar.finish();
        r
    }

    /// Step 8: phone B gets the key with the password, adopts the backup and restores it.
    fn restore_with_the_password(&self) -> Result<Device> {
        let stage = self.stage;
        step(
            8,
            "New phone: the right password releases the key; restore from the cloud copy",
        );
        let phone_b = self.phone("phone-b");
        let info = self.restore_with(&phone_b, &self.password)?;
        ensure!(
            phone_b.status()?.vault_identity.as_deref() == Some(self.vault.identity.as_str()),
            "the vault's key changed"
        );
        print_restored(&info);
        verify(&stage.chats, &stage.root.join("phone-b/WhatsApp"))?;
        Ok(phone_b)
    }

    /// Step 9: phone B switches to the 64-digit key; the vault no longer releases it.
    fn switch_to_the_key(&self, phone_b: &Device) -> Result<zeroize::Zeroizing<String>> {
        step(
            9,
            "Switching the new phone to a 64-digit key (the vault record is deleted)",
        );
        let key_text = phone_b.switch_to_key(&self.password)?;
        println!(
            "    the key is shown to the user once as 16 groups of 4 hex digits (not printed in this demo)"
        );
        let probe = self.phone("phone-x");
        let r = probe.restore_with_password(
            &self.stage.location,
            &self.vault.url,
            Self::ACCOUNT,
            self.token(),
            &self.password,
            "latest",
            &self.stage.root.join("phone-x"),
            None,
            None,
        );
        match r {
            // The vault answers for a deleted record as for any unknown account (it does not
            // reveal which accounts exist), so the error reads like a wrong password.
            Err(e) => println!("    the vault no longer releases it (\"{e}\")"),
            Ok(_) => bail!("the vault still released the key after switching to the key"),
        }
        Ok(key_text)
    }

    /// Step 10: phone C restores with only the cloud copy and the key; a wrong key is refused.
    fn restore_with_the_key(&self, key_text: &str) -> Result<()> {
        let stage = self.stage;
        step(
            10,
            "Another new phone restores with only the cloud copy and the 64-digit key",
        );
        let target_c = stage.root.join("phone-c");
        let bar = Bar::new(stage.quiet, "restoring");
        let r = self.phone("phone-c").restore_with_key(
            &stage.location,
            key_text,
            "latest",
            &target_c,
            Some(&bar),
            None,
        );
        bar.finish();
        print_restored(&r?);
        verify(&stage.chats, &target_c.join("WhatsApp"))?;
        let wrong = BackupKey::generate(&mut rand_core::OsRng).to_grouped_hex();
        let r = self.phone("phone-d").restore_with_key(
            &stage.location,
            &wrong,
            "latest",
            &stage.root.join("phone-d"),
            None,
            None,
        );
        match r {
            Err(e @ DeviceError::WrongKey { .. }) => {
                println!("    and a wrong key is refused: {e}")
            }
            Err(e) => bail!("a wrong key gave another error: {e}"),
            Ok(_) => bail!("a wrong key opened the repository"),
        }
        Ok(())
    }
}

/// A backup through the SDK, with the demo's progress bar.
fn device_backup(
    phone: &Device,
    chats: &Path,
    quiet: bool,
) -> Result<chatvault_client::device::SnapshotInfo> {
    let bar = Bar::new(quiet, "backing up");
    let r = phone.backup_now(&[chats.to_path_buf()], Some(&bar), None);
    bar.finish();
    Ok(r?)
}

/// The first 8 hex digits of an id, as the CLI shows ids.
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

fn print_restored(info: &chatvault_client::device::RestoreInfo) {
    println!(
        "    restored snapshot {}: {} files, {} bytes",
        short(&info.snapshot_id),
        info.files,
        info.bytes
    );
}

/// `chatvault demo --realms N`: the threshold story (docs/PROTOCOL.md §13) with `N` in-process
/// realms, threshold 2.
pub fn run_realms(keep: Option<&Path>, quiet: bool, n: u8) -> Result<u8> {
    let tmp = tempdir(keep)?;
    let t0 = Instant::now();
    let stage = Stage::new(tmp.path.clone(), quiet);

    step(1, "Generating a phone's chat folder");
    let spec = SampleSpec::small();
    let g = chatvault_sample::generate(&stage.chats, &spec)?;
    println!("    {} messages, {} media files", g.messages, g.media_files);

    step(
        2,
        &format!("Starting {n} independent realms (own key file, database, token issuer each)"),
    );
    let mut realms: Vec<Option<DemoVault>> = (0..n)
        .map(|k| DemoVault::start(&stage.root.join(format!("realm{k}"))).map(Some))
        .collect::<Result<_>>()?;
    let story = ThresholdStory {
        stage: &stage,
        n,
        urls: realms.iter().flatten().map(|r| r.url.clone()).collect(),
        tokens: realms
            .iter()
            .flatten()
            .map(|r| r.token(ThresholdStory::ACCOUNT))
            .collect(),
        password_text: demo_password(),
    };
    for u in &story.urls {
        println!("    realm at {u}");
    }
    story.enable_and_back_up()?;
    step(
        4,
        "Realm 2 is stopped; a new phone restores with the password and the other realms",
    );
    realms[1] = None;
    let ids = story.restore_without_a_realm()?;
    story.count_a_wrong_password(&realms)?;
    story.attack_one_realm_offline(&ids)?;

    drop(realms);
    println!(
        "\nThreshold demo passed in {:.1} s.",
        t0.elapsed().as_secs_f64()
    );
    Ok(crate::exit::OK)
}

/// The threshold story (`chatvault demo --realms N`), one method a step.
struct ThresholdStory<'a> {
    stage: &'a Stage,
    n: u8,
    urls: Vec<String>,
    tokens: Vec<String>,
    /// Never printed; kept (zeroized on drop) for the attacker's candidate list of step 6.
    password_text: zeroize::Zeroizing<String>,
}

impl ThresholdStory<'_> {
    const ACCOUNT: &'static str = "demo-user";

    fn access(&self) -> vault::ThresholdAccess {
        vault::ThresholdAccess {
            realms: self
                .urls
                .iter()
                .zip(&self.tokens)
                .map(|(u, t)| (u.clone(), SecretString::from(t.clone())))
                .collect(),
            threshold: 2,
            account: Self::ACCOUNT.into(),
            pins: None,
            ca_pem: None,
        }
    }

    fn password(&self) -> SecretString {
        SecretString::from(self.password_text.to_string())
    }

    fn account_id(&self) -> Result<chatvault_vault_core::AccountId> {
        Ok(chatvault_vault_core::AccountId::new(Self::ACCOUNT)?)
    }

    /// Step 3: register the key across the realms, back up, then lose phone A's home.
    fn enable_and_back_up(&self) -> Result<()> {
        let stage = self.stage;
        step(
            3,
            &format!(
                "Registering the backup key across the {} realms, threshold 2, and backing up",
                self.n
            ),
        );
        let home_a = Home::at(stage.root.join("phone-a/home"));
        let (repo, warnings) = vault::enable_with_threshold(
            &home_a,
            &stage.location,
            &self.access(),
            &self.password(),
        )?;
        ensure!(warnings.is_empty(), "realms skipped: {warnings:?}");
        println!("    each realm holds one OPRF key share and one share of the encryption scalar");
        let access = self.access().commitment_access();
        recorded_backup(&home_a, &repo, &access, &stage.chats, stage.quiet)?;
        drop(repo);
        std::fs::remove_dir_all(stage.root.join("phone-a/home"))?;
        Ok(())
    }

    /// Step 4 (a realm is down): phone B recovers the key from the others and restores.
    /// Returns the realms' ids.
    fn restore_without_a_realm(&self) -> Result<Vec<Option<chatvault_vault_client::RealmId>>> {
        let stage = self.stage;
        let (key_b, ids, skipped) = vault::recover_key_threshold(&self.access(), &self.password())?;
        for s in &skipped {
            println!("    skipped: {s}");
        }
        let home_b = Home::at(stage.root.join("phone-b/home"));
        vault::adopt_device_threshold(&home_b, &stage.location, &self.access(), &ids, &key_b)?;
        let repo_b = chatvault_client::open(&stage.location, &key_b)?;
        // The rollback check a restore runs: the realms' commitments vouch for the newest
        // snapshot (PROTOCOL.md §13.15).
        let status = chatvault_client::rollback::check_rollback(
            &home_b,
            &repo_b,
            &self.access().commitment_access(),
        )?;
        ensure!(
            status.rollback.is_none() && status.tampered.is_none(),
            "rollback check failed: {:?} {:?}",
            status.rollback,
            status.tampered
        );
        restore_latest(&repo_b, &stage.root.join("phone-b"), stage.quiet)?;
        verify(&stage.chats, &stage.root.join("phone-b/WhatsApp"))?;
        Ok(ids)
    }

    /// Step 5: a wrong password, and the guess counters each realm keeps.
    fn count_a_wrong_password(&self, realms: &[Option<DemoVault>]) -> Result<()> {
        step(
            5,
            "A wrong password is counted at each realm that evaluated it",
        );
        let wrong = SecretString::from("not-the-password".to_owned());
        match vault::recover_key_threshold(&self.access(), &wrong) {
            Err(e) => println!("    {e}"),
            Ok(_) => bail!("a wrong password released the key"),
        }
        let rt = current_thread_runtime()?;
        let acct = self.account_id()?;
        for (k, running) in realms.iter().enumerate() {
            let store = chatvault_vault::store::SqliteStore::open(
                &self.stage.root.join(format!("realm{k}/vault.sqlite3")),
            )?;
            let state = rt.block_on(chatvault_vault::store::Store::load(&store, &acct))?;
            if let chatvault_vault_core::AccountState::Registered { counter, .. } = state {
                println!(
                    "    realm {}: {} of {} guesses used{}",
                    k + 1,
                    counter.attempts,
                    counter.max_attempts,
                    if running.is_none() {
                        " (down: saw nothing)"
                    } else {
                        ""
                    }
                );
            }
        }
        Ok(())
    }

    /// Step 6: the offline attacks on one realm's key file and database confirm no candidate.
    fn attack_one_realm_offline(
        &self,
        ids: &[Option<chatvault_vault_client::RealmId>],
    ) -> Result<()> {
        let root = &self.stage.root;
        step(
            6,
            "An attacker copies realm 1's key file and database and tries passwords offline",
        );
        let rt = current_thread_runtime()?;
        let acct = self.account_id()?;
        let kf = chatvault_vault::keyfile::KeyFile::load_or_create(&root.join("realm0"))?;
        let keys = kf.realm_keys()?;
        let store = chatvault_vault::store::SqliteStore::open(&root.join("realm0/vault.sqlite3"))?;
        let chatvault_vault_core::AccountState::Registered {
            generation, sealed, ..
        } = rt.block_on(chatvault_vault::store::Store::load(&store, &acct))?
        else {
            bail!("realm 1 has no record");
        };
        let record = keys.open_record(&acct, generation, &sealed)?;
        let mut candidates: Vec<String> = (0..7).map(|c| format!("guess-{c}")).collect();
        candidates.push(self.password_text.to_string());
        let results = chatvault_threshold::attacks::run_all(
            &record.to_bytes(),
            &acct,
            &ids[0].context("realm 1's id is known")?,
            &candidates,
        )?;
        println!(
            "    {} candidates (the right password among them), Argon2id per candidate:",
            candidates.len()
        );
        for (attack, hits) in &results {
            ensure!(hits.is_empty(), "attack `{attack}` matched {hits:?}");
            println!("    - {attack}: no candidate confirmed");
        }
        println!("    one realm's dump cannot check a password: it needs 2 realms' evaluations");
        Ok(())
    }
}

/// A Tokio runtime on this thread, for reading the realms' stores.
fn current_thread_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn restore_latest(
    repo: &chatvault_repo::repository::Repository,
    target: &Path,
    quiet: bool,
) -> Result<()> {
    let (id, snap) = repo.find_snapshot("latest")?;
    let bar = Bar::new(quiet, "restoring");
    let out = restore::restore(repo, &snap, target, &RestoreOptions::default(), &bar);
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
    Ok(())
}

fn verify(original: &Path, restored: &Path) -> Result<()> {
    let a = digest_tree(original)?;
    let b = digest_tree(restored)?;
    if a != b {
        bail!("restored tree differs from the original");
    }
    println!(
        "    verified: {} files identical ({} SQLite databases: integrity_check ok, same content)",
        a.len(),
        a.values().filter(|d| d.starts_with("sqlite:")).count()
    );
    Ok(())
}

/// A Backup Key Vault served in-process on 127.0.0.1:0, the same server code as
/// `chatvault-vault serve`, with SQLite and the key file in a temporary data dir.
struct DemoVault {
    url: String,
    identity: String,
    issuer: ed25519_dalek::SigningKey,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DemoVault {
    fn start(data_dir: &Path) -> Result<DemoVault> {
        use chatvault_vault::{
            Settings, http::AppState, keyfile::KeyFile, store::SqliteStore, token::Verifier,
        };
        std::fs::create_dir_all(data_dir)?;
        let kf = KeyFile::load_or_create(data_dir)?;
        let issuer = kf.issuer.clone();
        let realm = kf.realm_keys()?;
        let settings = Settings::default();
        let vault = chatvault_vault_core::Vault::new(kf.vault, settings.vault);
        let identity = vault.server_identity().to_string();
        let store = SqliteStore::open(&data_dir.join("vault.sqlite3"))?;
        let state = std::sync::Arc::new(
            AppState::new(
                vault,
                store,
                Verifier::new(kf.issuer.verifying_key()),
                settings,
            )
            .with_realm(realm),
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let _ = rt.block_on(chatvault_vault::serve(listener, state, async {
                let _ = rx.await;
            }));
        });
        Ok(DemoVault {
            url,
            identity,
            issuer,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// An account token from the vault's development issuer (what an app's account service does).
    fn token(&self, account: &str) -> String {
        chatvault_vault::token::issue(&self.issuer, account, chatvault_vault::unix_now(), 600)
    }
}

impl Drop for DemoVault {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A threshold-mode backup with the workflow the CLI's `backup` runs
/// ([`chatvault_client::device::backup_recorded`]): this device's id and rollback memory go
/// into the run, and the snapshot is recorded on the device and committed at every realm.
fn recorded_backup(
    home: &Home,
    repo: &chatvault_repo::repository::Repository,
    access: &[vault::VaultAccess],
    path: &Path,
    quiet: bool,
) -> Result<()> {
    let bar = Bar::new(quiet, "backing up");
    let r = chatvault_client::device::backup_recorded(
        home,
        repo,
        access,
        &[path.to_path_buf()],
        None,
        false,
        &bar,
    );
    bar.finish();
    let (out, recorded) = r?;
    ensure!(
        out.snapshot.summary.is_complete(),
        "backup was partial: {:?}",
        out.snapshot.summary
    );
    match recorded {
        chatvault_client::rollback::Recorded::Done => {}
        chatvault_client::rollback::Recorded::Warning(w) => println!("    warning: {w}"),
        chatvault_client::rollback::Recorded::Tampered(t) => bail!("{t}"),
    }
    println!(
        "    snapshot {}: {} files, {} bytes uploaded; committed at every realm",
        out.id.short(),
        out.snapshot.summary.files,
        out.snapshot.summary.uploaded_bytes
    );
    Ok(())
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
