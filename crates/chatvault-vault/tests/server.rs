//! Integration tests: the real `chatvault-vault serve` binary on 127.0.0.1:0 with a temp data dir,
//! driven through `chatvault-vault-client` the way the CLI will, plus raw HTTP for error paths.
//! PostgreSQL tests need `CHATVAULT_TEST_POSTGRES_URL` (see scripts/ci-postgres.sh).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use chatvault_vault::keyfile::KeyFile;
use chatvault_vault::token;
use chatvault_vault_client::{Error, KsfParams, SecretString, ServerIdentity, VaultClient};

const KEY: [u8; 32] = [0x5A; 32];

struct Server {
    child: Child,
    url: String,
    identity: ServerIdentity,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn spawn(data_dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chatvault-vault"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn chatvault-vault");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        let url = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_owned();
        let second = lines.next().unwrap().unwrap();
        let identity =
            ServerIdentity::from_b64(second.strip_prefix("server identity ").unwrap()).unwrap();
        Server {
            child,
            url,
            identity,
        }
    }
}

fn now() -> u64 {
    chatvault_vault::unix_now()
}

fn token_for(data_dir: &Path, account: &str, ttl: u64) -> SecretString {
    let kf = KeyFile::load_or_create(data_dir).unwrap();
    SecretString::from(token::issue(&kf.issuer, account, now(), ttl))
}

fn client(server: &Server, data_dir: &Path, account: &str) -> VaultClient {
    VaultClient::new(&server.url, account, token_for(data_dir, account, 600))
        .unwrap()
        .with_registration_ksf(KsfParams::INSECURE_FOR_TESTS)
        .unwrap()
}

fn pw(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

const NO_LIMITS: &[&str] = &["--rate-limit-ip", "0", "--rate-limit-account", "0"];

fn raw_post(url: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.post(url).header("Content-Type", "application/json");
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = req.send(body).unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

fn raw_get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(url).call().unwrap();
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap(),
    )
}

#[test]
fn recover_counts_down_destroys_then_locked_even_with_right_password() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let c = client(&server, dir.path(), "alice");
    let pinned = c.register(&pw("right"), &KEY).unwrap();
    assert!(pinned.ct_matches(&server.identity));
    let got = c.recover(&pw("right"), &pinned).unwrap();
    assert_eq!(*got.backup_key, KEY);
    for left in (0..10).rev() {
        match c.recover(&pw("wrong"), &pinned) {
            Err(Error::WrongPassword { attempts_left }) => assert_eq!(attempts_left, left),
            other => panic!("expected WrongPassword, got {other:?}"),
        }
    }
    let err = c.recover(&pw("right"), &pinned).unwrap_err();
    assert!(matches!(err, Error::Locked), "{err:?}");
    assert!(err.to_string().starts_with("locked: backup key destroyed"));
    assert!(matches!(
        c.recover(&pw("right"), &pinned),
        Err(Error::Locked)
    ));
    // The row is a tombstone: no sealed record left in the database.
    let db = rusqlite::Connection::open(dir.path().join("vault.sqlite3")).unwrap();
    let (status, sealed, attempts): (i64, Option<Vec<u8>>, i64) = db
        .query_row(
            "SELECT status, sealed, attempts FROM vault_records WHERE account = 'alice'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((status, sealed, attempts), (2, None, 10));
    // A new backup key can be registered afterwards.
    c.register_pinned(&pw("fresh"), &[1; 32], &pinned).unwrap();
    assert_eq!(
        *c.recover(&pw("fresh"), &pinned).unwrap().backup_key,
        [1; 32]
    );
}

#[test]
fn recover_success_resets_counter() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let c = client(&server, dir.path(), "alice");
    let pinned = c.register(&pw("right"), &KEY).unwrap();
    for _ in 0..9 {
        assert!(matches!(
            c.recover(&pw("wrong"), &pinned),
            Err(Error::WrongPassword { .. })
        ));
    }
    c.recover(&pw("right"), &pinned).unwrap();
    match c.recover(&pw("wrong"), &pinned) {
        Err(Error::WrongPassword { attempts_left }) => assert_eq!(attempts_left, 9),
        other => panic!("{other:?}"),
    }
}

#[test]
fn change_password_old_fails_new_works() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let c = client(&server, dir.path(), "bob");
    let pinned = c.register(&pw("old"), &KEY).unwrap();
    assert!(matches!(
        c.register(&pw("x"), &KEY),
        Err(Error::AlreadyRegistered)
    ));
    c.change_password(&pw("old"), &pw("new"), &pinned).unwrap();
    assert!(matches!(
        c.recover(&pw("old"), &pinned),
        Err(Error::WrongPassword { .. })
    ));
    assert_eq!(*c.recover(&pw("new"), &pinned).unwrap().backup_key, KEY);
    // A wrong old password is a counted guess and changes nothing.
    assert!(matches!(
        c.change_password(&pw("nope"), &pw("newer"), &pinned),
        Err(Error::WrongPassword { .. })
    ));
    assert_eq!(*c.recover(&pw("new"), &pinned).unwrap().backup_key, KEY);
}

/// Runs a recovery through the raw HTTP API; returns the finish request body and the
/// `recover/finish` answer (status, body).
fn raw_recover(
    server: &Server,
    data_dir: &Path,
    account: &str,
    password: &[u8],
    pinned: &ServerIdentity,
) -> (String, u16, String) {
    use chatvault_vault_core::api::{self, b64_decode, b64_encode};
    use chatvault_vault_core::{AccountId, Ke2Params, RecoveryClient};
    let kf = KeyFile::load_or_create(data_dir).unwrap();
    let tok = token::issue(&kf.issuer, account, now(), 60);
    let acc = AccountId::new(account).unwrap();
    let (rc, ke1) = RecoveryClient::start(&mut rand::rngs::OsRng, &acc, password).unwrap();
    let (_, body) = raw_post(
        &format!("{}/v1/accounts/{account}/recover/start", server.url),
        Some(&tok),
        &format!(r#"{{"ke1":"{}"}}"#, b64_encode(&ke1)),
    );
    let started: api::RecoverStartResponse = serde_json::from_str(&body).unwrap();
    let (ke3, _) = rc
        .finish(
            &mut rand::rngs::OsRng,
            password,
            &b64_decode(&started.ke2, "ke2").unwrap(),
            Ke2Params {
                ksf: started.ksf,
                suite: started.suite,
                record_version: started.record_version,
            },
            pinned,
        )
        .unwrap();
    let finish = format!(
        r#"{{"state":"{}","ke3":"{}"}}"#,
        started.state,
        b64_encode(&ke3)
    );
    let (status, text) = raw_post(
        &format!("{}/v1/accounts/{account}/recover/finish", server.url),
        Some(&tok),
        &finish,
    );
    (finish, status, text)
}

#[test]
fn proof_single_use_second_use_stale() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let c = client(&server, dir.path(), "bob");
    let pinned = c.register(&pw("old"), &KEY).unwrap();
    let (_, status, text) = raw_recover(&server, dir.path(), "bob", b"old", &pinned);
    assert_eq!(status, 200, "{text}");
    let fin: chatvault_vault_core::api::RecoverFinishResponse =
        serde_json::from_str(&text).unwrap();
    let kf = KeyFile::load_or_create(dir.path()).unwrap();
    let tok = token::issue(&kf.issuer, "bob", now(), 60);
    let del = format!(r#"{{"proof":"{}"}}"#, fin.proof);
    let url = format!("{}/v1/accounts/bob/delete", server.url);
    assert_eq!(raw_post(&url, Some(&tok), &del).0, 204);
    let (status, text) = raw_post(&url, Some(&tok), &del);
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("stale_proof"), "{text}");
    // A proof of another account does not open.
    c.register_pinned(&pw("p"), &KEY, &pinned).unwrap();
    let other = client(&server, dir.path(), "bea");
    other.register(&pw("p"), &KEY).unwrap();
    let (_, _, text) = raw_recover(&server, dir.path(), "bea", b"p", &pinned);
    let fin: chatvault_vault_core::api::RecoverFinishResponse =
        serde_json::from_str(&text).unwrap();
    let (status, text) = raw_post(&url, Some(&tok), &format!(r#"{{"proof":"{}"}}"#, fin.proof));
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("invalid_proof"), "{text}");
}

#[test]
fn delete_then_account_looks_unregistered() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let c = client(&server, dir.path(), "carol");
    let pinned = c.register(&pw("pw"), &KEY).unwrap();
    assert!(matches!(
        c.delete(&pw("bad"), &pinned),
        Err(Error::WrongPassword { attempts_left: 9 })
    ));
    c.delete(&pw("pw"), &pinned).unwrap();
    match c.recover(&pw("pw"), &pinned) {
        Err(Error::WrongPassword { attempts_left }) => assert_eq!(attempts_left, 9),
        other => panic!("{other:?}"),
    }
    c.register_pinned(&pw("pw2"), &[3; 32], &pinned).unwrap();
    assert_eq!(*c.recover(&pw("pw2"), &pinned).unwrap().backup_key, [3; 32]);
}

#[test]
fn reset_erases_record_without_password() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let c = client(&server, dir.path(), "dave");
    let pinned = c.register(&pw("forgotten"), &KEY).unwrap();
    c.reset().unwrap();
    assert!(matches!(
        c.recover(&pw("forgotten"), &pinned),
        Err(Error::WrongPassword { .. })
    ));
    c.register_pinned(&pw("new"), &[9; 32], &pinned).unwrap();
    assert_eq!(*c.recover(&pw("new"), &pinned).unwrap().backup_key, [9; 32]);
    c.reset().unwrap();
    c.reset().unwrap(); // idempotent
}

#[test]
fn unknown_account_answer_shaped_like_registered() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let c = client(&server, dir.path(), "erin");
    let pinned = c.register(&pw("pw"), &KEY).unwrap();
    let kf = KeyFile::load_or_create(dir.path()).unwrap();
    let ke1 = |account: &str| {
        let acc = chatvault_vault_core::AccountId::new(account).unwrap();
        let (_, ke1) =
            chatvault_vault_core::RecoveryClient::start(&mut rand::rngs::OsRng, &acc, b"guess")
                .unwrap();
        format!(
            r#"{{"ke1":"{}"}}"#,
            chatvault_vault_core::api::b64_encode(&ke1)
        )
    };
    let shape = |account: &str| {
        let tok = token::issue(&kf.issuer, account, now(), 60);
        let (status, body) = raw_post(
            &format!("{}/v1/accounts/{account}/recover/start", server.url),
            Some(&tok),
            &ke1(account),
        );
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let obj = v.as_object().unwrap();
        let mut keys: Vec<_> = obj.keys().cloned().collect();
        keys.sort();
        (
            keys,
            obj["ke2"].as_str().unwrap().len(),
            obj["state"].as_str().unwrap().len(),
            obj["attempts_left"].as_u64().unwrap(),
        )
    };
    let registered = shape("erin");
    let unknown = shape("frank");
    assert_eq!(registered.0, unknown.0);
    assert_eq!(registered.1, unknown.1);
    assert_eq!(registered.2, unknown.2);
    assert_eq!((registered.3, unknown.3), (9, 9));
    // Through the client, the unknown account is just a wrong password.
    let f = client(&server, dir.path(), "frank");
    // (The dummy KE2 announces production Argon2: this costs one real Argon2 run.)
    assert!(matches!(
        f.recover(&pw("pw"), &pinned),
        Err(Error::WrongPassword { attempts_left: 9 })
    ));
}

#[test]
fn server_key_mismatch_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let other = Server::spawn(other_dir.path(), NO_LIMITS);
    let c = client(&server, dir.path(), "gina");
    let pinned = c.register(&pw("pw"), &KEY).unwrap();
    assert!(!pinned.ct_matches(&other.identity));
    // Same account registered on an impostor vault; the pinned client refuses it.
    let impostor = client(&other, other_dir.path(), "gina");
    impostor.register(&pw("pw"), &KEY).unwrap();
    assert!(matches!(
        impostor.recover(&pw("pw"), &pinned),
        Err(Error::ServerKeyMismatch)
    ));
    assert!(matches!(
        impostor.register_pinned(&pw("pw"), &KEY, &pinned),
        Err(Error::AlreadyRegistered) | Err(Error::ServerKeyMismatch)
    ));
    impostor.reset().unwrap();
    assert!(matches!(
        impostor.register_pinned(&pw("pw"), &KEY, &pinned),
        Err(Error::ServerKeyMismatch)
    ));
}

#[test]
fn tokens_expired_forged_or_other_account_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let kf = KeyFile::load_or_create(dir.path()).unwrap();
    let url = format!("{}/v1/accounts/hank/register/start", server.url);
    let body = r#"{"request":"AAAA"}"#;
    let expired = token::issue(&kf.issuer, "hank", now() - 100, 10);
    assert_eq!(raw_post(&url, Some(&expired), body).0, 401);
    let forger = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    assert_eq!(
        raw_post(&url, Some(&token::issue(&forger, "hank", now(), 60)), body).0,
        401
    );
    assert_eq!(raw_post(&url, None, body).0, 401);
    assert_eq!(raw_post(&url, Some("garbage"), body).0, 401);
    let (status, text) = raw_post(
        &url,
        Some(&token::issue(&kf.issuer, "ivan", now(), 60)),
        body,
    );
    assert_eq!(status, 403);
    assert!(text.contains("\"forbidden\""), "{text}");
    // Through the client.
    let bad = VaultClient::new(&server.url, "hank", SecretString::from(expired)).unwrap();
    assert!(matches!(
        bad.register(&pw("x"), &KEY),
        Err(Error::Unauthorized)
    ));
    let wrong = VaultClient::new(
        &server.url,
        "hank",
        SecretString::from(token::issue(&kf.issuer, "ivan", now(), 60)),
    )
    .unwrap();
    assert!(matches!(wrong.reset(), Err(Error::Forbidden)));
}

#[test]
fn malformed_requests_rejected_with_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let kf = KeyFile::load_or_create(dir.path()).unwrap();
    let tok = token::issue(&kf.issuer, "jane", now(), 60);
    let url = |tail: &str| format!("{}/v1/accounts/jane/{tail}", server.url);
    // Oversized body.
    let big = format!(r#"{{"ke1":"{}"}}"#, "A".repeat(20_000));
    let (status, text) = raw_post(&url("recover/start"), Some(&tok), &big);
    assert_eq!(status, 413, "{text}");
    // Bad base64 (padding, standard alphabet).
    let (status, text) = raw_post(&url("recover/start"), Some(&tok), r#"{"ke1":"AAAA=="}"#);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("base64"), "{text}");
    assert_eq!(
        raw_post(&url("recover/start"), Some(&tok), r#"{"ke1":"+/+/"}"#).0,
        400
    );
    // Wrong size, bad JSON, unknown field.
    assert_eq!(
        raw_post(&url("recover/start"), Some(&tok), r#"{"ke1":"AAAA"}"#).0,
        400
    );
    assert_eq!(raw_post(&url("recover/start"), Some(&tok), "{").0, 400);
    assert_eq!(
        raw_post(&url("recover/start"), Some(&tok), r#"{"ke1":"AAAA","x":1}"#).0,
        400
    );
    // A garbage login state.
    let ke3 = "A".repeat(86);
    let (status, text) = raw_post(
        &url("recover/finish"),
        Some(&tok),
        &format!(r#"{{"state":"AAEAAA","ke3":"{ke3}"}}"#),
    );
    assert_eq!(status, 400, "{text}");
    // Unsupported blob version.
    let (status, text) = raw_post(
        &url("recover/finish"),
        Some(&tok),
        &format!(r#"{{"state":"AAkAAA","ke3":"{ke3}"}}"#),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("unsupported_version"), "{text}");
    // Invalid account id in the path.
    let bad_tok = token::issue(&kf.issuer, "bad%20id", now(), 60);
    let (status, _) = raw_post(
        &format!("{}/v1/accounts/bad%20id/recover/start", server.url),
        Some(&bad_tok),
        r#"{"ke1":"AAAA"}"#,
    );
    assert!(status == 400 || status == 403, "{status}");
    assert_eq!(raw_get(&format!("{}/nope", server.url)).0, 404);
}

#[test]
fn recover_finish_replay_and_cross_account_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let kf = KeyFile::load_or_create(dir.path()).unwrap();
    let c = client(&server, dir.path(), "kim");
    let pinned = c.register(&pw("pw"), &KEY).unwrap();
    client(&server, dir.path(), "lee")
        .register(&pw("pw"), &KEY)
        .unwrap();
    let tok = |a: &str| token::issue(&kf.issuer, a, now(), 60);
    let (finish, status, text) = raw_recover(&server, dir.path(), "kim", b"pw", &pinned);
    assert_eq!(status, 200, "{text}");
    // Replayed KE3.
    let (status, text) = raw_post(
        &format!("{}/v1/accounts/kim/recover/finish", server.url),
        Some(&tok("kim")),
        &finish,
    );
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("stale_state"));
    // Another account's endpoint (with its own valid token): the state does not open.
    let (status, text) = raw_post(
        &format!("{}/v1/accounts/lee/recover/finish", server.url),
        Some(&tok("lee")),
        &finish,
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("invalid_state"));
    // The counter was not disturbed.
    assert!(matches!(
        c.recover(&pw("no"), &pinned),
        Err(Error::WrongPassword { attempts_left: 9 })
    ));
}

#[test]
fn restart_keeps_keys_and_records_openapi_metrics_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let pinned;
    {
        let server = Server::spawn(dir.path(), NO_LIMITS);
        pinned = client(&server, dir.path(), "mo")
            .register(&pw("pw"), &KEY)
            .unwrap();
    }
    let server = Server::spawn(dir.path(), NO_LIMITS);
    assert!(server.identity.ct_matches(&pinned));
    let c = client(&server, dir.path(), "mo");
    assert_eq!(*c.recover(&pw("pw"), &pinned).unwrap().backup_key, KEY);
    let _ = c.recover(&pw("wrong"), &pinned);
    let (status, served) = raw_get(&format!("{}/openapi.json", server.url));
    assert_eq!(status, 200);
    let checked_in =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi.json"))
            .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&served).unwrap(),
        serde_json::from_str::<serde_json::Value>(&checked_in).unwrap()
    );
    assert_eq!(
        raw_get(&format!("{}/healthz", server.url)),
        (200, "ok\n".to_owned())
    );
    let (_, metrics) = raw_get(&format!("{}/metrics", server.url));
    assert!(
        metrics.contains("chatvault_vault_guesses_counted_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("chatvault_vault_recoveries_succeeded_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "chatvault_vault_http_requests_total{route=\"/v1/accounts/{account}/recover/start\",status=\"200\"} 2"
        ),
        "{metrics}"
    );
    // The key file is private.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.path().join("vault.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn token_subcommand_prints_usable_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let out = Command::new(env!("CARGO_BIN_EXE_chatvault-vault"))
        .args(["token", "--account", "nina", "--ttl", "60", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let tok = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(tok.split('.').count(), 3);
    let c = VaultClient::new(&server.url, "nina", SecretString::from(tok))
        .unwrap()
        .with_registration_ksf(KsfParams::INSECURE_FOR_TESTS)
        .unwrap();
    c.register(&pw("pw"), &KEY).unwrap();
}

#[test]
fn rate_limit_per_account_429() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(
        dir.path(),
        &["--rate-limit-account", "3", "--rate-limit-ip", "0"],
    );
    let c = client(&server, dir.path(), "olga");
    let pinned = c.register(&pw("pw"), &KEY).unwrap(); // 2 requests
    let _ = c.recover(&pw("x"), &pinned); // 3rd
    assert!(matches!(
        c.recover(&pw("x"), &pinned),
        Err(Error::RateLimited)
    ));
}

/// Fires `n` concurrent wrong recoveries at `urls` (round robin) and returns
/// (wrong-password answers, locked answers).
fn race_wrong_recoveries(
    urls: &[String],
    data_dir: &Path,
    account: &str,
    pinned: ServerIdentity,
    n: usize,
) -> (usize, usize) {
    let barrier = Arc::new(Barrier::new(n));
    let tok = token_for(data_dir, account, 600);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            let url = urls[i % urls.len()].clone();
            let tok = SecretString::from(secrecy::ExposeSecret::expose_secret(&tok).to_owned());
            let account = account.to_owned();
            std::thread::spawn(move || {
                let c = VaultClient::new(&url, &account, tok).unwrap();
                barrier.wait();
                c.recover(&pw("wrong"), &pinned)
            })
        })
        .collect();
    let (mut wrong, mut locked) = (0, 0);
    for h in handles {
        match h.join().unwrap() {
            Err(Error::WrongPassword { .. }) => wrong += 1,
            Err(Error::Locked) => locked += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    (wrong, locked)
}

#[test]
fn sqlite_two_processes_race_exactly_max_attempts_counted() {
    let dir = tempfile::tempdir().unwrap();
    let a = Server::spawn(dir.path(), NO_LIMITS);
    let b = Server::spawn(dir.path(), NO_LIMITS);
    assert!(a.identity.ct_matches(&b.identity));
    let pinned = client(&a, dir.path(), "race")
        .register(&pw("right"), &KEY)
        .unwrap();
    let started = Instant::now();
    let (wrong, locked) = race_wrong_recoveries(
        &[a.url.clone(), b.url.clone()],
        dir.path(),
        "race",
        pinned,
        200,
    );
    eprintln!("sqlite race: 200 recoveries in {:?}", started.elapsed());
    assert_eq!((wrong, locked), (10, 190));
    let db = rusqlite::Connection::open(dir.path().join("vault.sqlite3")).unwrap();
    let row: (i64, Option<Vec<u8>>, i64, i64) = db
        .query_row(
            "SELECT status, sealed, attempts, guess_seq FROM vault_records WHERE account = 'race'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(row, (2, None, 10, 10));
    let c = client(&b, dir.path(), "race");
    assert!(matches!(
        c.recover(&pw("right"), &pinned),
        Err(Error::Locked)
    ));
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

struct PgDb {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDb {
    /// A fresh, uniquely named database, or `None` (with a visible SKIPPED message) if
    /// `CHATVAULT_TEST_POSTGRES_URL` is unset.
    fn create(test: &str) -> Option<PgDb> {
        let Ok(admin_url) = std::env::var("CHATVAULT_TEST_POSTGRES_URL") else {
            eprintln!(
                "SKIPPED: {test} needs PostgreSQL (set CHATVAULT_TEST_POSTGRES_URL, see scripts/ci-postgres.sh)"
            );
            return None;
        };
        let name = format!(
            "cvtest_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        pg_exec(&admin_url, &format!("CREATE DATABASE {name}"));
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("URL with a database path");
        let url = format!("{base}/{name}");
        Some(PgDb {
            admin_url,
            name,
            url,
        })
    }

    fn query_row(&self, sql: &str) -> (i16, Option<Vec<u8>>, i32, i64) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let row = client.query_one(sql, &[]).await.unwrap();
            (row.get(0), row.get(1), row.get(2), row.get(3))
        })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        pg_exec(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn pg_exec(url: &str, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client.batch_execute(sql).await.unwrap();
    });
}

#[test]
fn postgres_register_recover_change_delete() {
    let Some(db) = PgDb::create("postgres_register_recover_change_delete") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut args = NO_LIMITS.to_vec();
    args.extend(["--db", &db.url]);
    let server = Server::spawn(dir.path(), &args);
    let c = client(&server, dir.path(), "pat");
    let pinned = c.register(&pw("pw"), &KEY).unwrap();
    assert_eq!(*c.recover(&pw("pw"), &pinned).unwrap().backup_key, KEY);
    assert!(matches!(
        c.recover(&pw("no"), &pinned),
        Err(Error::WrongPassword { attempts_left: 9 })
    ));
    c.change_password(&pw("pw"), &pw("pw2"), &pinned).unwrap();
    assert_eq!(*c.recover(&pw("pw2"), &pinned).unwrap().backup_key, KEY);
    c.delete(&pw("pw2"), &pinned).unwrap();
    assert!(matches!(
        c.recover(&pw("pw2"), &pinned),
        Err(Error::WrongPassword { .. })
    ));
    let row = db.query_row(
        "SELECT status, sealed, attempts, generation FROM vault_records WHERE account = 'pat'",
    );
    assert_eq!((row.0, row.1), (0, None));
}

#[test]
fn postgres_three_processes_race_exactly_max_attempts_counted() {
    let Some(db) = PgDb::create("postgres_three_processes_race_exactly_max_attempts_counted")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut args = NO_LIMITS.to_vec();
    args.extend(["--db", &db.url, "--pg-pool-size", "20"]);
    let servers: Vec<Server> = (0..3).map(|_| Server::spawn(dir.path(), &args)).collect();
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let pinned = client(&servers[0], dir.path(), "race")
        .register(&pw("right"), &KEY)
        .unwrap();
    let started = Instant::now();
    let (wrong, locked) = race_wrong_recoveries(&urls, dir.path(), "race", pinned, 240);
    eprintln!(
        "postgres race: 240 recoveries over 3 processes in {:?}",
        started.elapsed()
    );
    assert_eq!((wrong, locked), (10, 230));
    let row = db.query_row(
        "SELECT status, sealed, attempts, guess_seq FROM vault_records WHERE account = 'race'",
    );
    assert_eq!(row, (2, None, 10, 10));
    for s in &servers {
        let c = client(s, dir.path(), "race");
        assert!(matches!(
            c.recover(&pw("right"), &pinned),
            Err(Error::Locked)
        ));
    }
    // The guesses counted by all processes add up to exactly max_attempts.
    let total: u64 = servers
        .iter()
        .map(|s| {
            let (_, m) = raw_get(&format!("{}/metrics", s.url));
            m.lines()
                .find_map(|l| l.strip_prefix("chatvault_vault_guesses_counted_total "))
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 10);
}

#[test]
fn recover_start_invalid_ke1_rejected_and_not_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let c = client(&server, dir.path(), "quinn");
    let pinned = c.register(&pw("pw"), &KEY).unwrap();
    let kf = KeyFile::load_or_create(dir.path()).unwrap();
    let tok = token::issue(&kf.issuer, "quinn", now(), 60);
    let bogus = chatvault_vault_core::api::b64_encode(&[0xff; 96]);
    for _ in 0..3 {
        let (status, text) = raw_post(
            &format!("{}/v1/accounts/quinn/recover/start", server.url),
            Some(&tok),
            &format!(r#"{{"ke1":"{bogus}"}}"#),
        );
        assert_eq!(status, 400, "{text}");
    }
    assert!(matches!(
        c.recover(&pw("no"), &pinned),
        Err(Error::WrongPassword { attempts_left: 9 })
    ));
}
