//! Writes the hand-made hostile inputs of the fuzz regression suites (huge declared lengths,
//! decompression bombs, deep JSON nesting, ...) into
//! `crates/chatvault-format/tests/fuzz_regressions/<target>/` and
//! `crates/chatvault-whatsapp/tests/fuzz_regressions/crypt15/`, in the format of the fuzz
//! target's input (mode byte first, see the harnesses). Run from `fuzz/`:
//! `cargo run --no-default-features --example nasty_inputs`. Idempotent.

use std::io::Write;
use std::path::Path;

use chatvault_format::labels;
use chatvault_fuzz::format::{FUZZ_REPO, config_with_params_json};
use chatvault_fuzz::whatsapp as wa;

fn put(dir: &Path, target: &str, name: &str, mode: Option<u8>, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).unwrap();
    let mut v: Vec<u8> = mode.into_iter().collect();
    v.extend_from_slice(bytes);
    std::fs::write(d.join(name), v).unwrap();
}

fn zstd_frame(len: usize, content_size: bool) -> Vec<u8> {
    let mut e = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
    e.include_contentsize(content_size).unwrap();
    if content_size {
        e.set_pledged_src_size(Some(len as u64)).unwrap();
    }
    let zeros = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len());
        e.write_all(&zeros[..n]).unwrap();
        left -= n;
    }
    e.finish().unwrap()
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let f = root.join("crates/chatvault-format/tests/fuzz_regressions");
    let w = root.join("crates/chatvault-whatsapp/tests/fuzz_regressions");
    const MIB: usize = 1 << 20;

    // Decompression bombs: just over and exactly at the 64 MiB cap, with and without a
    // declared content size.
    let mut over = vec![1u8];
    over.extend(zstd_frame(64 * MIB + 1, true));
    put(
        &f,
        "blob_payload",
        "zstd-bomb-64MiB-plus-1-declared",
        Some(0),
        &over,
    );
    let mut over_stream = vec![1u8];
    over_stream.extend(zstd_frame(65 * MIB, false));
    put(
        &f,
        "blob_payload",
        "zstd-bomb-65MiB-undeclared",
        Some(0),
        &over_stream,
    );
    let mut at_cap = vec![1u8];
    at_cap.extend(zstd_frame(64 * MIB, false));
    put(
        &f,
        "blob_payload",
        "zstd-exactly-64MiB-undeclared",
        Some(2),
        &at_cap,
    );
    put(
        &f,
        "index_object",
        "zstd-bomb-64MiB-zeros",
        Some(1),
        &at_cap,
    );
    put(&f, "tree_blob", "zstd-bomb-64MiB-plus-1", Some(2), &over);
    let mut lying = vec![1u8];
    let mut small = zstd_frame(1000, true);
    // A small honest frame followed by a second one that crosses the cap.
    small.extend(zstd_frame(64 * MIB, false));
    lying.extend(small);
    put(
        &f,
        "blob_payload",
        "zstd-two-frames-over-cap",
        Some(0),
        &lying,
    );
    put(
        &f,
        "blob_payload",
        "unknown-compression",
        Some(0),
        &[2, 1, 2, 3],
    );
    put(&f, "blob_payload", "empty", Some(0), &[]);
    put(&f, "blob_payload", "zstd-empty-body", Some(0), &[1]);
    put(
        &f,
        "blob_payload",
        "zstd-magic-only",
        Some(0),
        &[1, 0x28, 0xb5, 0x2f, 0xfd],
    );

    // Huge declared lengths.
    put(
        &f,
        "pack_header",
        "tail-len-u32-max",
        Some(0),
        &[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
    );
    put(
        &f,
        "pack_header",
        "tail-len-u32-max-minus-3",
        Some(0),
        &[0xfc, 0xff, 0xff, 0xff],
    );
    put(
        &f,
        "pack_header",
        "count-u32-max",
        Some(1),
        &[0, 0, 1, 0xff, 0xff, 0xff, 0xff],
    );
    let mut over_max = vec![0, 0, 1];
    over_max.extend(((1u32 << 20) + 1).to_le_bytes());
    put(
        &f,
        "pack_header",
        "count-max-entries-plus-1",
        Some(1),
        &over_max,
    );
    let mut entry = vec![0xff, 0xff, 1, 1, 0, 0, 0, 0];
    entry.extend([0; 32]);
    entry.extend(u64::MAX.to_le_bytes());
    entry.extend(u32::MAX.to_le_bytes());
    entry.extend(u32::MAX.to_le_bytes());
    put(
        &f,
        "pack_header",
        "entry-offset-length-max",
        Some(1),
        &entry,
    );

    let mut cfg = labels::CONFIG_MAGIC.to_vec();
    cfg.extend(1u32.to_le_bytes());
    cfg.extend(FUZZ_REPO);
    cfg.extend([0; 32]);
    cfg.extend(u32::MAX.to_le_bytes());
    cfg.extend([0; 32]); // checksum, fixed up by mode 1
    put(&f, "config", "params-len-u32-max", Some(1), &cfg);
    let mut cfg2 = cfg.clone();
    let n = cfg2.len();
    cfg2[n - 36..n - 32].copy_from_slice(&(u32::MAX - 87 - 32).to_le_bytes());
    put(&f, "config", "params-len-wraps-on-32-bit", Some(1), &cfg2);
    put(&f, "config", "version-u32-max", Some(1), &{
        let mut c = cfg.clone();
        c[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        c
    });
    put(
        &f,
        "config",
        "params-numbers-too-big",
        Some(2),
        br#"{"chunk_min":4294967296,"chunk_avg":1,"chunk_max":1,"pack_size":1,"created":""}"#,
    );
    put(
        &f,
        "config",
        "params-deep-nesting",
        Some(2),
        "[".repeat(10_000).as_bytes(),
    );
    let _ = config_with_params_json; // (mode 2 seals the bytes itself)

    // Deep JSON nesting and hostile values in metadata objects.
    put(
        &f,
        "tree_blob",
        "deep-nesting",
        Some(0),
        "[".repeat(10_000).as_bytes(),
    );
    put(
        &f,
        "tree_blob",
        "deep-nesting-in-name",
        Some(0),
        format!(
            r#"{{"version":1,"nodes":[{{"name":{}"#,
            "{\"b64\":".repeat(10_000)
        )
        .as_bytes(),
    );
    put(&f, "tree_blob", "bad-base64-name", Some(0),
        br#"{"version":1,"nodes":[{"name":{"b64":"!!!"},"type":"symlink","target":"x","mode":0,"mtime_s":0,"mtime_ns":0}]}"#);
    put(&f, "tree_blob", "huge-numbers", Some(0),
        br#"{"version":1,"nodes":[{"name":"a","type":"file","size":1e400,"content":[],"mode":0,"mtime_s":-9223372036854775809,"mtime_ns":0}]}"#);
    put(&f, "tree_blob", "duplicate-type-tag", Some(0),
        br#"{"version":1,"nodes":[{"name":"a","type":"dir","type":"file","subtree":"00","mode":0,"mtime_s":0,"mtime_ns":0}]}"#);
    put(
        &f,
        "snapshot_object",
        "deep-nesting",
        Some(2),
        "{\"a\":".repeat(10_000).as_bytes(),
    );
    put(
        &f,
        "index_object",
        "version-2",
        Some(2),
        br#"{"version":2,"packs":[]}"#,
    );
    put(
        &f,
        "lock_object",
        "deep-nesting",
        Some(1),
        "[".repeat(10_000).as_bytes(),
    );

    // Keys.
    let hex = "6730a595a1484d0c39c101dc0ac82ec5e401bb6f0e1b8ee2dc104a6b3687f017";
    put(
        &f,
        "key_text",
        "64KiB-of-separators",
        None,
        format!("{}{hex}", "-".repeat(64 << 10)).as_bytes(),
    );
    put(
        &f,
        "key_text",
        "fullwidth-digits",
        None,
        "０".repeat(64).as_bytes(),
    );
    put(
        &f,
        "key_text",
        "64Ki-hex-digits",
        None,
        "f".repeat(64 << 10).as_bytes(),
    );
    put(
        &f,
        "key_file",
        "java-prefix-only",
        None,
        &[0xac, 0xed, 0x00, 0x05, 0x75, 0x72, 0x00, 0x02, 0x5b, 0x42],
    );
    put(
        &f,
        "key_file",
        "invalid-utf8",
        None,
        &[0xff, 0xfe, b'6', b'7'],
    );
    put(&f, "envelope", "one-short-of-overhead", Some(0), &[0; 39]);

    // crypt15.
    put(&w, "crypt15", "empty", Some(0), &[]);
    put(
        &w,
        "crypt15",
        "header-len-255-short",
        Some(0),
        &[255, 1, 0x08, 0x01],
    );
    put(
        &w,
        "crypt15",
        "header-varint-overflow",
        Some(1),
        &[
            12, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    );
    put(&w, "crypt15", "header-iv-length-huge", Some(1), &{
        let mut v = vec![6, 0x1a, 0x04, 0x0a, 0xff, 0xff, 0x03];
        v.extend([0u8; 40]);
        v
    });
    put(&w, "crypt15", "sealed-empty-payload", Some(2), &[0]);
    put(
        &w,
        "crypt15",
        "sealed-empty-payload-multifile",
        Some(2),
        &[2],
    );
    let mut z = flate2::write::ZlibEncoder::new(vec![1u8], flate2::Compression::best());
    let zeros = vec![0u8; MIB];
    for _ in 0..16 {
        z.write_all(&zeros).unwrap();
    }
    put(
        &w,
        "crypt15",
        "sealed-zlib-bomb-16MiB",
        Some(2),
        &z.finish().unwrap(),
    );
    put(
        &w,
        "crypt15",
        "sealed-zlib-header-only",
        Some(2),
        &[1, 0x78, 0x01],
    );
    put(&w, "crypt15", "sealed-zlib-then-garbage", Some(2), &{
        let mut z = flate2::write::ZlibEncoder::new(vec![1u8], flate2::Compression::fast());
        z.write_all(b"SQLite format 3\0").unwrap();
        let mut v = z.finish().unwrap();
        v.extend_from_slice(b"garbage");
        v
    });
    // A multi-file layout whose zlib payload is complete: must not be taken as a database.
    put(&w, "crypt15", "sealed-zlib-multifile", Some(2), &{
        let mut z = flate2::write::ZlibEncoder::new(vec![3u8], flate2::Compression::fast());
        z.write_all(b"SQLite format 3\0").unwrap();
        z.finish().unwrap()
    });
    let _ = wa::FUZZ_KEY;
    eprintln!("nasty_inputs: written");
}
