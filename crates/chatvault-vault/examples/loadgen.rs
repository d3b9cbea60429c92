//! Load generator for the Backup Key Vault (bench/vault-load.sh): complete recoveries,
//! KE1 → KE2 → KE3 → release, over HTTP, from N concurrent client threads, against one or more
//! vault URLs (round robin).
//!
//! Client-side Argon2 is the phone's cost and is excluded: the accounts are registered with the
//! test KSF (8 KiB, t = 1, a few µs), so this example needs the `insecure-test-ksf` feature of
//! `chatvault-vault-core` in the vault it talks to (dev-dependency builds have it; the script
//! builds both with `cargo build --release --examples`).
//!
//! ```text
//! loadgen --data-dir DIR --url http://127.0.0.1:P [--url …] [--clients 32] [--seconds 20]
//!         [--accounts N (at least --clients)] [--rate R]
//! ```
//! `--rate R` paces the clients to R recoveries/s in total (open loop, latency measured from
//! the scheduled start, so a stall is not hidden); without it each client runs back to back.
//! Prints one JSON line: recoveries/s, p50/p90/p99/max latency (ms), errors.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatvault_vault::keyfile::KeyFile;
use chatvault_vault::token;
use chatvault_vault_client::{KsfParams, SecretString, VaultClient};
use chatvault_vault_core::api::{self, b64_decode, b64_encode};
use chatvault_vault_core::{AccountId, Ke2Params, RecoveryClient, ServerIdentity};

const PASSWORD: &str = "load generator password";

struct Args {
    urls: Vec<String>,
    data_dir: std::path::PathBuf,
    clients: usize,
    seconds: u64,
    accounts: usize,
    rate: Option<f64>,
}

fn args() -> Args {
    let mut a = Args {
        urls: Vec::new(),
        data_dir: ".".into(),
        clients: 32,
        seconds: 20,
        accounts: 64,
        rate: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.urls.push(val()),
            "--data-dir" => a.data_dir = val().into(),
            "--clients" => a.clients = val().parse().expect("--clients N"),
            "--seconds" => a.seconds = val().parse().expect("--seconds S"),
            "--accounts" => a.accounts = val().parse().expect("--accounts N"),
            "--rate" => a.rate = Some(val().parse().expect("--rate R")),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(!a.urls.is_empty(), "give at least one --url");
    a
}

fn post(agent: &ureq::Agent, url: &str, token: &str, body: String) -> Result<String, String> {
    let mut resp = agent
        .post(url)
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(body)
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    if status == 200 {
        Ok(text)
    } else {
        Err(format!("HTTP {status}: {text}"))
    }
}

/// One complete recovery; returns an error text on any failure.
fn recover(
    agent: &ureq::Agent,
    base: &str,
    account: &str,
    token: &str,
    pinned: &ServerIdentity,
) -> Result<(), String> {
    let mut rng = rand::rngs::OsRng;
    let acc = AccountId::new(account).unwrap();
    let (client, ke1) =
        RecoveryClient::start(&mut rng, &acc, PASSWORD.as_bytes()).map_err(|e| e.to_string())?;
    let started = post(
        agent,
        &format!("{base}/v1/accounts/{account}/recover/start"),
        token,
        format!(r#"{{"ke1":"{}"}}"#, b64_encode(&ke1)),
    )?;
    let started: api::RecoverStartResponse =
        serde_json::from_str(&started).map_err(|e| e.to_string())?;
    let (ke3, unwrapper) = client
        .finish(
            &mut rng,
            PASSWORD.as_bytes(),
            &b64_decode(&started.ke2, "ke2").map_err(|e| e.to_string())?,
            Ke2Params {
                ksf: started.ksf,
                suite: started.suite,
                record_version: started.record_version,
                server_identity: ServerIdentity::from_b64(&started.server_identity).unwrap(),
            },
            pinned,
        )
        .map_err(|e| e.to_string())?;
    let finished = post(
        agent,
        &format!("{base}/v1/accounts/{account}/recover/finish"),
        token,
        format!(
            r#"{{"state":"{}","ke3":"{}"}}"#,
            started.state,
            b64_encode(&ke3)
        ),
    )?;
    let finished: api::RecoverFinishResponse =
        serde_json::from_str(&finished).map_err(|e| e.to_string())?;
    let released = unwrapper
        .open_release(&b64_decode(&finished.release, "release").map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    if released.backup_key.expose_secret() != &[0x42; 32] {
        return Err("wrong key released".into());
    }
    Ok(())
}

fn main() {
    let mut a = args();
    a.accounts = a.accounts.max(a.clients);
    let issuer = KeyFile::load_or_create(&a.data_dir).unwrap().issuer;
    let now = chatvault_vault::unix_now();
    let accounts: Vec<(String, String)> = (0..a.accounts)
        .map(|i| {
            let name = format!("load-{i}");
            let tok = token::issue(&issuer, &name, now, 3600);
            (name, tok)
        })
        .collect();
    // Register every account once (through the first URL), cheap KSF.
    let mut pinned = None;
    for (name, tok) in &accounts {
        let c = VaultClient::new(&a.urls[0], name, SecretString::from(tok.clone()))
            .unwrap()
            .with_registration_ksf(KsfParams::INSECURE_FOR_TESTS)
            .unwrap();
        let _ = c.reset();
        pinned = Some(
            c.register(&SecretString::from(PASSWORD), &[0x42; 32])
                .unwrap(),
        );
    }
    let pinned = pinned.unwrap();
    let accounts = Arc::new(accounts);
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let start = Instant::now();
    let end = start + Duration::from_secs(a.seconds);
    let per_client = a
        .rate
        .map(|r| Duration::from_secs_f64(a.clients as f64 / r));
    let a_clients = a.clients;
    let threads: Vec<_> = (0..a.clients)
        .map(|t| {
            let (accounts, latencies, errors, first_error) = (
                accounts.clone(),
                latencies.clone(),
                errors.clone(),
                first_error.clone(),
            );
            let urls = a.urls.clone();
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(30)))
                    .build()
                    .into();
                let mut mine = Vec::new();
                let mut n = 0usize;
                // Stagger the paced clients over one period.
                let clients = a_clients as u32;
                let mut next =
                    start + per_client.map_or(Duration::ZERO, |p| p * t as u32 / clients);
                while Instant::now() < end {
                    if per_client.is_some() {
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                    }
                    let scheduled = if per_client.is_some() {
                        next
                    } else {
                        Instant::now()
                    };
                    // Each client owns its account: no two in-flight recoveries of one account
                    // supersede each other.
                    let (name, tok) = &accounts[t];
                    let base = &urls[(t + n) % urls.len()];
                    match recover(&agent, base, name, tok, &pinned) {
                        Ok(()) => mine.push(scheduled.elapsed().as_secs_f64() * 1000.0),
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            first_error.lock().unwrap().get_or_insert(e);
                        }
                    }
                    n += 1;
                    if let Some(p) = per_client {
                        next += p;
                    }
                }
                latencies.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let pct = |p: f64| {
        if l.is_empty() {
            f64::NAN
        } else {
            l[((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1]
        }
    };
    println!(
        "{}",
        serde_json::json!({
            "urls": a.urls.len(),
            "clients": a.clients,
            "target_rate": a.rate,
            "seconds": elapsed,
            "recoveries": l.len(),
            "recoveries_per_s": l.len() as f64 / elapsed,
            "p50_ms": pct(0.50),
            "p90_ms": pct(0.90),
            "p99_ms": pct(0.99),
            "max_ms": l.last().copied().unwrap_or(f64::NAN),
            "errors": errors.load(Ordering::Relaxed),
            "first_error": *first_error.lock().unwrap(),
        })
    );
}
