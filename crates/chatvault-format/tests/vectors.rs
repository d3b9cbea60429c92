//! Fixed-byte test vectors of the repository format (docs/FORMAT.md §16).
//!
//! Every file in `tests/vectors/` is one case: `name: value` header lines, a blank line, then the
//! object's raw bytes (the file format is in `tests/vectors/README.md`). [`vectors`] runs them
//! all, and for each:
//! 1. the reference reader (this crate) opens it and must give the outcome (`expect`, `error`),
//!    plaintext and id the file names;
//! 2. an independent reader written from FORMAT.md alone ([`spec`]: HKDF, XChaCha20-Poly1305,
//!    BLAKE3, zstd and the chunker of §5, nothing from this crate) must agree, so the document
//!    says enough to reimplement the format;
//! 3. a success case is sealed again from its header values with the same deterministic nonces
//!    ([`VectorRng`], seeded by `rng-seed`) and must give the same bytes, so any drift of the
//!    format (a label, a field order, a layout) fails here.
//!
//! `cargo test -p chatvault-format --test vectors -- --ignored regenerate` rewrites the files
//! from [`generate`]; review the diff: a changed vector is a changed format.
#![allow(clippy::unwrap_used)] // tests and examples may unwrap; library and binary code may not

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use chatvault_format::blob::{self, BlobError, BlobType};
use chatvault_format::config::{Config, ConfigError, RepoParams};
use chatvault_format::envelope::{self, EnvelopeError, ObjectKind};
use chatvault_format::id::{BlobId, IndexId, PackId, RepoId};
use chatvault_format::key::{BackupKey, RepoKeys};
use chatvault_format::list::{self, ListError};
use chatvault_format::objects::{
    self, Bytes, IndexBlob, IndexFile, IndexPack, Lock, Node, NodeKind, ObjectError, PrunePlan,
    Snapshot, Summary, Tree, Versioned,
};
use chatvault_format::pack::{self, PackEntry, PackError};
// The nonce source of the vectors: SplitMix64 (`chatvault_fuzz_support::FixedRng`, the
// fuzz harnesses' RNG). Each `fill_bytes` call takes fresh outputs and writes them
// little-endian, so a 24-byte nonce is three outputs. Claims `CryptoRng` only so the sealing
// functions accept it: fixed nonces are for test vectors, never for real data.
use chatvault_fuzz_support::FixedRng as VectorRng;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

// ---------------------------------------------------------------------------------------------
// The vector file format.

/// One vector file: header lines (in order; a name may repeat) and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Vector {
    name: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Vector {
    fn new(name: &str, kind: &str, expect: &str) -> Self {
        Vector {
            name: name.into(),
            headers: vec![
                ("kind".into(), kind.into()),
                ("expect".into(), expect.into()),
            ],
            body: Vec::new(),
        }
    }

    /// Adds a header line.
    fn h(mut self, name: &str, value: impl AsRef<str>) -> Self {
        let value = value.as_ref();
        assert!(!value.contains('\n'), "{name}: header values are one line");
        self.headers.push((name.into(), value.into()));
        self
    }

    fn hx(self, name: &str, bytes: impl AsRef<[u8]>) -> Self {
        self.h(name, hex::encode(bytes))
    }

    /// Adds `key` and `repo_id` after the descriptive headers.
    fn keyed(mut self, key: &[u8; 32], repo: &[u8; 32]) -> Self {
        let at = self
            .headers
            .iter()
            .take_while(|(k, _)| ["kind", "expect", "error", "comment"].contains(&k.as_str()))
            .count();
        self.headers
            .insert(at, ("repo_id".into(), hex::encode(repo)));
        self.headers.insert(at, ("key".into(), hex::encode(key)));
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in &self.headers {
            out.extend_from_slice(format!("{k}: {v}").trim_end().as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out
    }

    fn parse(name: &str, bytes: &[u8]) -> Result<Self, String> {
        let split = bytes
            .windows(2)
            .position(|w| w == b"\n\n")
            .ok_or("no blank line after the headers")?;
        let text = std::str::from_utf8(&bytes[..split]).map_err(|_| "headers are not UTF-8")?;
        let mut headers = Vec::new();
        for line in text.lines() {
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| format!("header line without ':': {line:?}"))?;
            headers.push((k.to_string(), v.trim_start().to_string()));
        }
        Ok(Vector {
            name: name.into(),
            headers,
            body: bytes[split + 2..].to_vec(),
        })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn req(&self, name: &str) -> Result<&str, String> {
        self.get(name)
            .ok_or_else(|| format!("missing header {name}"))
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn hex(&self, name: &str) -> Result<Vec<u8>, String> {
        hex::decode(self.req(name)?).map_err(|e| format!("{name}: {e}"))
    }

    fn h32(&self, name: &str) -> Result<[u8; 32], String> {
        self.hex(name)?
            .try_into()
            .map_err(|_| format!("{name}: not 32 bytes"))
    }

    fn num<T: std::str::FromStr>(&self, name: &str) -> Result<T, String> {
        self.req(name)?
            .parse()
            .map_err(|_| format!("{name}: not a number"))
    }

    fn nums(&self, name: &str) -> Result<Vec<usize>, String> {
        self.req(name)?
            .split_whitespace()
            .map(|n| n.parse().map_err(|_| format!("{name}: not a number: {n}")))
            .collect()
    }

    fn u64_hex(&self, name: &str) -> Result<u64, String> {
        let v = self.req(name)?;
        u64::from_str_radix(v.trim_start_matches("0x"), 16).map_err(|_| format!("{name}: {v}"))
    }

    fn keys(&self) -> Result<RepoKeys, String> {
        Ok(BackupKey::from_bytes(self.h32("key")?)
            .derive(&RepoId::from_bytes(self.h32("repo_id")?)))
    }

    fn spec_keys(&self) -> Result<spec::Keys, String> {
        Ok(spec::derive(&self.h32("key")?, &self.h32("repo_id")?))
    }

    fn rng(&self) -> Result<VectorRng, String> {
        Ok(VectorRng(self.num("rng-seed")?))
    }

    fn success(&self) -> bool {
        self.get("expect") == Some("success")
    }
}

// ---------------------------------------------------------------------------------------------
// Outcomes: every error of the reference reader maps to an `expect` class and an `error` detail.

/// `(expect, error)` of a failed read.
type Failure = (&'static str, String);

fn envelope_failure(e: &EnvelopeError) -> Failure {
    match e {
        EnvelopeError::Truncated { .. } => ("corrupted", "truncated".into()),
        EnvelopeError::Authentication => ("corrupted", "authentication".into()),
        other => ("corrupted", other.to_string()),
    }
}

fn blob_failure(e: &BlobError) -> Failure {
    match e {
        BlobError::Envelope(e) => envelope_failure(e),
        BlobError::Payload(m) => ("corrupted", (*m).into()),
        BlobError::IdMismatch => ("corrupted", "id mismatch".into()),
        other => ("corrupted", other.to_string()),
    }
}

fn object_failure(e: &ObjectError) -> Failure {
    match e {
        ObjectError::Envelope(e) => envelope_failure(e),
        ObjectError::Payload(e) => blob_failure(e),
        ObjectError::IdMismatch => ("corrupted", "id mismatch".into()),
        ObjectError::Malformed(_) => ("malformed", "invalid JSON".into()),
        ObjectError::UnsupportedVersion(v) => ("unsupported version", format!("version {v}")),
        ObjectError::Invalid(m) => ("malformed", (*m).into()),
        other => ("corrupted", other.to_string()),
    }
}

fn config_failure(e: &ConfigError) -> Failure {
    match e {
        ConfigError::NotARepository => ("not a repository", String::new()),
        ConfigError::UnsupportedVersion(v) => ("unsupported version", format!("version {v}")),
        ConfigError::Corrupted(m) => ("corrupted", (*m).into()),
        ConfigError::WrongKey => ("wrong key", String::new()),
        other => ("corrupted", other.to_string()),
    }
}

fn pack_failure(e: &PackError) -> Failure {
    match e {
        PackError::Truncated => ("corrupted", "truncated".into()),
        PackError::Header(e) => envelope_failure(e),
        PackError::Malformed(m) => ("malformed", (*m).into()),
        other => ("corrupted", other.to_string()),
    }
}

fn list_failure(e: &ListError) -> Failure {
    match e {
        ListError::Malformed(m) => ("malformed", (*m).into()),
        ListError::WrongLevel { .. } => ("malformed", "wrong level".into()),
        other => ("malformed", other.to_string()),
    }
}

/// Compares an outcome with the vector's `expect` and `error`.
fn outcome(v: &Vector, got: Result<(), Failure>) -> Result<(), String> {
    let (expect, error) = match got {
        Ok(()) => ("success", String::new()),
        Err(f) => f,
    };
    let want = (v.req("expect")?, v.get("error").unwrap_or(""));
    if (expect, error.as_str()) != want {
        return Err(format!(
            "reader says {expect:?} ({error:?}), the vector expects {want:?}"
        ));
    }
    Ok(())
}

fn same(what: &str, got: impl AsRef<[u8]>, want: impl AsRef<[u8]>) -> Result<(), String> {
    if got.as_ref() == want.as_ref() {
        Ok(())
    } else {
        Err(format!(
            "{what} differs:\n  got  {}\n  want {}",
            hex::encode(got),
            hex::encode(want)
        ))
    }
}

fn same_val<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what} differs: got {got:?}, want {want:?}"))
    }
}

// ---------------------------------------------------------------------------------------------
// The test.

fn load_all() -> BTreeMap<String, Vector> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir()).expect("tests/vectors exists") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with(".md") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let v = Vector::parse(&name, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        out.insert(name, v);
    }
    out
}

/// How many files [`generate`] writes (so a deleted file fails the test).
const VECTOR_COUNT: usize = 42;

#[test]
fn vectors() {
    let all = load_all();
    let mut failures = Vec::new();
    let mut kinds = BTreeMap::<String, usize>::new();
    for (name, v) in &all {
        *kinds
            .entry(v.get("kind").unwrap_or("?").into())
            .or_default() += 1;
        if let Err(e) = check(v, &all) {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every kind of vector is present (a deleted folder or file must not pass silently).
    for kind in [
        "keys",
        "keyed-id",
        "config",
        "blob/data",
        "blob/tree",
        "blob/list",
        "index",
        "snapshot",
        "prune-plan",
        "lock",
        "pack",
        "pack/v2",
        "list",
        "list/cut",
        "tree/cut",
        "chunker",
        "chunker/tables",
    ] {
        assert!(kinds.contains_key(kind), "no {kind} vector: {kinds:?}");
    }
    assert_eq!(all.len(), VECTOR_COUNT, "vector files: {kinds:?}");
}

fn check(v: &Vector, all: &BTreeMap<String, Vector>) -> Result<(), String> {
    match v.req("kind")? {
        "keys" => check_keys(v),
        "keyed-id" => check_keyed_id(v),
        "config" => check_config(v),
        "blob/data" => check_blob(v, BlobType::Data),
        "blob/tree" => check_blob(v, BlobType::Tree),
        "blob/list" => check_blob(v, BlobType::List),
        "index" => check_object::<IndexFile>(v, ObjectKind::Index),
        "snapshot" => check_object::<Snapshot>(v, ObjectKind::Snapshot),
        "prune-plan" => check_object::<PrunePlan>(v, ObjectKind::PrunePlan),
        "lock" => check_lock(v),
        "pack" => check_pack(v),
        "pack/v2" => check_pack_v2(v),
        "list" => check_list(v),
        "list/cut" => check_list_cut(v),
        "tree/cut" => check_tree_cut(v),
        "chunker" => check_chunker(v, all),
        "chunker/tables" => check_chunker_tables(v),
        other => Err(format!("unknown kind {other}")),
    }
}

fn check_keys(v: &Vector) -> Result<(), String> {
    let keys = v.keys()?;
    let sk = v.spec_keys()?;
    let repo = v.h32("repo_id")?;
    same("K_check", sk.check, v.hex("k-check")?)?;
    same("K_data", sk.data, v.hex("k-data")?)?;
    same("K_meta", sk.meta, v.hex("k-meta")?)?;
    same("K_id", sk.id, v.hex("k-id")?)?;
    same_val("chunker seed (spec)", sk.seed, v.u64_hex("chunker-seed")?)?;
    same_val(
        "chunker seed",
        keys.chunker_seed(),
        v.u64_hex("chunker-seed")?,
    )?;
    same(
        "key_check (spec)",
        spec::key_check(&sk, &repo),
        v.hex("key-check")?,
    )?;
    same(
        "key_check",
        keys.key_check(&RepoId::from_bytes(repo)),
        v.hex("key-check")?,
    )?;
    // K_id as the crate uses it: a keyed id computed both ways.
    same(
        "keyed id",
        keys.keyed_id("x", b"y"),
        spec::keyed_id(&sk, "x", b"y"),
    )
}

fn check_keyed_id(v: &Vector) -> Result<(), String> {
    let (label, plain, id) = (v.req("label")?, v.hex("plaintext")?, v.hex("id")?);
    same("id", v.keys()?.keyed_id(label, &plain), &id)?;
    same(
        "id (spec)",
        spec::keyed_id(&v.spec_keys()?, label, &plain),
        &id,
    )
}

fn check_config(v: &Vector) -> Result<(), String> {
    let key = BackupKey::from_bytes(v.h32("key")?);
    let got = Config::decode(&v.body, &key);
    outcome(v, got.as_ref().map(|_| ()).map_err(config_failure))?;
    let spec = spec::config(&v.h32("key")?, &v.body);
    same_val(
        "outcome (spec)",
        spec.as_ref().err().copied().unwrap_or("success"),
        v.req("expect")?,
    )?;
    if !v.success() {
        return Ok(());
    }
    let (cfg, keys) = got.map_err(|e| e.to_string())?;
    let (repo, json) = spec.map_err(|e| e.to_string())?;
    same("repo_id", cfg.repo_id.as_bytes(), v.hex("repo_id")?)?;
    same("repo_id (spec)", repo, v.hex("repo_id")?)?;
    same("params (spec)", &json, v.hex("plaintext")?)?;
    same(
        "params",
        serde_json::to_vec(&cfg.params).unwrap(),
        v.hex("plaintext")?,
    )?;
    let params: RepoParams = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
    let again = Config::encode_version(cfg.version, &cfg.repo_id, &params, &keys, &mut v.rng()?);
    same("re-sealed config", again, &v.body)
}

fn check_blob(v: &Vector, ty: BlobType) -> Result<(), String> {
    let keys = v.keys()?;
    let id = BlobId::from_bytes(v.h32("id")?);
    let got = blob::open_blob(&keys, ty, &id, &v.body);
    outcome(v, got.as_ref().map(|_| ()).map_err(blob_failure))?;
    let spec = spec::open_content(&v.spec_keys()?, v.req("kind")?, &v.h32("id")?, &v.body);
    if !v.success() {
        return match spec {
            Ok(_) => Err("the spec reader accepts it".into()),
            Err(_) => Ok(()),
        };
    }
    let plain = v.hex("plaintext")?;
    let (payload, spec_plain) = spec?;
    same("plaintext", got.map_err(|e| e.to_string())?, &plain)?;
    same("plaintext (spec)", spec_plain, &plain)?;
    same(
        "id",
        blob::blob_id(&keys, ty, &plain).as_bytes(),
        id.as_bytes(),
    )?;
    compression(v, &payload)?;
    let again = blob::seal_blob(&keys, ty, &id, &plain, &mut v.rng()?);
    same("re-sealed blob", again, &v.body)
}

fn compression(v: &Vector, payload: &[u8]) -> Result<(), String> {
    let byte = match v.req("compression")? {
        "stored" => 0,
        "zstd" => 1,
        other => return Err(format!("compression: {other}")),
    };
    same_val("compression byte", payload.first().copied(), Some(byte))
}

fn check_object<T>(v: &Vector, kind: ObjectKind) -> Result<(), String>
where
    T: Serialize + DeserializeOwned + Versioned,
{
    let keys = v.keys()?;
    let id = v.h32("id")?;
    let got = objects::open_object::<T>(&keys, kind, &id, &v.body);
    outcome(v, got.as_ref().map(|_| ()).map_err(object_failure))?;
    let spec = spec::open_content(&v.spec_keys()?, v.req("kind")?, &id, &v.body);
    if !v.success() {
        // The spec reader stops at the bytes; JSON errors are the reference reader's.
        return match (spec, v.req("expect")?) {
            (Ok(_), "corrupted") => Err("the spec reader accepts it".into()),
            _ => Ok(()),
        };
    }
    let plain = v.hex("plaintext")?;
    let (payload, spec_plain) = spec?;
    same("plaintext (spec)", spec_plain, &plain)?;
    let value = got.map_err(|e| e.to_string())?;
    same("plaintext", serde_json::to_vec(&value).unwrap(), &plain)?;
    compression(v, &payload)?;
    let (again_id, again) =
        objects::seal_object(&keys, kind, &value, &mut v.rng()?).map_err(|e| e.to_string())?;
    same("id", again_id, id)?;
    same("re-sealed object", again, &v.body)
}

fn check_lock(v: &Vector) -> Result<(), String> {
    let keys = v.keys()?;
    let id = v.h32("id")?;
    let got = objects::open_lock(&keys, &id, &v.body);
    outcome(v, got.as_ref().map(|_| ()).map_err(object_failure))?;
    let (_, spec_plain) = spec::open_content(&v.spec_keys()?, "lock", &id, &v.body)?;
    let plain = v.hex("plaintext")?;
    same("plaintext (spec)", spec_plain, &plain)?;
    let lock = got.map_err(|e| e.to_string())?;
    same("plaintext", serde_json::to_vec(&lock).unwrap(), &plain)?;
    let again = objects::seal_lock(&keys, &id, &lock, &mut v.rng()?);
    same("re-sealed lock", again, &v.body)
}

fn check_pack(v: &Vector) -> Result<(), String> {
    let keys = v.keys()?;
    let pid = PackId::from_bytes(v.h32("id")?);
    let got = pack::decode_header(&keys, &pid, &v.body);
    outcome(v, got.as_ref().map(|_| ()).map_err(pack_failure))?;
    let spec = spec::pack(&v.spec_keys()?, &v.h32("id")?, &v.body);
    if !v.success() {
        return match spec {
            Ok(_) => Err("the spec reader accepts it".into()),
            Err(_) => Ok(()),
        };
    }
    let entries = got.map_err(|e| e.to_string())?;
    let (header_len, header, spec_blobs) = spec?;
    same_val("header-len (spec)", header_len, v.num("header-len")?)?;
    same_val(
        "header_len trailer",
        pack::header_len_from_tail(&v.body[v.body.len() - 4..]).map_err(|e| e.to_string())?,
        v.num("header-len")?,
    )?;
    same("header plaintext (spec)", header, v.hex("header")?)?;
    let blobs = v.all("blob");
    same_val("blob count", entries.len(), blobs.len())?;
    let mut rng = v.rng()?;
    let mut again = Vec::new();
    let mut expected = Vec::new();
    for ((line, e), spec_plain) in blobs.iter().zip(&entries).zip(&spec_blobs) {
        let (ty, plain) = line.split_once(' ').ok_or("blob: <type> <plaintext hex>")?;
        let ty = match ty {
            "data" => BlobType::Data,
            "tree" => BlobType::Tree,
            "list" => BlobType::List,
            other => return Err(format!("blob type {other}")),
        };
        let plain = hex::decode(plain).map_err(|e| e.to_string())?;
        let id = blob::blob_id(&keys, ty, &plain);
        let sealed = &v.body[e.offset as usize..][..e.length as usize];
        same(
            "blob",
            blob::open_blob(&keys, ty, &e.id, sealed).map_err(|e| e.to_string())?,
            &plain,
        )?;
        same("blob (spec)", spec_plain, &plain)?;
        let bytes = blob::seal_blob(&keys, ty, &id, &plain, &mut rng);
        expected.push(PackEntry {
            ty,
            id,
            offset: again.len() as u64,
            length: bytes.len() as u32,
            raw_length: plain.len() as u32,
        });
        again.extend_from_slice(&bytes);
    }
    same_val("entries", &entries, &expected)?;
    again.extend(pack::encode_header(&keys, &pid, &expected, &mut rng));
    same("re-sealed pack", again, &v.body)
}

/// A format 2 pack (§7): padded, sealed trailer. Success vectors only.
fn check_pack_v2(v: &Vector) -> Result<(), String> {
    let keys = v.keys()?;
    let pid = PackId::from_bytes(v.h32("id")?);
    let got = pack::decode_header(&keys, &pid, &v.body);
    outcome(v, got.as_ref().map(|_| ()).map_err(pack_failure))?;
    let entries = got.map_err(|e| e.to_string())?;
    let (header_len, header, spec_blobs) = spec::pack_v2(&v.spec_keys()?, &v.h32("id")?, &v.body)?;
    same_val("header-len (spec)", header_len, v.num("header-len")?)?;
    same("header plaintext (spec)", header, v.hex("header")?)?;
    same_val(
        "padded length",
        pack::padme(v.body.len() as u64),
        v.body.len() as u64,
    )?;
    let blobs = v.all("blob");
    same_val("blob count", entries.len(), blobs.len())?;
    let mut rng = v.rng()?;
    let mut again = Vec::new();
    let mut expected = Vec::new();
    for ((line, e), spec_plain) in blobs.iter().zip(&entries).zip(&spec_blobs) {
        let plain = hex::decode(line.strip_prefix("data ").ok_or("blob: data <hex>")?)
            .map_err(|e| e.to_string())?;
        same("blob (spec)", spec_plain, &plain)?;
        let sealed = &v.body[e.offset as usize..][..e.length as usize];
        same(
            "blob",
            blob::open_blob(&keys, BlobType::Data, &e.id, sealed).map_err(|e| e.to_string())?,
            &plain,
        )?;
        let id = blob::blob_id(&keys, BlobType::Data, &plain);
        let bytes = blob::seal_blob(&keys, BlobType::Data, &id, &plain, &mut rng);
        expected.push(PackEntry {
            ty: BlobType::Data,
            id,
            offset: again.len() as u64,
            length: bytes.len() as u32,
            raw_length: plain.len() as u32,
        });
        again.extend_from_slice(&bytes);
    }
    same_val("entries", &entries, &expected)?;
    let area = again.len() as u64;
    again.extend(pack::encode_tail_v2(&keys, &pid, &expected, area, &mut rng));
    same("re-sealed pack", again, &v.body)
}

fn check_list(v: &Vector) -> Result<(), String> {
    let got = list::decode(&v.body);
    outcome(v, got.as_ref().map(|_| ()).map_err(list_failure))?;
    same_val("outcome (spec)", spec::list(&v.body).is_ok(), v.success())?;
    if !v.success() {
        return Ok(());
    }
    let l = got.map_err(|e| e.to_string())?;
    let ids: Vec<BlobId> = v
        .all("entry")
        .iter()
        .map(|h| h.parse().map_err(|_| format!("entry {h}")))
        .collect::<Result<_, _>>()?;
    same_val("level", l.level, v.num("level")?)?;
    same_val("ids", &l.ids, &ids)?;
    same("re-encoded list", list::encode(l.level, &ids), &v.body)
}

/// The id sequence of a `list/cut` vector (README): `BLAKE3(u32le(i))`, with bit 0 of byte 0
/// set for `i` in the `no-boundary` range.
fn cut_ids(v: &Vector) -> Result<Vec<BlobId>, String> {
    let n: usize = v.num("count")?;
    let r = v.nums("no-boundary")?;
    let [from, to] = r[..] else {
        return Err("no-boundary: <from> <to>".into());
    };
    Ok((0..n)
        .map(|i| {
            let mut b = *blake3::hash(&(i as u32).to_le_bytes()).as_bytes();
            if (from..to).contains(&i) {
                b[0] |= 1;
            }
            BlobId::from_bytes(b)
        })
        .collect())
}

fn check_list_cut(v: &Vector) -> Result<(), String> {
    let ids = cut_ids(v)?;
    let pieces: Vec<usize> = list::cut(&ids).iter().map(|p| p.len()).collect();
    let want = v.nums("pieces")?;
    same_val("pieces", &pieces, &want)?;
    let raw: Vec<[u8; 32]> = ids.iter().map(|i| *i.as_bytes()).collect();
    same_val("pieces (spec)", &spec::list_cut(&raw), &want)
}

/// The nodes of a `tree/cut` vector (README): node `i < count` is named `IMG-<i, 6 digits>.jpg`
/// and its encoding is `100 + (i × 7919 mod 2000)` bytes long.
fn cut_nodes(v: &Vector) -> Result<(Vec<Vec<u8>>, Vec<usize>), String> {
    let n = v.num("count")?;
    Ok((
        (0..n)
            .map(|i| format!("IMG-{i:06}.jpg").into_bytes())
            .collect(),
        (0..n).map(|i| 100 + (i as usize * 7919) % 2000).collect(),
    ))
}

fn check_tree_cut(v: &Vector) -> Result<(), String> {
    let (names, lens) = cut_nodes(v)?;
    let keys = v.keys()?;
    let parts = chatvault_format::parts::cut_lengths(&lens, |i| {
        chatvault_format::parts::is_boundary(&keys, &names[i], lens[i])
    });
    let want = v.nums("parts")?;
    same_val("parts", &parts, &want)?;
    same_val(
        "parts (spec)",
        &spec::tree_cut(&v.spec_keys()?, &names, &lens),
        &want,
    )
}

/// The input of a `chunker` vector (README): comma-separated parts, `xorshift64 <seed hex>
/// <len>` or `zeros <len>`.
fn chunker_input(spec: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let words: Vec<&str> = part.split_whitespace().collect();
        match words[..] {
            ["zeros", len] => {
                let len: usize = len.parse().map_err(|_| part.to_string())?;
                out.resize(out.len() + len, 0);
            }
            ["xorshift64", seed, len] => {
                let mut s = u64::from_str_radix(seed.trim_start_matches("0x"), 16)
                    .map_err(|_| part.to_string())?;
                let len: usize = len.parse().map_err(|_| part.to_string())?;
                let start = out.len();
                while out.len() < start + len {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    out.extend_from_slice(&s.to_le_bytes());
                }
                out.truncate(start + len);
            }
            _ => return Err(format!("input part {part:?}")),
        }
    }
    Ok(out)
}

/// A reader that returns at most 4093 bytes per call, to show boundaries do not depend on how
/// the file is read.
struct Dribble<'a>(&'a [u8]);

impl Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.0.len()).min(4093);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// Chunk lengths as chatvault-repo's `chunk_stream` cuts them.
fn fastcdc_chunks(source: impl Read, min: u32, avg: u32, max: u32, seed: u64) -> Vec<usize> {
    fastcdc::v2020::StreamCDC::with_level_and_seed(
        source,
        min,
        avg,
        max,
        fastcdc::v2020::Normalization::Level1,
        seed,
    )
    .map(|c| c.expect("in-memory read").length)
    .collect()
}

fn check_chunker(v: &Vector, all: &BTreeMap<String, Vector>) -> Result<(), String> {
    let (min, avg, max): (u32, u32, u32) = (v.num("min")?, v.num("avg")?, v.num("max")?);
    let seed = v.u64_hex("seed")?;
    let input = chunker_input(v.req("input")?)?;
    let want = v.nums("chunks")?;
    same_val("input length", input.len(), want.iter().sum())?;
    same_val(
        "chunks (fastcdc)",
        &fastcdc_chunks(&input[..], min, avg, max, seed),
        &want,
    )?;
    same_val(
        "chunks (fastcdc, short reads)",
        &fastcdc_chunks(Dribble(&input), min, avg, max, seed),
        &want,
    )?;
    let tables = spec::ChunkerTables::parse(
        &all.get("chunker-tables")
            .ok_or("the chunker-tables vector is missing")?
            .body,
    )?;
    let (mask_s, mask_l) = tables.masks(avg);
    same_val("mask-s", mask_s, v.u64_hex("mask-s")?)?;
    same_val("mask-l", mask_l, v.u64_hex("mask-l")?)?;
    same_val(
        "chunks (spec)",
        &spec::chunks(
            &tables,
            &input,
            min as usize,
            avg as usize,
            max as usize,
            seed,
        ),
        &want,
    )
}

fn check_chunker_tables(v: &Vector) -> Result<(), String> {
    use md5::{Digest, Md5};
    let t = spec::ChunkerTables::parse(&v.body)?;
    let (gear, gear_ls) = fastcdc::v2020::get_gear_with_seed(0);
    for (b, ((&want, &g), &gl)) in t
        .gear
        .iter()
        .zip(gear.iter())
        .zip(gear_ls.iter())
        .enumerate()
    {
        // GEAR[b] = the first 8 bytes (big-endian) of MD5 of 64 bytes equal to b.
        let md5 = Md5::digest([b as u8; 64]);
        let derived = u64::from_be_bytes(md5[..8].try_into().unwrap());
        same_val(&format!("gear {b} (MD5)"), want, derived)?;
        same_val(&format!("gear {b} (fastcdc)"), want, g)?;
        same_val(&format!("gear_ls {b} (fastcdc)"), want << 1, gl)?;
    }
    // The seeded tables are the plain ones XOR seed (GEAR) and XOR seed << 1 (GEAR_LS), which is
    // (GEAR XOR seed) << 1.
    let seed = 0x8000_0000_0000_0001_u64 | 0x1234_5678_9abc_def0;
    let (g, gl) = fastcdc::v2020::get_gear_with_seed(seed);
    for ((&want, &g), &gl) in t.gear.iter().zip(g.iter()).zip(gl.iter()) {
        same_val("seeded gear", g, want ^ seed)?;
        same_val("seeded gear_ls", gl, (want ^ seed) << 1)?;
    }
    for (n, m) in t.masks.iter().enumerate() {
        same_val(&format!("mask {n}"), *m, fastcdc::v2020::MASKS[n])?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// An independent reader, written from docs/FORMAT.md only.

mod spec {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use chacha20poly1305::{XChaCha20Poly1305, XNonce};
    use hkdf::Hkdf;
    use sha2::Sha256;

    /// §3.
    pub struct Keys {
        pub check: [u8; 32],
        pub data: [u8; 32],
        pub meta: [u8; 32],
        pub id: [u8; 32],
        pub seed: u64,
    }

    pub fn derive(key: &[u8; 32], repo_id: &[u8; 32]) -> Keys {
        let hk = Hkdf::<Sha256>::new(Some(repo_id), key);
        let k = |info: &str| {
            let mut out = [0u8; 32];
            hk.expand(info.as_bytes(), &mut out).unwrap();
            out
        };
        let mut seed = [0u8; 8];
        hk.expand(b"chatvault/v1/chunker-seed", &mut seed).unwrap();
        Keys {
            check: k("chatvault/v1/key-check"),
            data: k("chatvault/v1/data-encryption"),
            meta: k("chatvault/v1/metadata-encryption"),
            id: k("chatvault/v1/object-id"),
            seed: u64::from_le_bytes(seed),
        }
    }

    pub fn key_check(keys: &Keys, repo_id: &[u8; 32]) -> [u8; 32] {
        let mut m = b"chatvault/v1/key-check-value".to_vec();
        m.extend_from_slice(repo_id);
        *blake3::keyed_hash(&keys.check, &m).as_bytes()
    }

    /// §4.2.
    pub fn keyed_id(keys: &Keys, label: &str, plaintext: &[u8]) -> [u8; 32] {
        let mut m = label.as_bytes().to_vec();
        m.push(0);
        m.extend_from_slice(plaintext);
        *blake3::keyed_hash(&keys.id, &m).as_bytes()
    }

    /// §4.1.
    pub fn open(key: &[u8; 32], label: &str, id: &[u8; 32], env: &[u8]) -> Result<Vec<u8>, String> {
        if env.len() < 40 {
            return Err("shorter than nonce + tag".into());
        }
        let mut ad = label.as_bytes().to_vec();
        ad.extend_from_slice(&[0, 1]);
        ad.extend_from_slice(id);
        XChaCha20Poly1305::new(key.into())
            .decrypt(
                XNonce::from_slice(&env[..24]),
                Payload {
                    msg: &env[24..],
                    aad: &ad,
                },
            )
            .map_err(|_| "authentication failed".to_string())
    }

    /// §4.3.
    pub fn decompress(payload: &[u8]) -> Result<Vec<u8>, String> {
        match payload.split_first() {
            Some((0, body)) => Ok(body.to_vec()),
            Some((1, frame)) => zstd::bulk::decompress(frame, 64 << 20)
                .map_err(|e| format!("zstd (at most 64 MiB): {e}")),
            _ => Err("unknown compression".into()),
        }
    }

    /// The §4.1 table: label, whether `K_data` (else `K_meta`), whether compressed (§4.3) and
    /// content-addressed (§4.2).
    fn kind(kind: &str) -> Result<(&'static str, bool, bool, bool), String> {
        Ok(match kind {
            "blob/data" => ("chatvault/v1/blob/data", true, true, true),
            "blob/tree" => ("chatvault/v1/blob/tree", true, true, true),
            "blob/list" => ("chatvault/v1/blob/list", true, true, true),
            "index" => ("chatvault/v1/index", false, true, true),
            "snapshot" => ("chatvault/v1/snapshot", false, true, true),
            "prune-plan" => ("chatvault/v1/prune-plan", false, true, true),
            "lock" => ("chatvault/v1/lock", false, false, false),
            other => return Err(format!("no envelope kind {other}")),
        })
    }

    /// Opens a sealed object: returns its payload and its plaintext.
    pub fn open_content(
        keys: &Keys,
        kind_name: &str,
        id: &[u8; 32],
        bytes: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), String> {
        let (label, data, compressed, keyed) = kind(kind_name)?;
        let payload = open(if data { &keys.data } else { &keys.meta }, label, id, bytes)?;
        let plain = if compressed {
            decompress(&payload)?
        } else {
            payload.clone()
        };
        if keyed && keyed_id(keys, label, &plain) != *id {
            return Err("id mismatch".into());
        }
        Ok((payload, plain))
    }

    /// §6, in the order of checks it prescribes. Returns the repository id and the params JSON,
    /// or the `expect` class.
    pub fn config(key: &[u8; 32], b: &[u8]) -> Result<([u8; 32], Vec<u8>), &'static str> {
        if b.len() < 16 || &b[..16] != b"chatvault-repo\0\0" {
            return Err("not a repository");
        }
        if b.len() < 120 || blake3::hash(&b[..b.len() - 32]).as_bytes() != &b[b.len() - 32..] {
            return Err("corrupted");
        }
        if b[16..20] != 1u32.to_le_bytes() && b[16..20] != 2u32.to_le_bytes() {
            return Err("unsupported version");
        }
        let repo_id: [u8; 32] = b[20..52].try_into().unwrap();
        let params_len = u32::from_le_bytes(b[84..88].try_into().unwrap()) as usize;
        if params_len != b.len() - 120 {
            return Err("corrupted");
        }
        let keys = derive(key, &repo_id);
        if key_check(&keys, &repo_id) != b[52..84] {
            return Err("wrong key");
        }
        let json = open(
            &keys.meta,
            "chatvault/v1/config",
            &repo_id,
            &b[88..88 + params_len],
        )
        .map_err(|_| "corrupted")?;
        let p: serde_json::Value = serde_json::from_slice(&json).map_err(|_| "corrupted")?;
        let n = |f: &str| p[f].as_u64().ok_or("corrupted");
        let (min, avg, max, pack) = (
            n("chunk_min")?,
            n("chunk_avg")?,
            n("chunk_max")?,
            n("pack_size")?,
        );
        let ok = 4096 <= min
            && min <= avg
            && avg <= max
            && max <= 16 << 20
            && ((1 << 20)..=(256 << 20)).contains(&pack);
        if !ok {
            return Err("corrupted");
        }
        Ok((repo_id, json))
    }

    /// §7: returns `header_len`, the header plaintext and each blob's plaintext.
    #[allow(clippy::type_complexity)]
    pub fn pack(
        keys: &Keys,
        pack_id: &[u8; 32],
        b: &[u8],
    ) -> Result<(usize, Vec<u8>, Vec<Vec<u8>>), String> {
        let tail = b.len().checked_sub(4).ok_or("truncated")?;
        let hlen = u32::from_le_bytes(b[tail..].try_into().unwrap()) as usize;
        let area = tail.checked_sub(hlen).ok_or("truncated")?;
        let header = open(
            &keys.data,
            "chatvault/v1/pack-header",
            pack_id,
            &b[area..tail],
        )?;
        // Format 1: the entries cover the blob area exactly.
        let (blobs, end) = pack_entries(keys, b, &header, 1, area)?;
        if end != area {
            return Err("entries do not cover the blob area".into());
        }
        Ok((hlen, header, blobs))
    }

    /// §7 header entries of `version`: they tile the pack from 0 and end by `limit`; returns
    /// each blob's plaintext (opened and checked against its `raw_length`) and where they end.
    fn pack_entries(
        keys: &Keys,
        b: &[u8],
        header: &[u8],
        version: u8,
        limit: usize,
    ) -> Result<(Vec<Vec<u8>>, usize), String> {
        if header.len() < 5 || header[0] != version {
            return Err("header version".into());
        }
        let count = u32::from_le_bytes(header[1..5].try_into().unwrap()) as usize;
        if header.len() != 5 + 49 * count {
            return Err("header length".into());
        }
        let mut next = 0u64;
        let mut blobs = Vec::new();
        for e in header[5..].chunks_exact(49) {
            let label = match e[0] {
                0 => "blob/data",
                1 => "blob/tree",
                2 => "blob/list",
                _ => return Err("blob type".into()),
            };
            let id: [u8; 32] = e[1..33].try_into().unwrap();
            let offset = u64::from_le_bytes(e[33..41].try_into().unwrap());
            let length = u32::from_le_bytes(e[41..45].try_into().unwrap());
            let raw_length = u32::from_le_bytes(e[45..49].try_into().unwrap());
            if offset != next || length < 40 {
                return Err("entries do not tile the blob area".into());
            }
            next += u64::from(length);
            if next > limit as u64 {
                return Err("entries beyond the blob area".into());
            }
            let sealed = &b[offset as usize..next as usize];
            let (_, plain) = open_content(keys, label, &id, sealed)?;
            if plain.len() != raw_length as usize {
                return Err("raw_length".into());
            }
            blobs.push(plain);
        }
        Ok((blobs, next as usize))
    }

    /// §7 format 2 pack: the trailer names the header's length; entries tile the start.
    #[allow(clippy::type_complexity)]
    pub fn pack_v2(
        keys: &Keys,
        pack_id: &[u8; 32],
        b: &[u8],
    ) -> Result<(usize, Vec<u8>, Vec<Vec<u8>>), String> {
        let t = b.len().checked_sub(44).ok_or("truncated")?;
        let trailer = open(&keys.data, "chatvault/v1/pack-trailer", pack_id, &b[t..])?;
        let hlen =
            u32::from_le_bytes(trailer.as_slice().try_into().map_err(|_| "trailer")?) as usize;
        let start = t.checked_sub(hlen).ok_or("truncated")?;
        let header = open(
            &keys.data,
            "chatvault/v1/pack-header",
            pack_id,
            &b[start..t],
        )?;
        // Format 2: the entries end at or before the header; padding follows them.
        let (blobs, _) = pack_entries(keys, b, &header, 2, start)?;
        Ok((hlen, header, blobs))
    }

    /// §10.1 content list plaintext.
    pub fn list(b: &[u8]) -> Result<(u8, Vec<[u8; 32]>), String> {
        if b.len() < 6 || b[0] != 1 || b[1] > 3 {
            return Err("header".into());
        }
        let count = u32::from_le_bytes(b[2..6].try_into().unwrap()) as usize;
        if !(1..=1024).contains(&count) || b.len() != 6 + 32 * count {
            return Err("count".into());
        }
        Ok((
            b[1],
            b[6..].chunks(32).map(|c| c.try_into().unwrap()).collect(),
        ))
    }

    /// §10.1: piece lengths of a list cut.
    pub fn list_cut(ids: &[[u8; 32]]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut n = 0;
        for id in ids {
            n += 1;
            let v = u32::from_le_bytes(id[..4].try_into().unwrap());
            if n >= 1024 || (n >= 8 && v % 8 == 0) {
                out.push(n);
                n = 0;
            }
        }
        if n > 0 {
            out.push(n);
        }
        out
    }

    /// §10.2: the node counts of a large tree's parts, from its sorted names and the lengths
    /// of the nodes' encodings.
    pub fn tree_cut(keys: &Keys, names: &[Vec<u8>], lens: &[usize]) -> Vec<usize> {
        let mut out = Vec::new();
        let (mut n, mut bytes) = (0, 0);
        for (name, &len) in names.iter().zip(lens) {
            n += 1;
            bytes += len;
            let h = keyed_id(keys, "chatvault/v1/tree-cut", name);
            let v = u32::from_le_bytes(h[..4].try_into().unwrap()) % 16384;
            if bytes >= 131072 || (bytes >= 2048 && (v as usize) < len) {
                out.push(n);
                (n, bytes) = (0, 0);
            }
        }
        if n > 0 {
            out.push(n);
        }
        out
    }

    /// The chunker tables of the `chunker-tables` vector.
    pub struct ChunkerTables {
        pub gear: [u64; 256],
        pub masks: Vec<u64>,
    }

    impl ChunkerTables {
        pub fn parse(body: &[u8]) -> Result<Self, String> {
            let text = std::str::from_utf8(body).map_err(|_| "tables are not UTF-8")?;
            let mut gear = [None; 256];
            let mut masks = vec![0u64; 26];
            for line in text.lines() {
                let w: Vec<&str> = line.split_whitespace().collect();
                let [what, i, value] = w[..] else {
                    return Err(format!("table line {line:?}"));
                };
                let i: usize = i.parse().map_err(|_| line.to_string())?;
                let value = u64::from_str_radix(value, 16).map_err(|_| line.to_string())?;
                match what {
                    "gear" if i < 256 => gear[i] = Some(value),
                    "mask" if i < 26 => masks[i] = value,
                    _ => return Err(format!("table line {line:?}")),
                }
            }
            if gear.iter().any(Option::is_none) {
                return Err("a gear value is missing".into());
            }
            Ok(ChunkerTables {
                gear: gear.map(Option::unwrap_or_default),
                masks,
            })
        }

        /// `(MASK_S, MASK_L)` for an average chunk size (normalization level 1).
        pub fn masks(&self, avg: u32) -> (u64, u64) {
            let bits = f64::from(avg).log2().round() as usize;
            (self.masks[bits + 1], self.masks[bits - 1])
        }
    }

    /// §5: the chunk lengths of `data`.
    pub fn chunks(
        t: &ChunkerTables,
        data: &[u8],
        min: usize,
        avg: usize,
        max: usize,
        seed: u64,
    ) -> Vec<usize> {
        let g: Vec<u64> = t.gear.iter().map(|v| v ^ seed).collect();
        let gl: Vec<u64> = g.iter().map(|v| v << 1).collect();
        let (mask_s, mask_l) = t.masks(avg as u32);
        let cut = |src: &[u8]| -> usize {
            let mut n = src.len();
            if n <= min {
                return n;
            }
            let mut center = avg;
            if n > max {
                n = max;
            } else if n < center {
                center = n;
            }
            let mut h = 0u64;
            let mut i = min / 2;
            for (limit, mask) in [(center / 2, mask_s), (n / 2, mask_l)] {
                while i < limit {
                    let a = 2 * i;
                    h = (h << 2).wrapping_add(gl[src[a] as usize]);
                    if h & (mask << 1) == 0 {
                        return a;
                    }
                    h = h.wrapping_add(g[src[a + 1] as usize]);
                    if h & mask == 0 {
                        return a + 1;
                    }
                    i += 1;
                }
            }
            n
        };
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let n = cut(&data[pos..]);
            out.push(n);
            pos += n;
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The generator.

/// The backup key of the vectors: bytes 00 01 … 1f (public test data).
fn vector_key() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

/// The repository id of the vectors: bytes a0 a1 … bf.
fn vector_repo() -> [u8; 32] {
    std::array::from_fn(|i| 0xa0 + i as u8)
}

const TIME: &str = "2026-01-01T00:00:00Z";

/// Every vector, built with this crate's writers and deterministic nonces.
fn generate() -> Vec<Vector> {
    let (key, repo) = (vector_key(), vector_repo());
    let keys = BackupKey::from_bytes(key).derive(&RepoId::from_bytes(repo));
    let sk = spec::derive(&key, &repo);
    let mut out = Vec::new();
    let with_keys = |v: Vector| v.keyed(&key, &repo);

    // §3: subkeys.
    out.push(
        Vector::new("keys", "keys", "success")
            .h(
                "comment",
                "subkeys, key_check and chunker seed of `key` for `repo_id` (§3)",
            )
            .hx("key", key)
            .hx("repo_id", repo)
            .hx("k-check", sk.check)
            .hx("k-data", sk.data)
            .hx("k-meta", sk.meta)
            .hx("k-id", sk.id)
            .h("chunker-seed", format!("{:#018x}", keys.chunker_seed()))
            .hx("key-check", keys.key_check(&RepoId::from_bytes(repo))),
    );

    // §4.2: keyed ids.
    for (name, label, plain) in [
        (
            "keyed-id-empty-data-blob",
            "chatvault/v1/blob/data",
            &b""[..],
        ),
        (
            "keyed-id-commitment",
            "chatvault/v1/commitment",
            b"alice@example.org",
        ),
    ] {
        out.push(with_keys(
            Vector::new(name, "keyed-id", "success")
                .h(
                    "comment",
                    "BLAKE3-keyed(K_id, label || 0x00 || plaintext) (§4.2)",
                )
                .h("label", label)
                .hx("plaintext", plain)
                .hx("id", keys.keyed_id(label, plain)),
        ));
    }

    // §6: config.
    let params = RepoParams::defaults(TIME.into());
    let params_json = serde_json::to_vec(&params).unwrap();
    let config = Config::encode_version(
        1,
        &RepoId::from_bytes(repo),
        &params,
        &keys,
        &mut VectorRng(1),
    );
    out.push(with_keys(
        Vector::new("config", "config", "success")
            .h(
                "comment",
                "the default parameters; the params JSON is not compressed",
            )
            .hx("plaintext", &params_json)
            .h("rng-seed", "1")
            .body(config.clone()),
    ));
    let wrong: [u8; 32] = std::array::from_fn(|i| 0x1f - i as u8);
    out.push(
        Vector::new("config-wrong-key", "config", "wrong key")
            .h("comment", "the config above, read with another key")
            .hx("key", wrong)
            .body(config.clone()),
    );
    let mut bad = config.clone();
    bad[100] ^= 0x01;
    out.push(
        Vector::new("config-bad-checksum", "config", "corrupted")
            .h("error", "checksum mismatch")
            .h(
                "comment",
                "one bit of the sealed params flipped, checksum not updated",
            )
            .hx("key", key)
            .body(bad.clone()),
    );
    let rechecksum = |b: &mut Vec<u8>| {
        let n = b.len() - 32;
        let c = *blake3::hash(&b[..n]).as_bytes();
        b[n..].copy_from_slice(&c);
    };
    rechecksum(&mut bad);
    out.push(
        Vector::new("config-params-tampered", "config", "corrupted")
            .h("error", "sealed parameters do not authenticate")
            .h(
                "comment",
                "one bit of the sealed params flipped, checksum recomputed: key_check passes, the envelope fails",
            )
            .hx("key", key)
            .body(bad),
    );
    let mut v2 = config.clone();
    v2[16] = 3;
    rechecksum(&mut v2);
    out.push(
        Vector::new(
            "config-unsupported-version",
            "config",
            "unsupported version",
        )
        .h("error", "version 3")
        .h(
            "comment",
            "version 3 (newer than this reader) with a valid checksum",
        )
        .hx("key", key)
        .body(v2),
    );
    let mut magic = config.clone();
    magic[0] = b'C';
    out.push(
        Vector::new("config-bad-magic", "config", "not a repository")
            .h("comment", "first magic byte changed")
            .hx("key", key)
            .body(magic),
    );

    // §5: blobs.
    let stored_plain = b"hello, chatvault".to_vec();
    let zstd_plain = b"[31/12/2025, 23:59] Alice: happy new year!\n".repeat(20);
    let stored_id = blob::blob_id(&keys, BlobType::Data, &stored_plain);
    let zstd_id = blob::blob_id(&keys, BlobType::Data, &zstd_plain);
    let stored = blob::seal_blob(
        &keys,
        BlobType::Data,
        &stored_id,
        &stored_plain,
        &mut VectorRng(2),
    );
    let blob_vector = |name: &str, ty: BlobType, comment: &str, plain: &[u8], seed: u64| {
        let id = blob::blob_id(&keys, ty, plain);
        let sealed = blob::seal_blob(&keys, ty, &id, plain, &mut VectorRng(seed));
        let compression = if blob::compress(plain)[0] == 0 {
            "stored"
        } else {
            "zstd"
        };
        with_keys(
            Vector::new(name, &format!("blob/{}", kind_name(ty)), "success")
                .h("comment", comment)
                .hx("id", id.as_bytes())
                .h("compression", compression)
                .hx("plaintext", plain)
                .h("rng-seed", seed.to_string())
                .body(sealed),
        )
    };
    out.push(blob_vector(
        "blob-data-stored",
        BlobType::Data,
        "a data blob of at most 64 bytes: stored (payload 0x00 || plaintext)",
        &stored_plain,
        2,
    ));
    out.push(blob_vector(
        "blob-data-zstd",
        BlobType::Data,
        "a data blob that shrinks: zstd level 3 (payload 0x01 || frame); the id is over the uncompressed plaintext",
        &zstd_plain,
        3,
    ));
    let list_ids = vec![
        stored_id,
        zstd_id,
        blob::blob_id(&keys, BlobType::Data, b""),
    ];
    let list_plain = list::encode(0, &list_ids);
    let list_id = blob::blob_id(&keys, BlobType::List, &list_plain);
    let empty_tree = objects::tree_plaintext(&Tree {
        version: 1,
        nodes: vec![],
    })
    .unwrap();
    let nodes = vec![
        node(
            "Media",
            NodeKind::Dir {
                subtree: blob::blob_id(&keys, BlobType::Tree, &empty_tree),
            },
        ),
        node(
            "chat.txt",
            NodeKind::File {
                size: zstd_plain.len() as u64,
                content: vec![zstd_id],
                lists: vec![],
                changed_while_reading: false,
                sqlite_snapshot: false,
                sqlite_source: None,
            },
        ),
        node(
            "msgstore.db",
            NodeKind::File {
                size: (stored_plain.len() + zstd_plain.len()) as u64,
                content: vec![],
                lists: vec![list_id],
                changed_while_reading: false,
                sqlite_snapshot: false,
                sqlite_source: None,
            },
        ),
        Node {
            name: Bytes(vec![0x6e, 0xff]),
            ..node(
                "",
                NodeKind::Symlink {
                    target: Bytes(b"chat.txt".to_vec()),
                },
            )
        },
    ];
    let tree = Tree {
        version: objects::tree_version(&nodes),
        nodes,
    };
    let tree_plain = objects::tree_plaintext(&tree).unwrap();
    let tree_id = blob::blob_id(&keys, BlobType::Tree, &tree_plain);
    out.push(blob_vector(
        "blob-tree",
        BlobType::Tree,
        "a version 2 tree (a file with content lists), a non-UTF-8 name",
        &tree_plain,
        4,
    ));
    let parts_plain = chatvault_format::parts::part_list_plaintext(&[
        tree_id,
        blob::blob_id(&keys, BlobType::Tree, &empty_tree),
    ])
    .unwrap();
    out.push(blob_vector(
        "blob-tree-parts",
        BlobType::Tree,
        "a version 3 tree: the list of a large folder's parts (§10.2)",
        &parts_plain,
        40,
    ));
    out.push(blob_vector(
        "blob-list",
        BlobType::List,
        "a level-0 content list of three data blob ids (§10.1)",
        &list_plain,
        5,
    ));

    // Blob defects, one each.
    let defect = |name: &str, error: &str, comment: &str, id: &BlobId, body: Vec<u8>| {
        with_keys(
            Vector::new(name, "blob/data", "corrupted")
                .h("error", error)
                .h("comment", comment)
                .hx("id", id.as_bytes())
                .body(body),
        )
    };
    let mut flipped = stored.clone();
    *flipped.last_mut().unwrap() ^= 0x80;
    out.push(defect(
        "blob-flipped-tag",
        "authentication",
        "blob-data-stored with the last tag byte flipped",
        &stored_id,
        flipped,
    ));
    out.push(defect(
        "blob-wrong-kind",
        "authentication",
        "blob-data-stored's payload sealed as a tree blob (ad label chatvault/v1/blob/tree), read as a data blob",
        &stored_id,
        envelope::seal(
            &keys,
            ObjectKind::TreeBlob,
            stored_id.as_bytes(),
            &blob::compress(&stored_plain),
            &mut VectorRng(101),
        ),
    ));
    let other_id = blob::blob_id(&keys, BlobType::Data, b"hello, chatvault!");
    out.push(defect(
        "blob-id-mismatch",
        "id mismatch",
        "authentic envelope named by the id of \"hello, chatvault!\" holding \"hello, chatvault\"",
        &other_id,
        envelope::seal(
            &keys,
            ObjectKind::DataBlob,
            other_id.as_bytes(),
            &blob::compress(&stored_plain),
            &mut VectorRng(102),
        ),
    ));
    out.push(defect(
        "blob-truncated",
        "truncated",
        "the first 39 bytes of blob-data-stored: shorter than nonce + tag",
        &stored_id,
        stored[..39].to_vec(),
    ));
    let mut unknown = vec![2u8];
    unknown.extend_from_slice(&stored_plain);
    out.push(defect(
        "blob-unknown-compression",
        "unknown compression",
        "authentic payload with compression byte 0x02",
        &stored_id,
        envelope::seal(
            &keys,
            ObjectKind::DataBlob,
            stored_id.as_bytes(),
            &unknown,
            &mut VectorRng(103),
        ),
    ));
    let huge = vec![0u8; (64 << 20) + 1];
    let huge_id = blob::blob_id(&keys, BlobType::Data, &huge);
    for (name, frame, comment) in [
        (
            "blob-zstd-bomb",
            zstd::bulk::compress(&huge, 3).unwrap(),
            "authentic zstd frame that declares and holds 64 MiB + 1 zero bytes: over the 64 MiB cap",
        ),
        (
            "blob-zstd-bomb-unknown-size",
            zstd::stream::encode_all(&huge[..], 3).unwrap(),
            "as blob-zstd-bomb, but the frame does not declare its content size",
        ),
    ] {
        let declared = zstd::zstd_safe::get_frame_content_size(&frame).unwrap();
        assert_eq!(declared.is_some(), name == "blob-zstd-bomb");
        let mut payload = vec![1u8];
        payload.extend_from_slice(&frame);
        out.push(defect(
            name,
            "broken zstd frame",
            comment,
            &huge_id,
            envelope::seal(
                &keys,
                ObjectKind::DataBlob,
                huge_id.as_bytes(),
                &payload,
                &mut VectorRng(104),
            ),
        ));
    }

    // §7: a pack holding blob-data-stored's and blob-data-zstd's plaintexts.
    let pack_id = PackId::from_bytes(std::array::from_fn(|i| 0x50 + i as u8));
    let mut rng = VectorRng(10);
    let mut pack_bytes = Vec::new();
    let mut entries = Vec::new();
    for (id, plain) in [(stored_id, &stored_plain), (zstd_id, &zstd_plain)] {
        let sealed = blob::seal_blob(&keys, BlobType::Data, &id, plain, &mut rng);
        entries.push(PackEntry {
            ty: BlobType::Data,
            id,
            offset: pack_bytes.len() as u64,
            length: sealed.len() as u32,
            raw_length: plain.len() as u32,
        });
        pack_bytes.extend_from_slice(&sealed);
    }
    let header_plain = header_plaintext(&entries);
    let trailer = pack::encode_header(&keys, &pack_id, &entries, &mut rng);
    let header_len = trailer.len() - 4;
    pack_bytes.extend_from_slice(&trailer);
    out.push(with_keys(
        Vector::new("pack-two-blobs", "pack", "success")
            .h(
                "comment",
                "two data blobs, then the sealed header, then header_len (the sealed header's length) u32le",
            )
            .hx("id", pack_id.as_bytes())
            .h("blob", format!("data {}", hex::encode(&stored_plain)))
            .h("blob", format!("data {}", hex::encode(&zstd_plain)))
            .h("header-len", header_len.to_string())
            .hx("header", &header_plain)
            .h("rng-seed", "10")
            .body(pack_bytes.clone()),
    ));
    // §7 format 2: the same two blobs, padded, with a sealed trailer.
    let mut rng = VectorRng(11);
    let mut v2_bytes = Vec::new();
    let mut v2_entries = Vec::new();
    for (id, plain) in [(stored_id, &stored_plain), (zstd_id, &zstd_plain)] {
        let sealed = blob::seal_blob(&keys, BlobType::Data, &id, plain, &mut rng);
        v2_entries.push(PackEntry {
            ty: BlobType::Data,
            id,
            offset: v2_bytes.len() as u64,
            length: sealed.len() as u32,
            raw_length: plain.len() as u32,
        });
        v2_bytes.extend_from_slice(&sealed);
    }
    let mut v2_header = header_plaintext(&v2_entries);
    v2_header[0] = 2;
    let area = v2_bytes.len() as u64;
    v2_bytes.extend(pack::encode_tail_v2(
        &keys,
        &pack_id,
        &v2_entries,
        area,
        &mut rng,
    ));
    out.push(with_keys(
        Vector::new("pack-v2-two-blobs", "pack/v2", "success")
            .h(
                "comment",
                "format 2: the two blobs, random padding, the sealed header (version 2), the sealed \
                 44-byte trailer naming the header's length; total length is a Padmé length",
            )
            .hx("id", pack_id.as_bytes())
            .h("blob", format!("data {}", hex::encode(&stored_plain)))
            .h("blob", format!("data {}", hex::encode(&zstd_plain)))
            .h("header-len", (envelope::OVERHEAD + v2_header.len()).to_string())
            .hx("header", &v2_header)
            .h("rng-seed", "11")
            .body(v2_bytes),
    ));
    out.push(with_keys(
        Vector::new("pack-truncated", "pack", "corrupted")
            .h("error", "truncated")
            .h("comment", "pack-two-blobs without its last byte")
            .hx("id", pack_id.as_bytes())
            .body(pack_bytes[..pack_bytes.len() - 1].to_vec()),
    ));
    out.push(with_keys(
        Vector::new("pack-wrong-id", "pack", "corrupted")
            .h("error", "authentication")
            .h(
                "comment",
                "pack-two-blobs read under another pack id (the header is bound to it)",
            )
            .hx("id", [0x51u8; 32])
            .body(pack_bytes.clone()),
    ));
    let mut gap = entries.clone();
    gap[1].offset += 1;
    let mut gap_pack = pack_bytes[..pack_bytes.len() - trailer.len()].to_vec();
    gap_pack.extend(pack::encode_header(
        &keys,
        &pack_id,
        &gap,
        &mut VectorRng(105),
    ));
    out.push(with_keys(
        Vector::new("pack-entries-do-not-tile", "pack", "malformed")
            .h("error", "entries do not tile the pack")
            .h(
                "comment",
                "authentic header whose second entry starts one byte late",
            )
            .hx("id", pack_id.as_bytes())
            .body(gap_pack),
    ));

    // §8, §9, §11, §15: metadata objects.
    let index = IndexFile {
        version: 1,
        packs: vec![IndexPack {
            id: pack_id,
            size: pack_bytes.len() as u64,
            blobs: entries
                .iter()
                .map(|e| IndexBlob {
                    id: e.id,
                    ty: e.ty,
                    offset: e.offset,
                    length: e.length,
                    raw_length: e.raw_length,
                })
                .collect(),
        }],
    };
    let (index_id, _) =
        objects::seal_object(&keys, ObjectKind::Index, &index, &mut VectorRng(6)).unwrap();
    out.push(object_vector(
        &keys,
        "index",
        ObjectKind::Index,
        "the index of pack-two-blobs",
        &index,
        6,
    ));
    let mut summary = Summary {
        files: 2,
        dirs: 2,
        bytes: 2 * zstd_plain.len() as u64 + stored_plain.len() as u64,
        files_read: 2,
        new_blobs: 4,
        new_bytes: 1234,
        uploaded_bytes: 2345,
        ..Summary::default()
    };
    summary.add_changed("/sdcard/WhatsApp/Databases/msgstore.db-wal");
    let snapshot = Snapshot {
        version: 1,
        time: TIME.into(),
        hostname: "phone".into(),
        paths: vec!["/sdcard/WhatsApp".into()],
        tree: tree_id,
        parent: None,
        program: "chatvault 0.1.0".into(),
        summary,
        seq: 1,
        device: None,
    };
    out.push(object_vector(
        &keys,
        "snapshot",
        ObjectKind::Snapshot,
        "a partial snapshot of blob-tree",
        &snapshot,
        7,
    ));
    let plan = PrunePlan {
        version: 1,
        time: TIME.into(),
        hostname: "phone".into(),
        packs: vec![pack_id],
        index: vec![IndexId::from_bytes(index_id)],
    };
    out.push(object_vector(
        &keys,
        "prune-plan",
        ObjectKind::PrunePlan,
        "condemns pack-two-blobs and its index",
        &plan,
        8,
    ));
    let lock = Lock {
        version: 1,
        hostname: "phone".into(),
        pid: 4242,
        operation: "backup".into(),
        exclusive: false,
        time: TIME.into(),
        expires: "2026-01-01T00:30:00Z".into(),
    };
    let lock_id = [0x10u8; 32];
    let lock_json = serde_json::to_vec(&lock).unwrap();
    out.push(with_keys(
        Vector::new("lock", "lock", "success")
            .h(
                "comment",
                "random id; sealed without compression or keyed id",
            )
            .hx("id", lock_id)
            .hx("plaintext", &lock_json)
            .h("rng-seed", "9")
            .body(objects::seal_lock(
                &keys,
                &lock_id,
                &lock,
                &mut VectorRng(9),
            )),
    ));
    let raw_object =
        |name: &str, kind: ObjectKind, expect: &str, error: &str, comment: &str, json: &[u8]| {
            let id = keys.keyed_id(kind.label(), json);
            with_keys(
                Vector::new(name, kind_label(kind), expect)
                    .h("error", error)
                    .h("comment", comment)
                    .hx("id", id)
                    .body(envelope::seal(
                        &keys,
                        kind,
                        &id,
                        &blob::compress(json),
                        &mut VectorRng(106),
                    )),
            )
        };
    out.push(raw_object(
        "index-unsupported-version",
        ObjectKind::Index,
        "unsupported version",
        "version 2",
        "authentic index object {\"version\":2,\"packs\":[]} with a matching id",
        br#"{"version":2,"packs":[]}"#,
    ));
    out.push(raw_object(
        "snapshot-malformed-json",
        ObjectKind::Snapshot,
        "malformed",
        "invalid JSON",
        "authentic snapshot object {\"version\":1} with a matching id: required fields missing",
        br#"{"version":1}"#,
    ));

    // §10.1: content lists.
    let mut list_v = Vector::new("list", "list", "success")
        .h(
            "comment",
            "list plaintext: 0x01 || level u8 || count u32le || id[32] * count",
        )
        .h("level", "0");
    for id in &list_ids {
        list_v = list_v.h("entry", id.to_hex());
    }
    out.push(list_v.body(list_plain.clone()));
    let mut short = list_plain.clone();
    short.pop();
    out.push(
        Vector::new("list-count-mismatch", "list", "malformed")
            .h("error", "length does not match the count")
            .h("comment", "the list above without its last byte")
            .body(short),
    );
    let mut deep = list_plain.clone();
    deep[1] = 6;
    out.push(
        Vector::new("list-level-too-high", "list", "malformed")
            .h("error", "level too high")
            .h(
                "comment",
                "the list above at level 6 (readers accept 0 to 5)",
            )
            .body(deep),
    );
    let mut cut = Vector::new("list-cut", "list/cut", "success")
        .h(
            "comment",
            "content-defined cut of ids BLAKE3(u32le(i)), i < count, with bit 0 of byte 0 set in [from, to): piece lengths",
        )
        .h("count", "3000")
        .h("no-boundary", "1000 2600");
    let ids = cut_ids(&cut).unwrap();
    let pieces: Vec<String> = list::cut(&ids)
        .iter()
        .map(|p| p.len().to_string())
        .collect();
    assert!(
        pieces.iter().any(|p| p == "1024"),
        "the max cut is exercised"
    );
    cut = cut.h("pieces", pieces.join(" "));
    out.push(cut);
    let mut tcut = with_keys(
        Vector::new("tree-cut", "tree/cut", "success")
            .h(
                "comment",
                "content-defined cut of a large tree into parts (§10.2): node i < count named IMG-<i, 6 digits>.jpg, its encoding 100 + (i * 7919 mod 2000) bytes; nodes per part",
            )
            .h("count", "3000"),
    );
    let (names, lens) = cut_nodes(&tcut).unwrap();
    let tcut_parts: Vec<String> = spec::tree_cut(&tcut.spec_keys().unwrap(), &names, &lens)
        .iter()
        .map(|n| n.to_string())
        .collect();
    tcut = tcut.h("parts", tcut_parts.join(" "));
    out.push(tcut);

    // §5: the chunker.
    let mut tables = String::new();
    let (gear, _) = fastcdc::v2020::get_gear_with_seed(0);
    for (b, g) in gear.iter().enumerate() {
        tables.push_str(&format!("gear {b} {g:016x}\n"));
    }
    for (n, m) in fastcdc::v2020::MASKS.iter().enumerate().skip(5) {
        tables.push_str(&format!("mask {n} {m:016x}\n"));
    }
    out.push(
        Vector::new("chunker-tables", "chunker/tables", "success")
            .h(
                "comment",
                "body: `gear <b> <hex>` = GEAR[b] = first 8 bytes big-endian of MD5(64 bytes of b); `mask <n> <hex>` = MASK[n]",
            )
            .body(tables),
    );
    let seed = keys.chunker_seed();
    for (name, comment, (min, avg, max), input) in [
        (
            "chunker-default-params",
            "the default parameters, the chunker seed of `keys`",
            (128 << 10, 512 << 10, 2 << 20),
            "xorshift64 0x0123456789abcdef 4194304",
        ),
        (
            "chunker-small-params",
            "the smallest parameters §6 allows (4 KiB min), an odd length",
            (4096, 16384, 65536),
            "xorshift64 0x0123456789abcdef 1049577",
        ),
        (
            "chunker-zeros",
            "with this seed a run of zeros never matches: cuts at max; a tail shorter than min",
            (128 << 10, 512 << 10, 2 << 20),
            "xorshift64 0xfedcba9876543210 1000000, zeros 5000000, xorshift64 0x1 100000",
        ),
        (
            "chunker-empty",
            "an empty file has no chunks",
            (128 << 10, 512 << 10, 2 << 20),
            "zeros 0",
        ),
    ] {
        let data = chunker_input(input).unwrap();
        let chunks: Vec<String> = fastcdc_chunks(&data[..], min, avg, max, seed)
            .iter()
            .map(|c| c.to_string())
            .collect();
        let bits = f64::from(avg).log2().round() as usize;
        out.push(
            Vector::new(name, "chunker", "success")
                .h("comment", comment)
                .h("seed", format!("{seed:#018x}"))
                .h("min", min.to_string())
                .h("avg", avg.to_string())
                .h("max", max.to_string())
                .h(
                    "mask-s",
                    format!("{:#018x}", fastcdc::v2020::MASKS[bits + 1]),
                )
                .h(
                    "mask-l",
                    format!("{:#018x}", fastcdc::v2020::MASKS[bits - 1]),
                )
                .h("input", input)
                .h("chunks", chunks.join(" ")),
        );
    }
    out
}

fn kind_name(ty: BlobType) -> &'static str {
    match ty {
        BlobType::Data => "data",
        BlobType::Tree => "tree",
        BlobType::List => "list",
    }
}

fn kind_label(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Index => "index",
        ObjectKind::Snapshot => "snapshot",
        ObjectKind::PrunePlan => "prune-plan",
        other => panic!("no vector kind for {other:?}"),
    }
}

fn node(name: &str, kind: NodeKind) -> Node {
    Node {
        name: Bytes(name.as_bytes().to_vec()),
        kind,
        mode: 0o644,
        mtime_s: 1_767_225_600,
        mtime_ns: 0,
        ctime_s: 1_767_225_600,
        ctime_ns: 0,
        inode: 42,
    }
}

fn header_plaintext(entries: &[PackEntry]) -> Vec<u8> {
    let mut h = vec![1u8];
    h.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        h.push(e.ty.code());
        h.extend_from_slice(e.id.as_bytes());
        h.extend_from_slice(&e.offset.to_le_bytes());
        h.extend_from_slice(&e.length.to_le_bytes());
        h.extend_from_slice(&e.raw_length.to_le_bytes());
    }
    h
}

fn object_vector<T: Serialize>(
    keys: &RepoKeys,
    name: &str,
    kind: ObjectKind,
    comment: &str,
    value: &T,
    seed: u64,
) -> Vector {
    let json = serde_json::to_vec(value).unwrap();
    let (id, sealed) = objects::seal_object(keys, kind, value, &mut VectorRng(seed)).unwrap();
    let compression = if blob::compress(&json)[0] == 0 {
        "stored"
    } else {
        "zstd"
    };
    Vector::new(name, kind_label(kind), "success")
        .h("comment", comment)
        .keyed(&vector_key(), &vector_repo())
        .hx("id", id)
        .h("compression", compression)
        .hx("plaintext", &json)
        .h("rng-seed", seed.to_string())
        .body(sealed)
}

/// Rewrites `tests/vectors/` (every file but README.md and dotfiles).
#[test]
#[ignore = "rewrites the vector files; run with --ignored regenerate"]
fn regenerate() {
    let dir = dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, _) in load_all() {
        std::fs::remove_file(dir.join(name)).unwrap();
    }
    for v in generate() {
        let bytes = v.encode();
        assert_eq!(
            Vector::parse(&v.name, &bytes).unwrap(),
            v,
            "{} round-trips",
            v.name
        );
        std::fs::write(dir.join(&v.name), bytes).unwrap();
    }
}
