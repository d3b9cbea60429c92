//! Integration tests: the real `chatvault-vault serve` binary on 127.0.0.1:0 with a temp data dir,
//! driven through `chatvault-vault-client` the way the CLI will, plus raw HTTP for error paths.
//! PostgreSQL tests need `CHATVAULT_TEST_POSTGRES_URL` (see scripts/ci-postgres.sh).
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

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

/// `chatvault-vault serve --dev-issuer` on 127.0.0.1 (any port) with `data_dir` and `extra`
/// arguments, stdout piped (the tests read "listening on" from it).
fn serve_command(data_dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chatvault-vault"));
    c.args([
        "serve",
        "--dev-issuer",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(data_dir)
    .args(extra)
    .env("RUST_LOG", "warn")
    .stdout(Stdio::piped());
    c
}

impl Server {
    fn spawn(data_dir: &Path, extra: &[&str]) -> Server {
        let mut child = serve_command(data_dir, extra)
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

/// Runs `recover/start` through the raw HTTP API and the client's finish: returns the
/// `recover/finish` request body (not sent) and the client's unwrapper for the release.
fn raw_finish_body(
    server: &Server,
    data_dir: &Path,
    account: &str,
    password: &[u8],
    pinned: &ServerIdentity,
) -> (String, chatvault_vault_core::Unwrapper) {
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
    let (ke3, unwrapper) = rc
        .finish(
            &mut rand::rngs::OsRng,
            password,
            &b64_decode(&started.ke2, "ke2").unwrap(),
            Ke2Params {
                ksf: started.ksf,
                suite: started.suite,
                record_version: started.record_version,
                server_identity: ServerIdentity::from_b64(&started.server_identity).unwrap(),
            },
            pinned,
        )
        .unwrap();
    let finish = format!(
        r#"{{"state":"{}","ke3":"{}"}}"#,
        started.state,
        b64_encode(&ke3)
    );
    (finish, unwrapper)
}

/// Runs a recovery through the raw HTTP API; returns the finish request body, the
/// `recover/finish` answer (status, body) and, on success, the proof (base64url) opened from
/// the release with the session key.
fn raw_recover(
    server: &Server,
    data_dir: &Path,
    account: &str,
    password: &[u8],
    pinned: &ServerIdentity,
) -> (String, u16, String, Option<String>) {
    use chatvault_vault_core::api::{self, b64_decode, b64_encode};
    let (finish, unwrapper) = raw_finish_body(server, data_dir, account, password, pinned);
    let kf = KeyFile::load_or_create(data_dir).unwrap();
    let tok = token::issue(&kf.issuer, account, now(), 60);
    let (status, text) = raw_post(
        &format!("{}/v1/accounts/{account}/recover/finish", server.url),
        Some(&tok),
        &finish,
    );
    let proof = (status == 200).then(|| {
        let fin: api::RecoverFinishResponse = serde_json::from_str(&text).unwrap();
        let released = unwrapper
            .open_release(&b64_decode(&fin.release, "release").unwrap())
            .unwrap();
        b64_encode(&released.proof)
    });
    (finish, status, text, proof)
}

/// The same finish body with one bit of the KE3 flipped (a KE3 that cannot verify).
fn tamper_ke3(finish: &str) -> String {
    use chatvault_vault_core::api::{RecoverFinishRequest, b64_decode, b64_encode};
    let mut req: RecoverFinishRequest = serde_json::from_str(finish).unwrap();
    let mut ke3 = b64_decode(&req.ke3, "ke3").unwrap();
    ke3[0] ^= 1;
    req.ke3 = b64_encode(&ke3);
    serde_json::to_string(&req).unwrap()
}

/// `recover/finish` checks the KE3 before it touches the database; its answers are those of
/// PROTOCOL.md §6.3 step 2 whatever the order: a valid KE3 of a reset record is `409
/// stale_state`, any KE3 of an older generation too, an invalid one of the live generation `403`,
/// any KE3 of a destroyed record `423`. Only the KE3 that succeeds resets the counter, once.
fn recover_finish_answers_follow_the_row(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), extra);
    let kf = KeyFile::load_or_create(dir.path()).unwrap();
    let tok = token::issue(&kf.issuer, "fay", now(), 600);
    let finish_url = format!("{}/v1/accounts/fay/recover/finish", server.url);
    let post = |body: &str| raw_post(&finish_url, Some(&tok), body);
    let c = client(&server, dir.path(), "fay");
    let pinned = c.register(&pw("pw"), &KEY).unwrap();

    // Reset after the KE2: a valid KE3 is stale (a real state whose record is gone).
    let (old, _) = raw_finish_body(&server, dir.path(), "fay", b"pw", &pinned);
    c.reset().unwrap();
    let (status, text) = post(&old);
    assert_eq!(
        (status, text.contains("stale_state")),
        (409, true),
        "{text}"
    );
    // Registered again (another generation): still stale, valid or not.
    c.register_pinned(&pw("pw"), &KEY, &pinned).unwrap();
    for body in [old.clone(), tamper_ke3(&old)] {
        let (status, text) = post(&body);
        assert_eq!(
            (status, text.contains("stale_state")),
            (409, true),
            "{text}"
        );
    }
    // The live generation: an invalid KE3 is 403 and resets nothing; the valid one succeeds once.
    let (live, _) = raw_finish_body(&server, dir.path(), "fay", b"pw", &pinned);
    let (status, text) = post(&tamper_ke3(&live));
    assert_eq!(
        (status, text.contains("authentication_failed")),
        (403, true),
        "{text}"
    );
    assert!(matches!(
        c.recover(&pw("no"), &pinned),
        Err(Error::WrongPassword { attempts_left: 8 })
    ));
    let (status, text) = post(&live);
    assert_eq!(status, 200, "{text}");
    let (status, text) = post(&live);
    assert_eq!(
        (status, text.contains("stale_state")),
        (409, true),
        "{text}"
    );
    // Destroyed after the KE2: locked, valid KE3 or not.
    let (last, _) = raw_finish_body(&server, dir.path(), "fay", b"pw", &pinned);
    for _ in 0..9 {
        assert!(matches!(
            c.recover(&pw("no"), &pinned),
            Err(Error::WrongPassword { .. })
        ));
    }
    assert!(matches!(c.recover(&pw("pw"), &pinned), Err(Error::Locked)));
    for body in [last.clone(), tamper_ke3(&last)] {
        let (status, text) = post(&body);
        assert_eq!(status, 423, "{text}");
    }
}

#[test]
fn recover_finish_answers_follow_the_row_sqlite() {
    recover_finish_answers_follow_the_row(NO_LIMITS);
}

#[test]
fn postgres_recover_finish_answers_follow_the_row() {
    let Some(db) = PgDb::create("postgres_recover_finish_answers_follow_the_row") else {
        return;
    };
    let mut args = NO_LIMITS.to_vec();
    args.extend(["--db", &db.url]);
    recover_finish_answers_follow_the_row(&args);
}

#[test]
fn proof_single_use_second_use_stale() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let c = client(&server, dir.path(), "bob");
    let pinned = c.register(&pw("old"), &KEY).unwrap();
    let (_, status, text, proof) = raw_recover(&server, dir.path(), "bob", b"old", &pinned);
    assert_eq!(status, 200, "{text}");
    let proof = proof.unwrap();
    let kf = KeyFile::load_or_create(dir.path()).unwrap();
    let tok = token::issue(&kf.issuer, "bob", now(), 60);
    let del = format!(r#"{{"proof":"{proof}"}}"#);
    let url = format!("{}/v1/accounts/bob/delete", server.url);
    assert_eq!(raw_post(&url, Some(&tok), &del).0, 204);
    let (status, text) = raw_post(&url, Some(&tok), &del);
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("stale_proof"), "{text}");
    // A proof of another account does not open.
    c.register_pinned(&pw("p"), &KEY, &pinned).unwrap();
    let other = client(&server, dir.path(), "bea");
    other.register(&pw("p"), &KEY).unwrap();
    let (_, _, _, proof) = raw_recover(&server, dir.path(), "bea", b"p", &pinned);
    let (status, text) = raw_post(
        &url,
        Some(&tok),
        &format!(r#"{{"proof":"{}"}}"#, proof.unwrap()),
    );
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
    let (finish, status, text, _) = raw_recover(&server, dir.path(), "kim", b"pw", &pinned);
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
        metrics.contains("chatvault_vault_recover_starts_total 2"),
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
    /// `CHATVAULT_TEST_POSTGRES_URL` is unset (a failure under `CI=true`, see [`pg_env`]).
    fn create(test: &str) -> Option<PgDb> {
        let admin_url = pg_env(test, "CHATVAULT_TEST_POSTGRES_URL")?;
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

/// `var` from the environment, or `None` after a visible SKIPPED message. Under `CI=true` a
/// missing variable fails the test: a PostgreSQL suite that skips in CI proves nothing.
fn pg_env(test: &str, var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!(
                "{test}: {var} is not set but CI=true (run: eval \"$(bash scripts/ci-postgres.sh)\")"
            )
        }
        _ => {
            eprintln!("SKIPPED: {test} needs {var} (see scripts/ci-postgres.sh)");
            None
        }
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
                .find_map(|l| l.strip_prefix("chatvault_vault_recover_starts_total "))
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

// ---------------------------------------------------------------------------------------------
// Rollback commitment (PROTOCOL.md §9.1)

use chatvault_vault_client::CommitmentPut;

/// Any method, optional bearer token, optional JSON body: (status, body).
fn raw(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut resp = match body {
        Some(b) => agent
            .run(
                req.header("Content-Type", "application/json")
                    .body(b.to_owned())
                    .unwrap(),
            )
            .unwrap(),
        None => agent.run(req.body(()).unwrap()).unwrap(),
    };
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

fn b64std(bytes: &[u8]) -> String {
    chatvault_vault_core::api::b64std_encode(bytes)
}

/// (attempts, guess_seq, commitment_seq, commitment) of `account` in the SQLite database.
fn sqlite_row(dir: &Path, account: &str) -> (i64, i64, Option<i64>, Option<Vec<u8>>) {
    let db = rusqlite::Connection::open(dir.join("vault.sqlite3")).unwrap();
    db.query_row(
        "SELECT attempts, guess_seq, commitment_seq, commitment FROM vault_records WHERE account = ?1",
        [account],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .unwrap()
}

#[test]
fn commitment_round_trip_only_grows_and_409_carries_current_seq() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let c = client(&server, dir.path(), "cora");
    let pinned = c.register(&pw("pw"), &KEY).unwrap();
    assert_eq!(c.get_commitment().unwrap(), None);
    assert_eq!(c.put_commitment(1, b"one").unwrap(), CommitmentPut::Stored);
    assert_eq!(c.get_commitment().unwrap(), Some((1, b"one".to_vec())));
    // Equal and lower sequence numbers are refused with the stored one; nothing changes.
    assert_eq!(
        c.put_commitment(1, b"other").unwrap(),
        CommitmentPut::Stale { current_seq: 1 }
    );
    let max = [0xC5; 512];
    assert_eq!(c.put_commitment(7, &max).unwrap(), CommitmentPut::Stored);
    assert_eq!(
        c.put_commitment(3, b"old").unwrap(),
        CommitmentPut::Stale { current_seq: 7 }
    );
    assert_eq!(c.get_commitment().unwrap(), Some((7, max.to_vec())));
    // The raw 409 body.
    let tok = token_for(dir.path(), "cora", 60);
    let tok = secrecy::ExposeSecret::expose_secret(&tok).to_owned();
    let url = format!("{}/v1/accounts/cora/commitment", server.url);
    let (status, text) = raw(
        "PUT",
        &url,
        Some(&tok),
        Some(&format!(r#"{{"seq":7,"commitment":"{}"}}"#, b64std(b"x"))),
    );
    assert_eq!(status, 409, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"], "stale_commitment");
    assert_eq!(v["current_seq"], 7);
    // Raw GET shape: standard base64 with padding.
    let (status, text) = raw("GET", &url, Some(&tok), None);
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["seq"], 7);
    assert_eq!(v["commitment"], b64std(&max));
    // A password change keeps the commitment (same backup key); the counter was never touched.
    c.change_password(&pw("pw"), &pw("pw2"), &pinned).unwrap();
    assert_eq!(c.get_commitment().unwrap(), Some((7, max.to_vec())));
    let (attempts, guess_seq, _, _) = sqlite_row(dir.path(), "cora");
    assert_eq!((attempts, guess_seq), (0, 0));
    let (_, metrics) = raw_get(&format!("{}/metrics", server.url));
    assert!(
        metrics.contains("chatvault_vault_commitments_stored_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("chatvault_vault_commitments_stale_total 3"),
        "{metrics}"
    );
}

#[test]
fn commitment_bad_requests_auth_and_unregistered() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let kf = KeyFile::load_or_create(dir.path()).unwrap();
    let c = client(&server, dir.path(), "dora");
    let pinned = c.register(&pw("pw"), &KEY).unwrap();
    assert!(matches!(
        c.recover(&pw("wrong"), &pinned),
        Err(Error::WrongPassword { attempts_left: 9 })
    ));
    assert_eq!(c.put_commitment(2, b"c2").unwrap(), CommitmentPut::Stored);
    let tok = token::issue(&kf.issuer, "dora", now(), 60);
    let url = format!("{}/v1/accounts/dora/commitment", server.url);
    let put = |body: &str| raw("PUT", &url, Some(&tok), Some(body));
    let ok = b64std(b"fine");
    for body in [
        format!(r#"{{"seq":0,"commitment":"{ok}"}}"#),
        format!(r#"{{"seq":-1,"commitment":"{ok}"}}"#),
        format!(r#"{{"seq":1.5,"commitment":"{ok}"}}"#),
        format!(r#"{{"seq":9223372036854775808,"commitment":"{ok}"}}"#),
        format!(r#"{{"seq":18446744073709551616,"commitment":"{ok}"}}"#),
        format!(r#"{{"seq":"3","commitment":"{ok}"}}"#),
        format!(r#"{{"seq":3,"commitment":"{ok}","x":1}}"#),
        r#"{"seq":3}"#.to_owned(),
        r#"{"seq":3,"commitment":""}"#.to_owned(),
        r#"{"seq":3,"commitment":"-_8="}"#.to_owned(), // base64url alphabet
        r#"{"seq":3,"commitment":"+/8"}"#.to_owned(),  // missing padding
        r#"{"seq":3,"commitment":"+/9="}"#.to_owned(), // non-canonical
        r#"{"seq":3,"commitment":"Zm9v YmFy"}"#.to_owned(),
        format!(r#"{{"seq":3,"commitment":"{}"}}"#, b64std(&[1; 513])),
        format!(r#"{{"seq":3,"commitment":"{}"}}"#, "A".repeat(4000)),
        "{".to_owned(),
        "[]".to_owned(),
    ] {
        let (status, text) = put(&body);
        assert_eq!(status, 400, "{body} -> {text}");
        assert!(text.contains("bad_request"), "{body} -> {text}");
    }
    // Over the body limit.
    let (status, text) = put(&format!(
        r#"{{"seq":3,"commitment":"{}"}}"#,
        "A".repeat(20_000)
    ));
    assert_eq!(status, 413, "{text}");
    // Tokens: none, forged, expired → 401; another account's → 403.
    let body = format!(r#"{{"seq":3,"commitment":"{ok}"}}"#);
    assert_eq!(raw("PUT", &url, None, Some(&body)).0, 401);
    assert_eq!(raw("GET", &url, None, None).0, 401);
    let forger = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let forged = token::issue(&forger, "dora", now(), 60);
    assert_eq!(raw("PUT", &url, Some(&forged), Some(&body)).0, 401);
    assert_eq!(raw("GET", &url, Some(&forged), None).0, 401);
    let expired = token::issue(&kf.issuer, "dora", now() - 100, 10);
    assert_eq!(raw("PUT", &url, Some(&expired), Some(&body)).0, 401);
    let other = token::issue(&kf.issuer, "eve", now(), 60);
    let (status, text) = raw("PUT", &url, Some(&other), Some(&body));
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("\"forbidden\""), "{text}");
    assert_eq!(raw("GET", &url, Some(&other), None).0, 403);
    // Nothing above changed the commitment or the counter.
    assert_eq!(c.get_commitment().unwrap(), Some((2, b"c2".to_vec())));
    let (attempts, guess_seq, seq, _) = sqlite_row(dir.path(), "dora");
    assert_eq!((attempts, guess_seq, seq), (1, 1, Some(2)));
    // Client-side validation.
    assert!(matches!(
        c.put_commitment(0, b"x"),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        c.put_commitment(3, &[0; 513]),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        c.put_commitment(3, &[]),
        Err(Error::InvalidInput(_))
    ));
    // An account without a record: 409 not_registered for PUT, 404 no_commitment for GET.
    let e = client(&server, dir.path(), "eve");
    assert_eq!(e.get_commitment().unwrap(), None);
    assert!(matches!(
        e.put_commitment(1, b"x"),
        Err(Error::NotRegistered)
    ));
    let eve_url = format!("{}/v1/accounts/eve/commitment", server.url);
    let (status, text) = raw("PUT", &eve_url, Some(&other), Some(&body));
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("\"not_registered\""), "{text}");
    let (status, text) = raw("GET", &eve_url, Some(&other), None);
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("\"no_commitment\""), "{text}");
    // No row was created for eve.
    let db = rusqlite::Connection::open(dir.path().join("vault.sqlite3")).unwrap();
    let n: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM vault_records WHERE account = 'eve'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn commitment_deleted_with_record_on_delete_reset_and_destruction() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let c = client(&server, dir.path(), "fay");
    // Delete with proof.
    let pinned = c.register(&pw("pw"), &KEY).unwrap();
    assert_eq!(c.put_commitment(4, b"c4").unwrap(), CommitmentPut::Stored);
    c.delete(&pw("pw"), &pinned).unwrap();
    assert_eq!(c.get_commitment().unwrap(), None);
    assert!(matches!(
        c.put_commitment(5, b"x"),
        Err(Error::NotRegistered)
    ));
    assert_eq!(sqlite_row(dir.path(), "fay").2, None);
    // A new registration starts without a commitment, and any seq is accepted again.
    c.register_pinned(&pw("pw"), &KEY, &pinned).unwrap();
    assert_eq!(c.get_commitment().unwrap(), None);
    assert_eq!(c.put_commitment(1, b"c1").unwrap(), CommitmentPut::Stored);
    // Reset.
    c.reset().unwrap();
    assert_eq!(c.get_commitment().unwrap(), None);
    let (_, _, seq, blob) = sqlite_row(dir.path(), "fay");
    assert_eq!((seq, blob), (None, None));
    // Destruction after max wrong guesses.
    c.register_pinned(&pw("pw"), &KEY, &pinned).unwrap();
    assert_eq!(c.put_commitment(9, b"c9").unwrap(), CommitmentPut::Stored);
    for _ in 0..10 {
        assert!(matches!(
            c.recover(&pw("wrong"), &pinned),
            Err(Error::WrongPassword { .. })
        ));
    }
    assert!(matches!(c.recover(&pw("pw"), &pinned), Err(Error::Locked)));
    assert_eq!(c.get_commitment().unwrap(), None);
    assert!(matches!(
        c.put_commitment(10, b"x"),
        Err(Error::NotRegistered)
    ));
    let (_, _, seq, blob) = sqlite_row(dir.path(), "fay");
    assert_eq!((seq, blob), (None, None));
}

#[test]
fn commitment_destroyed_by_sweeper() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = NO_LIMITS.to_vec();
    args.extend(["--state-ttl", "1"]);
    let server = Server::spawn(dir.path(), &args);
    let c = client(&server, dir.path(), "gus");
    let pinned = c.register(&pw("pw"), &KEY).unwrap();
    assert_eq!(c.put_commitment(3, b"c3").unwrap(), CommitmentPut::Stored);
    for _ in 0..10 {
        let _ = c.recover(&pw("wrong"), &pinned);
    }
    // Nobody calls recover/start again: the sweeper destroys the record (its KE3 window is
    // over) and the commitment with it. The sweep interval is 30 s, so look at the database
    // after forcing the same statement the sweeper runs through a second store handle.
    let store =
        chatvault_vault::store::SqliteStore::open(&dir.path().join("vault.sqlite3")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let n = rt
        .block_on(chatvault_vault::store::Store::sweep(&store, now(), 1))
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(c.get_commitment().unwrap(), None);
    let (_, _, seq, blob) = sqlite_row(dir.path(), "gus");
    assert_eq!((seq, blob), (None, None));
}

#[test]
fn commitment_persists_across_restart_and_old_database_migrates() {
    let dir = tempfile::tempdir().unwrap();
    {
        let server = Server::spawn(dir.path(), NO_LIMITS);
        let c = client(&server, dir.path(), "hal");
        c.register(&pw("pw"), &KEY).unwrap();
        assert_eq!(c.put_commitment(12, b"c12").unwrap(), CommitmentPut::Stored);
        client(&server, dir.path(), "ida")
            .register(&pw("pw"), &KEY)
            .unwrap();
    }
    {
        let server = Server::spawn(dir.path(), NO_LIMITS);
        let c = client(&server, dir.path(), "hal");
        assert_eq!(c.get_commitment().unwrap(), Some((12, b"c12".to_vec())));
        assert_eq!(
            c.put_commitment(12, b"again").unwrap(),
            CommitmentPut::Stale { current_seq: 12 }
        );
    }
    // A database written before the commitment columns existed: drop them, start again.
    {
        let db = rusqlite::Connection::open(dir.path().join("vault.sqlite3")).unwrap();
        db.execute_batch(
            "ALTER TABLE vault_records DROP COLUMN commitment;
             ALTER TABLE vault_records DROP COLUMN commitment_seq;",
        )
        .unwrap();
    }
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let c = client(&server, dir.path(), "ida");
    let pinned = server.identity;
    assert_eq!(*c.recover(&pw("pw"), &pinned).unwrap().backup_key, KEY);
    assert_eq!(c.get_commitment().unwrap(), None);
    assert_eq!(c.put_commitment(1, b"c1").unwrap(), CommitmentPut::Stored);
    assert_eq!(c.get_commitment().unwrap(), Some((1, b"c1".to_vec())));
}

/// Puts seqs 1..=n for `account` from `n` threads spread over `urls`, all released at once.
/// Checks each answer is consistent and returns how many were stored.
fn race_commitments(urls: &[String], data_dir: &Path, account: &str, n: u64) -> usize {
    let barrier = Arc::new(Barrier::new(n as usize));
    let tok = token_for(data_dir, account, 600);
    // Interleave high and low seqs so the order of arrival is mixed.
    let mut seqs: Vec<u64> = (1..=n).collect();
    seqs.sort_by_key(|s| (s * 7919) % n);
    let handles: Vec<_> = seqs
        .into_iter()
        .enumerate()
        .map(|(i, seq)| {
            let barrier = barrier.clone();
            let url = urls[i % urls.len()].clone();
            let tok = SecretString::from(secrecy::ExposeSecret::expose_secret(&tok).to_owned());
            let account = account.to_owned();
            std::thread::spawn(move || {
                let c = VaultClient::new(&url, &account, tok).unwrap();
                barrier.wait();
                (seq, c.put_commitment(seq, &seq.to_be_bytes()).unwrap())
            })
        })
        .collect();
    let mut stored = 0;
    for h in handles {
        match h.join().unwrap() {
            (_, CommitmentPut::Stored) => stored += 1,
            (seq, CommitmentPut::Stale { current_seq }) => {
                assert!(current_seq >= seq, "stale {seq} vs current {current_seq}")
            }
        }
    }
    assert!(stored >= 1);
    stored
}

#[test]
fn sqlite_two_processes_commitment_race_keeps_max() {
    let dir = tempfile::tempdir().unwrap();
    let a = Server::spawn(dir.path(), NO_LIMITS);
    let b = Server::spawn(dir.path(), NO_LIMITS);
    client(&a, dir.path(), "race")
        .register(&pw("pw"), &KEY)
        .unwrap();
    race_commitments(&[a.url.clone(), b.url.clone()], dir.path(), "race", 60);
    let c = client(&b, dir.path(), "race");
    assert_eq!(
        c.get_commitment().unwrap(),
        Some((60, 60u64.to_be_bytes().to_vec()))
    );
}

#[test]
fn postgres_commitment_round_trip_delete_and_race() {
    let Some(db) = PgDb::create("postgres_commitment_round_trip_delete_and_race") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut args = NO_LIMITS.to_vec();
    args.extend(["--db", &db.url, "--pg-pool-size", "20"]);
    let a = Server::spawn(dir.path(), &args);
    let b = Server::spawn(dir.path(), &args);
    let c = client(&a, dir.path(), "pia");
    let pinned = c.register(&pw("pw"), &KEY).unwrap();
    assert_eq!(c.get_commitment().unwrap(), None);
    assert_eq!(c.put_commitment(2, b"c2").unwrap(), CommitmentPut::Stored);
    assert_eq!(
        c.put_commitment(2, b"x").unwrap(),
        CommitmentPut::Stale { current_seq: 2 }
    );
    assert_eq!(c.get_commitment().unwrap(), Some((2, b"c2".to_vec())));
    let unregistered = client(&a, dir.path(), "zed");
    assert!(matches!(
        unregistered.put_commitment(1, b"x"),
        Err(Error::NotRegistered)
    ));
    assert_eq!(unregistered.get_commitment().unwrap(), None);
    // Two processes race 80 puts with seqs 1..=80: the max ends up stored.
    c.put_commitment(3, b"c3").unwrap();
    c.reset().unwrap();
    assert_eq!(c.get_commitment().unwrap(), None);
    c.register_pinned(&pw("pw"), &KEY, &pinned).unwrap();
    let started = Instant::now();
    let stored = race_commitments(&[a.url.clone(), b.url.clone()], dir.path(), "pia", 80);
    eprintln!(
        "postgres commitment race: 80 puts over 2 processes in {:?}, {stored} stored",
        started.elapsed()
    );
    let cb = client(&b, dir.path(), "pia");
    assert_eq!(
        cb.get_commitment().unwrap(),
        Some((80, 80u64.to_be_bytes().to_vec()))
    );
    // Persists across a restart of both processes (and the migration is idempotent).
    drop((a, b));
    let a = Server::spawn(dir.path(), &args);
    let c = client(&a, dir.path(), "pia");
    assert_eq!(
        c.get_commitment().unwrap(),
        Some((80, 80u64.to_be_bytes().to_vec()))
    );
    // Deleted with the record, and by destruction.
    c.delete(&pw("pw"), &pinned).unwrap();
    assert_eq!(c.get_commitment().unwrap(), None);
    c.register_pinned(&pw("pw"), &KEY, &pinned).unwrap();
    c.put_commitment(1, b"c1").unwrap();
    for _ in 0..10 {
        let _ = c.recover(&pw("wrong"), &pinned);
    }
    assert!(matches!(c.recover(&pw("pw"), &pinned), Err(Error::Locked)));
    assert_eq!(c.get_commitment().unwrap(), None);
    let row = db.query_row(
        "SELECT status, commitment, attempts, COALESCE(commitment_seq, -1) FROM vault_records WHERE account = 'pia'",
    );
    assert_eq!((row.0, row.1, row.3), (2, None, -1));
}

#[test]
fn postgres_old_schema_migrates_additively() {
    let Some(db) = PgDb::create("postgres_old_schema_migrates_additively") else {
        return;
    };
    // The schema as the previous build created it, with one live record in it.
    let dir = tempfile::tempdir().unwrap();
    let mut args = NO_LIMITS.to_vec();
    args.extend(["--db", &db.url]);
    let pinned = {
        let server = Server::spawn(dir.path(), &args);
        client(&server, dir.path(), "old")
            .register(&pw("pw"), &KEY)
            .unwrap()
    };
    pg_exec(
        &db.url,
        "ALTER TABLE vault_records DROP COLUMN commitment; ALTER TABLE vault_records DROP COLUMN commitment_seq;",
    );
    let server = Server::spawn(dir.path(), &args);
    let c = client(&server, dir.path(), "old");
    assert_eq!(*c.recover(&pw("pw"), &pinned).unwrap().backup_key, KEY);
    assert_eq!(c.get_commitment().unwrap(), None);
    assert_eq!(c.put_commitment(5, b"c5").unwrap(), CommitmentPut::Stored);
    assert_eq!(c.get_commitment().unwrap(), Some((5, b"c5".to_vec())));
}

// ---------------------------------------------------------------------------------------------
// Robustness: every bad request is a clear 4xx and leaves the guess counter alone.

/// Starts a recovery through the raw API (one counted guess) and computes the KE3, without
/// sending it: returns the `recover/finish` body.
fn prepare_finish(
    server: &Server,
    data_dir: &Path,
    account: &str,
    password: &[u8],
    pinned: &ServerIdentity,
) -> String {
    use chatvault_vault_core::api::{self, b64_decode, b64_encode};
    use chatvault_vault_core::{AccountId, Ke2Params, RecoveryClient};
    let kf = KeyFile::load_or_create(data_dir).unwrap();
    let tok = token::issue(&kf.issuer, account, now(), 60);
    let acc = AccountId::new(account).unwrap();
    let (rc, ke1) = RecoveryClient::start(&mut rand::rngs::OsRng, &acc, password).unwrap();
    let (status, body) = raw_post(
        &format!("{}/v1/accounts/{account}/recover/start", server.url),
        Some(&tok),
        &format!(r#"{{"ke1":"{}"}}"#, b64_encode(&ke1)),
    );
    assert_eq!(status, 200, "{body}");
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
                server_identity: ServerIdentity::from_b64(&started.server_identity).unwrap(),
            },
            pinned,
        )
        .unwrap();
    format!(
        r#"{{"state":"{}","ke3":"{}"}}"#,
        started.state,
        b64_encode(&ke3)
    )
}

/// A JWT with arbitrary header and claims, signed by `key`.
fn custom_token(key: &ed25519_dalek::SigningKey, header: &str, claims: &str) -> String {
    use base64::Engine as _;
    use ed25519_dalek::Signer as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let input = format!("{}.{}", b64.encode(header), b64.encode(claims));
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", b64.encode(sig.to_bytes()))
}

fn valid_ke1_body(account: &str) -> String {
    let acc = chatvault_vault_core::AccountId::new(account).unwrap();
    let (_, ke1) =
        chatvault_vault_core::RecoveryClient::start(&mut rand::rngs::OsRng, &acc, b"guess")
            .unwrap();
    format!(
        r#"{{"ke1":"{}"}}"#,
        chatvault_vault_core::api::b64_encode(&ke1)
    )
}

#[test]
fn bad_requests_never_touch_the_counter() {
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let kf = KeyFile::load_or_create(dir.path()).unwrap();
    let c = client(&server, dir.path(), "ulla");
    let pinned = c.register(&pw("pw"), &KEY).unwrap();
    client(&server, dir.path(), "vera")
        .register(&pw("pw"), &KEY)
        .unwrap();
    let counter = || {
        let (attempts, guess_seq, _, _) = sqlite_row(dir.path(), "ulla");
        (attempts, guess_seq)
    };
    assert!(matches!(
        c.recover(&pw("wrong"), &pinned),
        Err(Error::WrongPassword { attempts_left: 9 })
    ));
    assert_eq!(counter(), (1, 1));
    // An old sealed login state (right password, never finished), then a later success.
    let old_finish = prepare_finish(&server, dir.path(), "ulla", b"pw", &pinned);
    assert_eq!(counter(), (2, 2));
    c.recover(&pw("pw"), &pinned).unwrap();
    assert_eq!(counter(), (0, 3));
    let expected = counter();

    let url = |account: &str, tail: &str| format!("{}/v1/accounts/{account}/{tail}", server.url);
    let tok = token::issue(&kf.issuer, "ulla", now(), 60);
    let check = |what: &str, (status, text): (u16, String), want: u16, code: &str| {
        assert_eq!(status, want, "{what}: {text}");
        assert!(text.contains(code), "{what}: {text}");
        assert_eq!(counter(), expected, "{what} changed the counter");
    };

    // Replay of the old state after the later success: stale, nothing released or reset.
    check(
        "old state after a later success",
        raw_post(&url("ulla", "recover/finish"), Some(&tok), &old_finish),
        409,
        "stale_state",
    );
    // The same state on another account's endpoint (its own valid token).
    let vera_tok = token::issue(&kf.issuer, "vera", now(), 60);
    check(
        "state for another account",
        raw_post(&url("vera", "recover/finish"), Some(&vera_tok), &old_finish),
        400,
        "invalid_state",
    );

    // Tokens, each with a valid KE1 that would count a guess if it got through.
    let ke1 = valid_ke1_body("ulla");
    let start = url("ulla", "recover/start");
    let other_issuer = KeyFile::load_or_create(other_dir.path()).unwrap().issuer;
    let header = r#"{"alg":"EdDSA","typ":"JWT"}"#;
    let claims = |sub: &str, aud: &str, iat: u64, exp: u64| {
        format!(
            r#"{{"iss":"chatvault-vault-dev","sub":"{sub}","aud":"{aud}","iat":{iat},"exp":{exp}}}"#
        )
    };
    let n = now();
    let with = |extra: &str| {
        format!(
            r#"{{"iss":"chatvault-vault-dev","sub":"ulla","aud":"chatvault-vault","iat":{n},"exp":{}{extra}}}"#,
            n + 60
        )
    };
    for (what, token) in [
        (
            "token of another issuer (another vault's dev key)",
            token::issue(&other_issuer, "ulla", n, 60),
        ),
        (
            "wrong audience",
            custom_token(
                &kf.issuer,
                header,
                &claims("ulla", "other-service", n, n + 60),
            ),
        ),
        (
            "issued in the future",
            custom_token(
                &kf.issuer,
                header,
                &claims("ulla", "chatvault-vault", n + 3600, n + 7200),
            ),
        ),
        (
            "alg none",
            custom_token(
                &kf.issuer,
                r#"{"alg":"none","typ":"JWT"}"#,
                &claims("ulla", "chatvault-vault", n, n + 60),
            ),
        ),
        ("expired", token::issue(&kf.issuer, "ulla", n - 100, 10)),
        (
            "forged",
            token::issue(
                &ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
                "ulla",
                n,
                60,
            ),
        ),
        ("garbage", "a.b.c".to_owned()),
        // Token policy (PROTOCOL.md §8).
        (
            "exp - iat over the maximum (1 h)",
            custom_token(
                &kf.issuer,
                header,
                &claims("ulla", "chatvault-vault", n, n + 3601),
            ),
        ),
        (
            "wrong iss",
            custom_token(
                &kf.issuer,
                header,
                &with("").replace("chatvault-vault-dev", "accounts.evil.example"),
            ),
        ),
        (
            "no iss",
            custom_token(
                &kf.issuer,
                header,
                &with("").replace(r#""iss":"chatvault-vault-dev","#, ""),
            ),
        ),
        (
            "crit",
            custom_token(
                &kf.issuer,
                r#"{"alg":"EdDSA","typ":"JWT","crit":["b64"],"b64":false}"#,
                &with(""),
            ),
        ),
        (
            "typ other than JWT",
            custom_token(&kf.issuer, r#"{"alg":"EdDSA","typ":"at+jwt"}"#, &with("")),
        ),
        (
            "nbf in the future",
            custom_token(&kf.issuer, header, &with(&format!(r#","nbf":{}"#, n + 600))),
        ),
    ] {
        check(
            what,
            raw_post(&start, Some(&token), &ke1),
            401,
            "unauthorized",
        );
    }
    check(
        "no token",
        raw_post(&start, None, &ke1),
        401,
        "unauthorized",
    );
    check(
        "token of another account",
        raw_post(&start, Some(&vera_tok), &ke1),
        403,
        "forbidden",
    );

    // Bodies.
    let big = format!(r#"{{"ke1":"{}"}}"#, "A".repeat(20_000));
    check(
        "oversized",
        raw_post(&start, Some(&tok), &big),
        413,
        "payload_too_large",
    );
    check(
        "padded base64",
        raw_post(&start, Some(&tok), r#"{"ke1":"AAAA=="}"#),
        400,
        "bad_request",
    );
    check(
        "wrong size",
        raw_post(&start, Some(&tok), r#"{"ke1":"AAAA"}"#),
        400,
        "bad_request",
    );
    let bogus = chatvault_vault_core::api::b64_encode(&[0xff; 96]);
    check(
        "invalid KE1 point",
        raw_post(&start, Some(&tok), &format!(r#"{{"ke1":"{bogus}"}}"#)),
        400,
        "bad_request",
    );
    let ke3 = "A".repeat(86);
    check(
        "short state",
        raw_post(
            &url("ulla", "recover/finish"),
            Some(&tok),
            &format!(r#"{{"state":"AAEAAA","ke3":"{ke3}"}}"#),
        ),
        400,
        "bad_request",
    );
    let mut forged_state = vec![0x5A; 195];
    forged_state[..2].copy_from_slice(&[0, 1]);
    check(
        "forged state of the right size",
        raw_post(
            &url("ulla", "recover/finish"),
            Some(&tok),
            &format!(
                r#"{{"state":"{}","ke3":"{ke3}"}}"#,
                chatvault_vault_core::api::b64_encode(&forged_state)
            ),
        ),
        400,
        "invalid_state",
    );
    check(
        "garbage ticket",
        raw_post(
            &url("ulla", "register/finish"),
            Some(&tok),
            &format!(
                r#"{{"ticket":"AAEAAA","upload":"{}","wrapped_key":"{}","ksf":{{"m_kib":8,"t":1,"p":1}}}}"#,
                "A".repeat(256),
                "A".repeat(96)
            ),
        ),
        400,
        "",
    );
    check(
        "garbage proof",
        raw_post(&url("ulla", "delete"), Some(&tok), r#"{"proof":"AAEAAA"}"#),
        400,
        "bad_request",
    );
    check(
        "not JSON content type",
        raw("POST", &start, Some(&tok), None),
        415,
        "unsupported_media_type",
    );
    check(
        "bad commitment",
        raw(
            "PUT",
            &url("ulla", "commitment"),
            Some(&tok),
            Some(r#"{"seq":0,"commitment":"AA=="}"#),
        ),
        400,
        "bad_request",
    );
    check(
        "unsupported method",
        raw("POST", &url("ulla", "commitment"), Some(&tok), Some("{}")),
        405,
        "method_not_allowed",
    );
    // And the account still works with a full budget.
    assert!(matches!(
        c.recover(&pw("wrong"), &pinned),
        Err(Error::WrongPassword { attempts_left: 9 })
    ));
    assert_eq!(*c.recover(&pw("pw"), &pinned).unwrap().backup_key, KEY);
}

#[test]
fn expired_login_state_410_and_counter_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = NO_LIMITS.to_vec();
    args.extend(["--state-ttl", "1"]);
    let server = Server::spawn(dir.path(), &args);
    let c = client(&server, dir.path(), "walt");
    let pinned = c.register(&pw("pw"), &KEY).unwrap();
    let finish = prepare_finish(&server, dir.path(), "walt", b"pw", &pinned);
    let counted = sqlite_row(dir.path(), "walt");
    assert_eq!((counted.0, counted.1), (1, 1));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let kf = KeyFile::load_or_create(dir.path()).unwrap();
    let (status, text) = raw_post(
        &format!("{}/v1/accounts/walt/recover/finish", server.url),
        Some(&token::issue(&kf.issuer, "walt", now(), 60)),
        &finish,
    );
    assert_eq!(status, 410, "{text}");
    assert!(text.contains("expired"), "{text}");
    let after = sqlite_row(dir.path(), "walt");
    assert_eq!((after.0, after.1), (1, 1));
    // A fresh recovery still works and resets the counter.
    assert_eq!(*c.recover(&pw("pw"), &pinned).unwrap().backup_key, KEY);
    let after = sqlite_row(dir.path(), "walt");
    assert_eq!((after.0, after.1), (0, 2));
}

/// PROTOCOL.md §8: `serve` refuses to start without a token issuer, and says what to pass.
#[test]
fn serve_without_issuer_or_dev_issuer_exits_with_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chatvault-vault"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no account-token issuer configured")
            && err.contains("--issuer-public-key")
            && err.contains("--dev-issuer"),
        "{err}"
    );
    // With --dev-issuer it starts, and warns loudly.
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatvault-vault"))
        .args([
            "serve",
            "--dev-issuer",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on "), "{line}");
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WARNING: --dev-issuer"), "{err}");
}

/// PROTOCOL.md §8: a token holder cannot reset a record or replace it (change of password) with
/// a token older than 5 minutes; a recent token can.
#[test]
fn reset_and_reregistration_need_a_recent_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let kf = KeyFile::load_or_create(dir.path()).unwrap();
    let c = client(&server, dir.path(), "olga");
    let pinned = c.register(&pw("pw"), &KEY).unwrap();
    // Issued 10 minutes ago, valid for 20: accepted for recovery, not for destructive changes.
    let old = SecretString::from(token::issue(&kf.issuer, "olga", now() - 600, 1200));
    let stale = VaultClient::new(&server.url, "olga", old)
        .unwrap()
        .with_registration_ksf(KsfParams::INSECURE_FOR_TESTS)
        .unwrap();
    let recovered = stale.recover(&pw("pw"), &pinned).unwrap();
    assert_eq!(*recovered.backup_key, KEY);
    assert!(matches!(stale.reset(), Err(Error::Unauthorized)));
    assert!(matches!(
        stale.change_password(&pw("pw"), &pw("new"), &pinned),
        Err(Error::Unauthorized)
    ));
    let url = format!("{}/v1/accounts/olga", server.url);
    let (status, text) = raw(
        "DELETE",
        &url,
        Some(&token::issue(&kf.issuer, "olga", now() - 600, 1200)),
        None,
    );
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("token_not_recent"), "{text}");
    // The record is intact; a recent token can do both.
    assert_eq!(*c.recover(&pw("pw"), &pinned).unwrap().backup_key, KEY);
    c.change_password(&pw("pw"), &pw("new"), &pinned).unwrap();
    c.reset().unwrap();
    assert!(matches!(
        c.recover(&pw("new"), &pinned),
        Err(Error::WrongPassword { .. })
    ));
}

/// The database is private to the vault user, and an erased record does not survive in the WAL.
#[test]
fn sqlite_file_0600_and_wal_truncated_after_reset() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let c = client(&server, dir.path(), "paul");
    c.register(&pw("pw"), &KEY).unwrap();
    for name in ["vault.sqlite3", "vault.sqlite3-wal", "vault.sqlite3-shm"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{name}: {mode:o}");
    }
    c.reset().unwrap();
    let wal = std::fs::metadata(dir.path().join("vault.sqlite3-wal")).unwrap();
    assert_eq!(wal.len(), 0, "WAL not truncated after the erasure");
}

/// `/healthz` pings the database at most once per second however often it is asked.
#[test]
fn healthz_pings_the_database_at_most_once_per_second() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let start = Instant::now();
    for _ in 0..50 {
        assert_eq!(raw_get(&format!("{}/healthz", server.url)).0, 200);
    }
    let secs = start.elapsed().as_secs();
    let (_, m) = raw_get(&format!("{}/metrics", server.url));
    let pings: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("chatvault_vault_health_pings_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(pings >= 1 && pings <= secs + 1, "{pings} pings in {secs} s");
}

/// `/metrics` is public: a recovery attempt for a registered and for an unknown account change
/// the same counters.
#[test]
fn metrics_do_not_tell_registered_from_unknown_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let c = client(&server, dir.path(), "rita");
    let pinned = c.register(&pw("pw"), &KEY).unwrap();
    let counters = || {
        let (_, m) = raw_get(&format!("{}/metrics", server.url));
        m.lines()
            .filter(|l| l.starts_with("chatvault_vault_") && !l.contains("http_requests"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let before = counters();
    let _ = c.recover(&pw("wrong"), &pinned);
    let registered = counters();
    let nobody = client(&server, dir.path(), "nobody");
    let _ = nobody.recover(&pw("wrong"), &pinned);
    let unknown = counters();
    let diff = |a: &[String], b: &[String]| {
        a.iter()
            .zip(b)
            .filter(|(x, y)| x != y)
            .map(|(_, y)| y.split(' ').next().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(diff(&before, &registered), diff(&registered, &unknown));
}

/// PROTOCOL.md §2.2: the same password typed in another Unicode form recovers the key.
#[test]
fn password_in_another_unicode_form_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let c = client(&server, dir.path(), "zoe");
    let pinned = c
        .register(&pw("cafe\u{301} \u{ff11}\u{ff12}"), &KEY)
        .unwrap();
    assert_eq!(
        *c.recover(&pw("caf\u{e9} 12"), &pinned).unwrap().backup_key,
        KEY
    );
}

/// A test CA and a server certificate for 127.0.0.1 / localhost signed by it, as PEM files in
/// `dir` (`<name>-ca.pem`, `<name>-cert.pem`, `<name>-key.pem`). Returns the CA PEM.
fn test_ca(dir: &Path, name: &str) -> Vec<u8> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("chatvault test CA {name}"),
    );
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join(format!("{name}-cert.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    let ca = ca_cert.pem().into_bytes();
    std::fs::write(dir.join(format!("{name}-ca.pem")), &ca).unwrap();
    ca
}

/// TLS end to end (PROTOCOL.md §9.2): `serve --tls-cert --tls-key` with a certificate from a test
/// CA; a client trusting that CA registers and recovers over https; one that trusts only the web
/// PKI, or another CA, cannot connect; plain http to the TLS port fails; after SIGHUP the vault
/// serves the replaced certificate to new connections.
#[test]
fn tls_end_to_end_with_a_test_ca_and_reload_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let ca1 = test_ca(pki.path(), "one");
    let ca2 = test_ca(pki.path(), "two");
    let cert = pki.path().join("served-cert.pem");
    let key = pki.path().join("served-key.pem");
    std::fs::copy(pki.path().join("one-cert.pem"), &cert).unwrap();
    std::fs::copy(pki.path().join("one-key.pem"), &key).unwrap();
    let mut args = NO_LIMITS.to_vec();
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    args.extend(["--tls-cert", c, "--tls-key", k]);
    let server = Server::spawn(dir.path(), &args);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let tok = || token_for(dir.path(), "tina", 600);
    let with_ca = |ca: &[u8]| {
        VaultClient::new(&server.url, "tina", tok())
            .unwrap()
            .with_registration_ksf(KsfParams::INSECURE_FOR_TESTS)
            .unwrap()
            .with_ca_pem(ca)
            .unwrap()
    };
    let pinned = with_ca(&ca1).register(&pw("pw"), &KEY).unwrap();
    assert_eq!(server.identity, pinned);
    assert_eq!(
        *with_ca(&ca1)
            .recover(&pw("pw"), &pinned)
            .unwrap()
            .backup_key,
        KEY
    );
    // Web PKI only, or the other CA: the TLS handshake fails, nothing is counted.
    let web = VaultClient::new(&server.url, "tina", tok()).unwrap();
    assert!(matches!(
        web.recover(&pw("pw"), &pinned),
        Err(Error::Unreachable(_))
    ));
    assert!(matches!(
        with_ca(&ca2).recover(&pw("pw"), &pinned),
        Err(Error::Unreachable(_))
    ));
    // Plain HTTP to the TLS port is not served.
    let plain = server.url.replace("https://", "http://");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    assert!(agent.get(&format!("{plain}/healthz")).call().is_err());

    // Replace the certificate with one from CA two, and reload.
    std::fs::copy(pki.path().join("two-cert.pem"), &cert).unwrap();
    std::fs::copy(pki.path().join("two-key.pem"), &key).unwrap();
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match with_ca(&ca2).recover(&pw("pw"), &pinned) {
            Ok(r) => {
                assert_eq!(*r.backup_key, KEY);
                break;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "no reload: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
    assert!(matches!(
        with_ca(&ca1).recover(&pw("pw"), &pinned),
        Err(Error::Unreachable(_))
    ));
}

/// A client that sends its request headers too slowly is disconnected
/// (`chatvault_vault::HEADER_READ_TIMEOUT`) instead of holding a connection forever.
#[test]
fn slow_header_connection_closed_after_header_read_timeout() {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), NO_LIMITS);
    let addr = server.url.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    s.set_read_timeout(Some(
        chatvault_vault::HEADER_READ_TIMEOUT + std::time::Duration::from_secs(10),
    ))
    .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let waited = start.elapsed();
    assert!(
        waited >= chatvault_vault::HEADER_READ_TIMEOUT - std::time::Duration::from_secs(1)
            && waited < chatvault_vault::HEADER_READ_TIMEOUT + std::time::Duration::from_secs(5),
        "closed after {waited:?}"
    );
    assert!(
        !String::from_utf8_lossy(&buf).contains("ok"),
        "served: {buf:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL over TLS (PROTOCOL.md §9.2). scripts/ci-postgres.sh gives the cluster a certificate
// for IP 127.0.0.1 only (not "localhost") from the CA in CHATVAULT_TEST_POSTGRES_CA.

/// A fresh database and the test CA file, or `None` (SKIPPED; a failure under `CI=true`).
fn pg_tls(test: &str) -> Option<(PgDb, String)> {
    let ca = pg_env(test, "CHATVAULT_TEST_POSTGRES_CA")?;
    let db = PgDb::create(test)?;
    assert!(
        db.url.contains("@127.0.0.1:"),
        "the TLS tests expect CHATVAULT_TEST_POSTGRES_URL on 127.0.0.1"
    );
    Some((db, ca))
}

/// (TLS, plain) connections to the database `name`, as the server sees them (pg_stat_ssl).
fn pg_connections_by_tls(admin_url: &str, name: &str) -> (i64, i64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
                 FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid
                 WHERE a.datname = $1",
                &[&name],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    })
}

/// Runs `serve` expecting it to exit non-zero before listening; returns its stderr.
fn serve_must_fail(data_dir: &Path, extra: &[&str]) -> String {
    let mut child = serve_command(data_dir, extra)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chatvault-vault");
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve {extra:?} did not exit within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!status.success(), "serve {extra:?} succeeded: {stdout}");
    assert!(!stdout.contains("listening"), "{stdout}");
    stderr
}

/// Registration, a wrong guess and recovery through `server`.
fn register_and_recover(server: &Server, dir: &Path, account: &str) {
    let c = client(server, dir, account);
    let pinned = c.register(&pw("pw"), &KEY).unwrap();
    assert!(matches!(
        c.recover(&pw("no"), &pinned),
        Err(Error::WrongPassword { attempts_left: 9 })
    ));
    assert_eq!(*c.recover(&pw("pw"), &pinned).unwrap().backup_key, KEY);
}

#[test]
fn postgres_tls_verify_full_serves_with_channel_binding() {
    let Some((db, ca)) = pg_tls("postgres_tls_verify_full_serves_with_channel_binding") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // channel_binding=require: the login is SCRAM-SHA-256-PLUS bound to this TLS session
    // (the server rejects a wrong tls-server-end-point hash; tokio-postgres refuses none).
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={ca}&channel_binding=require",
        db.url
    );
    let mut args = NO_LIMITS.to_vec();
    args.extend(["--db", &url, "--pg-pool-size", "4"]);
    let server = Server::spawn(dir.path(), &args);
    register_and_recover(&server, dir.path(), "tls");
    let (tls, plain) = pg_connections_by_tls(&db.admin_url, &db.name);
    assert!(tls >= 1 && plain == 0, "tls {tls}, plain {plain}");
    // The control: the plain URL really is plain (so the count above measures something).
    drop(server);
    let dir2 = tempfile::tempdir().unwrap();
    let mut args = NO_LIMITS.to_vec();
    args.extend(["--db", &db.url, "--pg-pool-size", "4"]);
    let server = Server::spawn(dir2.path(), &args);
    register_and_recover(&server, dir2.path(), "plain");
    let (_, plain) = pg_connections_by_tls(&db.admin_url, &db.name);
    assert!(plain >= 1, "plain {plain}");
}

#[test]
fn postgres_tls_wrong_ca_is_refused_at_start() {
    let Some((db, _ca)) = pg_tls("postgres_tls_wrong_ca_is_refused_at_start") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A CA of our own making that never signed the server's certificate.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let wrong = dir.path().join("wrong-ca.pem");
    std::fs::write(&wrong, params.self_signed(&ca_key).unwrap().pem()).unwrap();
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        db.url,
        wrong.display()
    );
    let err = serve_must_fail(dir.path(), &["--db", &url]);
    assert!(err.contains("certificate verification failed"), "{err}");
    assert!(err.contains("127.0.0.1"), "{err}");
    let password = db
        .url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, p)| p.to_owned())
        .unwrap();
    assert!(!err.contains(&format!(":{password}@")), "{err}");
    assert!(!err.contains(&db.url), "{err}");
}

#[test]
fn postgres_tls_verify_full_checks_the_name_verify_ca_does_not() {
    let Some((db, ca)) = pg_tls("postgres_tls_verify_full_checks_the_name_verify_ca_does_not")
    else {
        return;
    };
    // The certificate names IP 127.0.0.1 only; "localhost" reaches the same server.
    let by_name = db.url.replace("@127.0.0.1:", "@localhost:");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{by_name}?sslmode=verify-full&sslrootcert={ca}");
    let err = serve_must_fail(dir.path(), &["--db", &url]);
    assert!(err.contains("certificate verification failed"), "{err}");
    assert!(err.contains("localhost"), "{err}");
    // sslmode=require is verify-full here (CA from --db-ca).
    let url = format!("{by_name}?sslmode=require");
    let err = serve_must_fail(dir.path(), &["--db", &url, "--db-ca", &ca]);
    assert!(err.contains("certificate verification failed"), "{err}");
    // verify-ca checks the chain only: serves, over TLS.
    let url = format!("{by_name}?sslmode=verify-ca");
    let mut args = NO_LIMITS.to_vec();
    args.extend(["--db", &url, "--db-ca", &ca, "--pg-pool-size", "4"]);
    let server = Server::spawn(dir.path(), &args);
    register_and_recover(&server, dir.path(), "ca-only");
    let (tls, plain) = pg_connections_by_tls(&db.admin_url, &db.name);
    assert!(tls >= 1 && plain == 0, "tls {tls}, plain {plain}");
}

#[test]
fn postgres_tls_without_ca_or_with_prefer_is_refused() {
    // Refused before any connection: no database needed.
    let dir = tempfile::tempdir().unwrap();
    let err = serve_must_fail(
        dir.path(),
        &["--db", "postgres://u:s3cret@127.0.0.1:1/x?sslmode=require"],
    );
    assert!(err.contains("needs the CA certificate"), "{err}");
    assert!(
        err.contains("treats sslmode=require as verify-full"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    let err = serve_must_fail(
        dir.path(),
        &["--db", "postgres://u:s3cret@127.0.0.1:1/x?sslmode=prefer"],
    );
    assert!(err.contains("falls back to plain text"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

#[test]
fn postgres_plain_tcp_to_a_remote_host_is_warned_about() {
    // No database needed: the warning comes before the first connection (which fails here).
    let dir = tempfile::tempdir().unwrap();
    let err = serve_must_fail(
        dir.path(),
        &[
            "--db",
            "postgres://u:s3cret@db.invalid:5432/x?connect_timeout=2",
        ],
    );
    assert!(err.contains("not a loopback address"), "{err}");
    assert!(err.contains("db.invalid"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}
