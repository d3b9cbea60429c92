//! Load generator for the threshold realms (bench/threshold-load.sh): complete threshold
//! recoveries (recover1 → recover2 → recover3 at `t` realms, as `ThresholdClient` does, client
//! crypto included: blinding, DLEQ and signature checks, combination, decryption) from N
//! concurrent client threads against `n` realms, threshold 2. Each client keeps its HTTP
//! connections alive across recoveries (one `ureq` agent per realm).
//!
//! Client-side Argon2 is the phone's cost and is excluded: the accounts are registered with the
//! test KSF (8 KiB, t = 1), which only realms built with the dev-dependency feature
//! `insecure-test-ksf` accept (the script builds them with `--examples`; never deploy those).
//!
//! ```text
//! threshold_loadgen --realm URL DATA_DIR [--realm …] [--clients 16] [--seconds 15] [--accounts 64]
//! ```
//! Prints one JSON line: recoveries/s (total; `t` realms serve each one), p50/p90/p99/max
//! latency in ms, errors.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatvault_vault::keyfile::KeyFile;
use chatvault_vault::token;
use chatvault_vault_client::{KsfParams, RealmEndpoint, SecretString, ThresholdClient};

const PASSWORD: &str = "threshold load generator password";
const KEY: [u8; 32] = [0x5a; 32];

fn main() {
    let mut realms: Vec<(String, std::path::PathBuf)> = Vec::new();
    let (mut clients, mut seconds, mut accounts) = (16usize, 15u64, 64usize);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--realm" => {
                let url = val();
                realms.push((url, val().into()));
            }
            "--clients" => clients = val().parse().expect("--clients N"),
            "--seconds" => seconds = val().parse().expect("--seconds S"),
            "--accounts" => accounts = val().parse().expect("--accounts N"),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(realms.len() >= 2, "give at least two --realm URL DATA_DIR");
    let accounts = accounts.max(clients);
    let issuers: Vec<_> = realms
        .iter()
        .map(|(_, d)| KeyFile::load_or_create(d).unwrap().issuer)
        .collect();
    let client_for = |account: &str, pins: Option<Vec<Option<chatvault_vault_client::RealmId>>>| {
        let now = chatvault_vault::unix_now();
        let endpoints = realms
            .iter()
            .zip(&issuers)
            .map(|((url, _), iss)| RealmEndpoint {
                url: url.clone(),
                token: SecretString::from(token::issue(iss, account, now, 3600)),
            })
            .collect();
        let c = ThresholdClient::new(endpoints, 2, account)
            .unwrap()
            .with_registration_ksf(KsfParams::INSECURE_FOR_TESTS)
            .unwrap();
        match pins {
            Some(p) => c.with_partial_pins(p).unwrap(),
            None => c,
        }
    };
    let mut pinned = Vec::new();
    for a in 0..accounts {
        let name = format!("load{a}");
        let reg = client_for(&name, None)
            .register(&SecretString::from(PASSWORD.to_owned()), &KEY)
            .expect("registration");
        pinned.push((name, reg.realm_ids));
    }
    let pinned = Arc::new(pinned);
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    std::thread::scope(|s| {
        for c in 0..clients {
            let (pinned, done, errors, latencies) = (&pinned, &done, &errors, &latencies);
            let client_for = &client_for;
            s.spawn(move || {
                // One client (and connection pool per realm) per account this thread uses.
                let mine: Vec<ThresholdClient> = pinned
                    .iter()
                    .skip(c)
                    .step_by(clients)
                    .map(|(name, ids)| client_for(name, Some(ids.clone())))
                    .collect();
                let mut local = Vec::new();
                let pw = SecretString::from(PASSWORD.to_owned());
                let mut k = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match mine[k % mine.len()].recover(&pw) {
                        Ok(r) if *r.backup_key == KEY => {
                            done.fetch_add(1, Ordering::Relaxed);
                            local.push(t.elapsed().as_secs_f64() * 1e3);
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    k += 1;
                }
                latencies.lock().unwrap().extend(local);
            });
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| {
        if l.is_empty() {
            0.0
        } else {
            l[((l.len() as f64 - 1.0) * p).round() as usize]
        }
    };
    println!(
        "{{\"realms\":{},\"threshold\":2,\"clients\":{clients},\"seconds\":{elapsed:.1},\"recoveries\":{},\"recoveries_per_s\":{:.1},\"p50_ms\":{:.2},\"p90_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2},\"errors\":{}}}",
        realms.len(),
        done.load(Ordering::Relaxed),
        done.load(Ordering::Relaxed) as f64 / elapsed,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        l.last().copied().unwrap_or(0.0),
        errors.load(Ordering::Relaxed)
    );
}
