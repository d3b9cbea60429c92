//! S3-specific tests of the `chatvault` binary against a real S3-protocol server on 127.0.0.1
//! (moto, started by `scripts/ci-s3.sh`): the object layout and multipart ETags seen through the
//! S3 API, and a fault-injecting HTTP proxy in front of the server. The cycle every backend runs
//! (S3 included: missing bucket, credentials, write-once) is tests/backends.rs.
//!
//! Without `CHATVAULT_TEST_S3=1` (and the AWS_* variables the script prints) every test here
//! prints `SKIPPED: no S3 server (run scripts/ci-s3.sh)` and passes.
//!
//! The S3 API checks (listing objects) use unsigned requests, which moto accepts; they are meant
//! for the local test server only.
#![cfg(feature = "s3")]
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use assert_cmd::Command;

mod common;
use common::{assert_ok, noise, tree};

// ---------------------------------------------------------------------------------------------
// Environment and helpers

/// The S3 server the tests use, from the environment `scripts/ci-s3.sh` prints.
struct S3Env {
    endpoint: String,
    addr: SocketAddr,
    bucket: String,
}

fn s3_env() -> Option<S3Env> {
    if std::env::var("CHATVAULT_TEST_S3").ok().as_deref() != Some("1") {
        eprintln!("SKIPPED: no S3 server (run scripts/ci-s3.sh)");
        return None;
    }
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .expect("CHATVAULT_TEST_S3=1 needs AWS_ENDPOINT_URL (eval \"$(bash scripts/ci-s3.sh)\")");
    let hostport = endpoint
        .strip_prefix("http://")
        .expect("the test S3 endpoint is plain http on loopback")
        .trim_end_matches('/');
    let addr: SocketAddr = hostport.parse().expect("endpoint is IP:PORT");
    assert!(addr.ip().is_loopback(), "tests only talk to 127.0.0.1");
    let bucket =
        std::env::var("CHATVAULT_TEST_S3_BUCKET").unwrap_or_else(|_| "chatvault-test".into());
    Some(S3Env {
        endpoint,
        addr,
        bucket,
    })
}

/// A fresh prefix in the test bucket, unique per test run.
fn unique_prefix(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}-{}-{nanos:x}", std::process::id())
}

struct World {
    dir: tempfile::TempDir,
    repo: String,
    endpoint: String,
}

impl World {
    fn new(env: &S3Env, tag: &str) -> World {
        World {
            dir: tempfile::tempdir().unwrap(),
            repo: format!("s3://{}/{}", env.bucket, unique_prefix(tag)),
            endpoint: env.endpoint.clone(),
        }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn cv(&self, home: &str) -> Command {
        let mut c = Command::cargo_bin("chatvault").unwrap();
        c.env_remove("CHATVAULT_KEY")
            .env_remove("CHATVAULT_REPO")
            .env_remove("CHATVAULT_HOME")
            .env("NO_COLOR", "1")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            // Small parts so that 16 MiB packs really go multipart (S3's minimum part size).
            .env("CHATVAULT_S3_PART_SIZE", "5MiB")
            .arg("--home")
            .arg(self.p(home));
        c
    }
    fn init(&self, home: &str) -> String {
        let out = self
            .cv(home)
            .args(["init", "--key", "--repo", &self.repo])
            .output()
            .unwrap();
        assert_ok(&out);
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .map(str::trim)
            .find(|l| l.len() == 79 && l.split(' ').count() == 16)
            .unwrap_or_else(|| panic!("no grouped key in output:\n{text}"))
            .to_string()
    }
    /// `restore latest` on a new device home `home` (the URL and the key only) into `target`.
    fn restore_new_device(&self, home: &str, key: &str, target: &str) -> std::process::Output {
        self.cv(home)
            .env("CHATVAULT_KEY", key)
            .args(["--repo", &self.repo, "restore", "latest", "--target"])
            .arg(self.p(target))
            .output()
            .unwrap()
    }
    fn snapshot_ids(&self, home: &str) -> Vec<String> {
        let out = self
            .cv(home)
            .args(["snapshots", "--json"])
            .output()
            .unwrap();
        assert_ok(&out);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }
}

fn small_source(root: &Path) {
    std::fs::create_dir_all(root.join("Databases")).unwrap();
    std::fs::create_dir_all(root.join("Media")).unwrap();
    let text: String = (0..20000)
        .map(|i| format!("message {i}: see you at {} o'clock\n", i % 12))
        .collect();
    std::fs::write(root.join("Databases/chat.txt"), text).unwrap();
    std::fs::write(root.join("Media/IMG-1.jpg"), noise(1, 1 << 20)).unwrap();
    std::fs::write(root.join("Media/empty"), b"").unwrap();
}

// ---------------------------------------------------------------------------------------------
// Minimal HTTP/1.1 (std::net only): S3 API checks and the fault-injecting proxy

/// Reads one HTTP message head (up to and including the blank line).
fn read_head(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(if head.is_empty() { None } else { Some(head) });
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            return Ok(Some(head));
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads a request or response body framed by Content-Length or chunked encoding (raw bytes).
fn read_body(r: &mut BufReader<TcpStream>, head: &str) -> std::io::Result<Vec<u8>> {
    if let Some(len) = header(head, "content-length") {
        let mut body = vec![0; len.parse().unwrap_or(0)];
        r.read_exact(&mut body)?;
        return Ok(body);
    }
    if header(head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut raw = Vec::new();
        loop {
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line)?;
            raw.extend_from_slice(&line);
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&line)
                    .trim()
                    .split(';')
                    .next()
                    .unwrap(),
                16,
            )
            .unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            raw.extend_from_slice(&chunk);
            if size == 0 {
                return Ok(raw);
            }
        }
    }
    Ok(Vec::new())
}

/// Rewrites (or adds) `Connection: close` in a message head.
fn with_connection_close(head: &str) -> String {
    let mut out = String::new();
    for l in head.split("\r\n") {
        if l.is_empty() {
            continue;
        }
        if l.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

/// One request on a fresh connection; returns (status, body).
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let head = String::from_utf8(read_head(&mut r).unwrap().unwrap()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = Vec::new();
    if header(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        // Decode chunks.
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let size = usize::from_str_radix(line.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[derive(Debug)]
struct Object {
    key: String,
    size: u64,
    etag: String,
}

/// ListObjectsV2 under `prefix` (unsigned: local test server only).
fn list_objects(env: &S3Env, prefix: &str) -> Vec<Object> {
    let mut out = Vec::new();
    let mut token = None::<String>;
    loop {
        let mut path = format!("/{}?list-type=2&prefix={prefix}/", env.bucket);
        if let Some(t) = &token {
            path.push_str("&continuation-token=");
            for b in t.bytes() {
                path.push_str(&format!("%{b:02X}"));
            }
        }
        let (status, xml) = http(env.addr, "GET", &path);
        assert_eq!(status, 200, "list objects: {xml}");
        for c in xml.split("<Contents>").skip(1) {
            let field = |name: &str| {
                let open = format!("<{name}>");
                let close = format!("</{name}>");
                let s = c.find(&open).map(|i| i + open.len()).unwrap();
                c[s..s + c[s..].find(&close).unwrap()].to_string()
            };
            out.push(Object {
                key: field("Key"),
                size: field("Size").parse().unwrap(),
                etag: field("ETag")
                    .replace("&#34;", "")
                    .replace("&quot;", "")
                    .replace('"', ""),
            });
        }
        if xml.contains("<IsTruncated>true</IsTruncated>") {
            let s = xml.find("<NextContinuationToken>").unwrap() + "<NextContinuationToken>".len();
            token = Some(xml[s..s + xml[s..].find('<').unwrap()].to_string());
        } else {
            return out;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fault-injecting proxy

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(u8)]
enum Fault {
    /// Forward everything.
    Pass = 0,
    /// Answer 500 InternalError.
    Error500 = 1,
    /// Read the request, then never answer (until the mode changes or 120 s pass).
    Stall = 2,
    /// Answer 403 AccessDenied.
    Forbidden = 3,
    /// Read the request, then close the connection without an answer.
    Reset = 4,
    /// Forward the request; for an answer of more than 5 MiB (a streamed pack read, not a
    /// region or a tree), send its head and none of its body, and close (a connection cut as
    /// the download starts: no progress, so the storage's retries count up). Only such answers
    /// count against the budgets.
    Truncate = 5,
    /// Forward the request; in an answer of more than 64 KiB (a pack read), flip one bit in
    /// the middle of the body (data damaged at the provider). Only such answers count against
    /// the budgets.
    Flip = 6,
}

struct ProxyState {
    upstream: SocketAddr,
    mode: AtomicU8,
    /// Matching requests still let through before faults start.
    pass_budget: AtomicUsize,
    /// Faults to inject before passing again (`usize::MAX`: unlimited).
    fault_budget: AtomicUsize,
    /// Only requests whose path contains this are faulted.
    filter: std::sync::Mutex<String>,
    requests: AtomicU64,
    faults: AtomicU64,
    stop: AtomicBool,
}

struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            upstream,
            mode: AtomicU8::new(Fault::Pass as u8),
            pass_budget: AtomicUsize::new(0),
            fault_budget: AtomicUsize::new(usize::MAX),
            filter: std::sync::Mutex::new(String::new()),
            requests: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &st);
                });
            }
        });
        Proxy { addr, state }
    }
    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// From now on: let `pass` matching requests through, then inject `fault` on `faults`
    /// matching requests (`usize::MAX`: all), then pass again.
    fn set(&self, fault: Fault, filter: &str, pass: usize, faults: usize) {
        *self.state.filter.lock().unwrap() = filter.to_string();
        self.state.pass_budget.store(pass, Ordering::SeqCst);
        self.state.fault_budget.store(faults, Ordering::SeqCst);
        self.state.faults.store(0, Ordering::SeqCst);
        self.state.mode.store(fault as u8, Ordering::SeqCst);
    }
    fn pass(&self) {
        self.state.mode.store(Fault::Pass as u8, Ordering::SeqCst);
    }
    fn faults(&self) -> u64 {
        self.state.faults.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.pass();
        let _ = TcpStream::connect(self.addr); // wake the accept loop
    }
}

fn decide(st: &ProxyState, path: &str) -> Fault {
    let mode = st.mode.load(Ordering::SeqCst);
    if mode == Fault::Pass as u8 || !path.contains(st.filter.lock().unwrap().as_str()) {
        return Fault::Pass;
    }
    if mode == Fault::Truncate as u8 || mode == Fault::Flip as u8 {
        // Budgets: once the answer's size is known (serve).
        return if mode == Fault::Flip as u8 {
            Fault::Flip
        } else {
            Fault::Truncate
        };
    }
    take_budget(st)
}

/// The fault of the current mode if the budgets allow one more (counting it), else `Pass`.
fn take_budget(st: &ProxyState) -> Fault {
    let mode = st.mode.load(Ordering::SeqCst);
    if st
        .pass_budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return Fault::Pass;
    }
    if st
        .fault_budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            if n == usize::MAX {
                Some(n)
            } else {
                n.checked_sub(1)
            }
        })
        .is_err()
    {
        return Fault::Pass;
    }
    st.faults.fetch_add(1, Ordering::SeqCst);
    match mode {
        1 => Fault::Error500,
        2 => Fault::Stall,
        3 => Fault::Forbidden,
        5 => Fault::Truncate,
        6 => Fault::Flip,
        _ => Fault::Reset,
    }
}

fn s3_error(status: &str, code: &str) -> String {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Serves one client connection: one request, then close (the response says so).
fn serve(conn: TcpStream, st: &ProxyState) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut client = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    let Some(head) = read_head(&mut r)? else {
        return Ok(());
    };
    let head = String::from_utf8_lossy(&head).into_owned();
    let body = read_body(&mut r, &head)?;
    st.requests.fetch_add(1, Ordering::SeqCst);
    let path = head.split(' ').nth(1).unwrap_or("").to_string();
    match decide(st, &path) {
        fault @ (Fault::Pass | Fault::Truncate | Fault::Flip) => {
            let mut up = TcpStream::connect(st.upstream)?;
            up.write_all(with_connection_close(&head).as_bytes())?;
            up.write_all(&body)?;
            let mut ur = BufReader::new(up);
            let Some(rhead) = read_head(&mut ur)? else {
                return Ok(());
            };
            let rhead = String::from_utf8_lossy(&rhead).into_owned();
            let mut rest = Vec::new();
            ur.read_to_end(&mut rest)?;
            if fault == Fault::Truncate && rest.len() > 5 << 20 && take_budget(st) != Fault::Pass {
                rest.clear();
            }
            if fault == Fault::Flip && rest.len() > 64 << 10 && take_budget(st) != Fault::Pass {
                let mid = rest.len() / 2;
                rest[mid] ^= 0x10;
            }
            client.write_all(with_connection_close(&rhead).as_bytes())?;
            client.write_all(&rest)?;
        }
        Fault::Error500 => {
            client.write_all(s3_error("500 Internal Server Error", "InternalError").as_bytes())?
        }
        Fault::Forbidden => {
            client.write_all(s3_error("403 Forbidden", "AccessDenied").as_bytes())?
        }
        Fault::Stall => {
            let t = Instant::now();
            while st.mode.load(Ordering::SeqCst) == Fault::Stall as u8
                && !st.stop.load(Ordering::SeqCst)
                && t.elapsed() < Duration::from_secs(120)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Fault::Reset => {}
    }
    client.flush()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Tests

/// init → backup of a 40 MB folder (multipart packs) → restore on a new device → byte compare →
/// `check --read-data`; the objects are where they should be; no secret in verbose output.
#[test]
fn s3_backup_restore_and_check_with_multipart_packs() {
    let Some(env) = s3_env() else { return };
    let w = World::new(&env, "roundtrip");
    let src = w.p("chats");
    small_source(&src);
    std::fs::write(src.join("Media/VID-big.mp4"), noise(7, 40_000_000)).unwrap();
    let key = w.init("phone-a");

    let t = Instant::now();
    let out = w
        .cv("phone-a")
        .args(["backup", "--json"])
        .arg(&src)
        .output()
        .unwrap();
    assert_ok(&out);
    eprintln!("backup of ~42 MB to S3 took {:.1?}", t.elapsed());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let uploaded = v["snapshot"]["summary"]["uploaded_bytes"].as_u64().unwrap();
    assert!(uploaded > 40_000_000, "uploaded {uploaded}");

    // The S3 API shows the layout of FORMAT §2 under the prefix.
    let prefix = w
        .repo
        .split_once(&format!("{}/", env.bucket))
        .unwrap()
        .1
        .to_string();
    let objects = list_objects(&env, &prefix);
    let count = |dir: &str| {
        objects
            .iter()
            .filter(|o| o.key.starts_with(&format!("{prefix}/{dir}")))
            .count()
    };
    assert!(
        objects.iter().any(|o| o.key == format!("{prefix}/config")),
        "{objects:#?}"
    );
    assert!(count("data/") >= 3, "expected ≥ 3 packs: {objects:#?}");
    assert!(
        count("index/") >= 1 && count("snapshots/") == 1,
        "{objects:#?}"
    );
    let big: Vec<&Object> = objects
        .iter()
        .filter(|o| o.key.contains("/data/") && o.size > 5 << 20)
        .collect();
    assert!(big.len() >= 2, "packs of several MiB: {objects:#?}");
    // A multipart upload's ETag is "<md5 of part md5s>-<parts>".
    assert!(
        big.iter().any(|o| o.etag.contains('-')),
        "large packs were uploaded with multipart: {big:#?}"
    );
    let total: u64 = objects.iter().map(|o| o.size).sum();
    assert!(total >= uploaded, "stored {total} < uploaded {uploaded}");

    // A new device with only the URL and the key; restore reads blobs by range.
    assert_ok(&w.restore_new_device("phone-b", &key, "restored"));
    assert_eq!(tree(&src), tree(&w.p("restored/chats")));

    let out = w
        .cv("phone-b")
        .env("CHATVAULT_KEY", &key)
        .args(["--repo", &w.repo, "-vv", "check", "--read-data"])
        .output()
        .unwrap();
    assert_ok(&out);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default();
    assert!(
        secret.is_empty() || !all.contains(&secret),
        "the secret key leaked into output"
    );

    // An unchanged second backup uploads (almost) nothing.
    let out = w
        .cv("phone-a")
        .args(["backup", "--json"])
        .arg(&src)
        .output()
        .unwrap();
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["snapshot"]["summary"]["uploaded_bytes"].as_u64().unwrap() < 100_000);
    assert_eq!(w.snapshot_ids("phone-a").len(), 2);
}

/// Pack downloads cut off: a restore reads each pack's regions with one streamed request; a cut
/// stream is asked again by the storage's retries, and one that fails for good is replaced by
/// region-by-region reads of that pack. Either way the restore completes, byte for byte.
#[test]
fn s3_restore_survives_cut_pack_downloads() {
    let Some(env) = s3_env() else { return };
    let w = World::new(&env, "cut");
    let src = w.p("chats");
    small_source(&src);
    // ~30 MB of media: two packs of several regions each.
    std::fs::write(src.join("Media/VID-1.mp4"), noise(11, 18_000_000)).unwrap();
    std::fs::write(src.join("Media/VID-2.mp4"), noise(12, 12_000_000)).unwrap();
    let key = w.init("phone-a");
    let out = w.cv("phone-a").arg("backup").arg(&src).output().unwrap();
    assert_ok(&out);

    let proxy = Proxy::start(env.addr);
    let mut w2 = World::new(&env, "cut");
    w2.repo = w.repo.clone();
    w2.endpoint = proxy.endpoint();
    let restore = |target: &str, extra: &[(&str, &str)]| {
        let mut c = w2.cv(target);
        c.env("CHATVAULT_KEY", &key)
            .envs(extra.iter().copied())
            .args([
                "--repo",
                &w.repo,
                "-vv",
                "restore",
                "latest",
                "--readers",
                "2",
                "--target",
            ])
            .arg(w2.p(target));
        let out = c.output().unwrap();
        assert_ok(&out);
        assert_eq!(tree(&src), tree(&w2.p(&format!("{target}/chats"))));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // 1. The first two large pack downloads are cut: the storage layer's retries ask again
    //    (OpenDAL also resumes a stream cut later, asking for the rest of the range).
    proxy.set(Fault::Truncate, "/data/", 0, 2);
    restore("restored", &[]);
    assert_eq!(proxy.faults(), 2, "the downloads were cut");
    // 2. Every large download is cut, every time: the streamed reads fail for good once the
    //    retries are spent, and the restorer reads those packs region by region (answers of
    //    at most 4 MiB, which pass).
    proxy.set(Fault::Truncate, "/data/", 0, usize::MAX);
    let log = restore("restored-2", &[("CHATVAULT_STORAGE_RETRY_DELAY_MS", "10")]);
    assert!(proxy.faults() >= 2, "the downloads were cut");
    assert!(
        log.contains("streamed read of pack"),
        "the restorer fell back to region reads (debug log):\n{log}"
    );
}

/// Storage that fails mid-upload: 500s until retries are exhausted, stalls until timeouts,
/// a 403, and dropped connections below the retry limit. A failed backup exits non-zero in
/// bounded time, publishes no snapshot, leaves a repository that `check` passes, and the next
/// backup without faults succeeds.
#[test]
fn s3_faults_mid_upload_fail_cleanly_and_the_next_backup_succeeds() {
    let Some(env) = s3_env() else { return };
    let proxy = Proxy::start(env.addr);
    let mut w = World::new(&env, "faults");
    w.endpoint = proxy.endpoint();
    let src = w.p("chats");
    small_source(&src);
    let key = w.init("a");
    assert_ok(&w.cv("a").arg("backup").arg(&src).output().unwrap());
    let first = w.snapshot_ids("a");
    assert_eq!(first.len(), 1);
    // New data: about three packs.
    std::fs::write(src.join("Media/VID-new.mp4"), noise(11, 36_000_000)).unwrap();

    // Fast retries for the test: 3 attempts, 200 ms first backoff.
    let faulty = |w: &World| {
        let mut c = w.cv("a");
        c.env("CHATVAULT_STORAGE_ATTEMPTS", "3")
            .env("CHATVAULT_STORAGE_RETRY_DELAY_MS", "200")
            .env("CHATVAULT_STORAGE_TIMEOUT", "3")
            .arg("backup")
            .arg(&src);
        c
    };
    let after_failure = |what: &str| {
        proxy.pass();
        assert_eq!(
            w.snapshot_ids("a"),
            first,
            "{what}: no new snapshot may appear"
        );
        let out = w.cv("a").args(["check"]).output().unwrap();
        assert_ok(&out);
    };

    // 1. HTTP 500 on pack uploads after a few requests went through: retried, then given up.
    proxy.set(Fault::Error500, "/data/", 3, usize::MAX);
    let t = Instant::now();
    let out = faulty(&w).output().unwrap();
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!(
        "500s: exit {:?} after {took:.1?}, {} faults; stderr: {err}",
        out.status.code(),
        proxy.faults()
    );
    assert_eq!(out.status.code(), Some(1), "stderr:\n{err}");
    assert!(err.contains("gave up after 3 attempts"), "stderr:\n{err}");
    assert!(proxy.faults() >= 3, "the failed request was retried");
    assert!(took < Duration::from_secs(60), "bounded time: {took:?}");
    after_failure("500");

    // 2. The server stops answering: each attempt times out, then the backup gives up.
    proxy.set(Fault::Stall, "/data/", 0, usize::MAX);
    let t = Instant::now();
    let out = faulty(&w).output().unwrap();
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!(
        "stall: exit {:?} after {took:.1?}, {} faults; stderr: {err}",
        out.status.code(),
        proxy.faults()
    );
    assert_eq!(out.status.code(), Some(1), "stderr:\n{err}");
    assert!(
        err.to_lowercase().contains("timeout") || err.contains("timed out"),
        "stderr:\n{err}"
    );
    assert!(took < Duration::from_secs(60), "bounded time: {took:?}");
    after_failure("stall");

    // 3. 403 is permanent: no retries, a message about credentials.
    proxy.set(Fault::Forbidden, "/data/", 0, usize::MAX);
    let t = Instant::now();
    let out = faulty(&w).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!(
        "403: exit {:?} after {:.1?}, {} faults",
        out.status.code(),
        t.elapsed(),
        proxy.faults()
    );
    assert_eq!(out.status.code(), Some(1), "stderr:\n{err}");
    assert!(err.contains("access denied"), "stderr:\n{err}");
    // Two uploaders may each hit one 403; none is retried.
    assert!(
        proxy.faults() <= 2,
        "403 was retried: {} faults",
        proxy.faults()
    );
    after_failure("403");

    // 4. A few dropped connections and 500s below the retry limit are absorbed by retries.
    proxy.set(Fault::Reset, "/data/", 1, 2);
    let out = faulty(&w).output().unwrap();
    assert_ok(&out);
    assert_eq!(proxy.faults(), 2);
    proxy.pass();
    let after_flaky = w.snapshot_ids("a");
    assert_eq!(after_flaky.len(), 2);

    // 5. Without faults: another backup succeeds, everything restores and verifies.
    std::fs::write(src.join("Databases/later.txt"), b"written after the faults").unwrap();
    assert_ok(&w.cv("a").arg("backup").arg(&src).output().unwrap());
    assert_eq!(w.snapshot_ids("a").len(), 3);
    let out = w
        .cv("b")
        .env("CHATVAULT_KEY", &key)
        .args(["--repo", &w.repo, "restore", "latest", "--target"])
        .arg(w.p("restored"))
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(tree(&src), tree(&w.p("restored/chats")));
    let out = w
        .cv("b")
        .env("CHATVAULT_KEY", &key)
        .args(["--repo", &w.repo, "check", "--read-data"])
        .output()
        .unwrap();
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("check after faults: {stdout}");
}

/// Bit rot at the provider, served by the proxy (one bit in the middle of every answer for one
/// data pack): `check --read-data` names the pack and the command; `repair packs` leaves a pack
/// alone when only its first read was damaged (exit 6, nothing changed), and with the damage on
/// every read salvages the intact blobs into new packs and deletes the pack on S3; the next
/// backup stores the damaged blobs again, after which check passes and a new device restores the
/// folder byte for byte.
#[test]
fn s3_repair_packs_salvages_a_rotten_pack_and_leaves_an_unstable_one() {
    let Some(env) = s3_env() else { return };
    let proxy = Proxy::start(env.addr);
    let w = World::new(&env, "rot");
    let src = w.p("chats");
    small_source(&src);
    std::fs::write(src.join("Media/VID-1.mp4"), noise(21, 3_000_000)).unwrap();
    let key = w.init("phone-a");
    assert_ok(&w.cv("phone-a").arg("backup").arg(&src).output().unwrap());
    let prefix = w
        .repo
        .split_once(&format!("{}/", env.bucket))
        .unwrap()
        .1
        .to_string();
    let data = |objects: &[Object]| -> Vec<String> {
        objects
            .iter()
            .filter(|o| o.key.starts_with(&format!("{prefix}/data/")))
            .map(|o| o.key.rsplit('/').next().unwrap().to_string())
            .collect()
    };
    let objects = list_objects(&env, &prefix);
    let victim = objects
        .iter()
        .filter(|o| o.key.starts_with(&format!("{prefix}/data/")))
        .max_by_key(|o| o.size)
        .map(|o| o.key.rsplit('/').next().unwrap().to_string())
        .unwrap();
    let short = &victim[..8];
    let via_proxy = |args: &[&str]| {
        let mut c = w.cv("phone-a");
        c.env("AWS_ENDPOINT_URL", proxy.endpoint()).args(args);
        c.output().unwrap()
    };

    proxy.set(Fault::Flip, &victim, 0, usize::MAX);
    let out = via_proxy(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("chatvault repair packs {short}")),
        "{text}"
    );

    // Only the first read is damaged: a flaky read, not rot; nothing changes.
    proxy.set(Fault::Flip, &victim, 0, 1);
    let out = via_proxy(&["repair", "packs", short]);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("two reads disagreed"),
        "{out:?}"
    );
    assert_eq!(proxy.faults(), 1);
    assert!(data(&list_objects(&env, &prefix)).contains(&victim));

    // Every read damaged: repaired.
    proxy.set(Fault::Flip, &victim, 0, usize::MAX);
    let out = via_proxy(&["repair", "packs", "--json", short]);
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["packs"][0]["outcome"], "repaired", "{v}");
    assert!(!v["packs"][0]["lost"].as_array().unwrap().is_empty(), "{v}");
    assert!(v["packs"][0]["salvaged"].as_u64().unwrap() > 0, "{v}");
    let after = data(&list_objects(&env, &prefix));
    assert!(!after.contains(&victim), "{after:?}");

    proxy.pass();
    assert_ok(&w.cv("phone-a").arg("backup").arg(&src).output().unwrap());
    assert_ok(
        &w.cv("phone-a")
            .args(["check", "--read-data"])
            .output()
            .unwrap(),
    );
    assert_ok(&w.restore_new_device("new-phone", &key, "restored"));
    assert_eq!(tree(&src), tree(&w.p("restored/chats")));
}
