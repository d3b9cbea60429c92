//! `repo-stats REPO_DIR KEY_FILE`: where a chatvault repository's bytes go, as JSON.
//!
//! Reads every index object and snapshot (so it needs the key), walks every snapshot's trees,
//! and classifies the bytes on storage:
//! - `sqlite_pages`: sealed data blobs that are pages of a database stored as a consistent copy
//!   (referenced by a node with `sqlite_snapshot`), `other_data`: the rest (media chunks);
//! - `trees`: sealed tree blobs; `lists`: sealed list blobs (content lists of large files,
//!   FORMAT §10.1); `tree_nodes_largest`: the biggest content lists;
//! - `pack_overhead`: pack size minus its blobs (sealed pack header + length trailer);
//! - `index_objects`, `snapshot_objects`: file sizes on disk.
//!
//! `sealed` is what is on storage, `raw` the plaintext, `envelope` the 41 bytes per blob
//! (24-byte nonce, 16-byte tag, 1-byte compression flag). Run it before and after a backup and
//! subtract to see what the backup added.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::ExitCode;

use chatvault_format::blob::BlobType;
use chatvault_format::id::BlobId;
use chatvault_format::key::BackupKey;
use chatvault_format::objects::NodeKind;
use chatvault_repo::repository::{Index, Repository};
use chatvault_repo::storage::Storage;
use serde_json::json;

const ENVELOPE: u64 = 24 + 16 + 1;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 2 {
        eprintln!("usage: repo-stats REPO_DIR KEY_FILE");
        return ExitCode::from(2);
    }
    match run(&args[0], &args[1]) {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("repo-stats: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Default)]
struct Tally {
    count: u64,
    sealed: u64,
    raw: u64,
}

impl Tally {
    fn add(&mut self, sealed: u64, raw: u64) {
        self.count += 1;
        self.sealed += sealed;
        self.raw += raw;
    }
    fn json(&self) -> serde_json::Value {
        json!({"count": self.count, "sealed": self.sealed, "raw": self.raw,
               "envelope": self.count * ENVELOPE})
    }
}

fn run(repo_dir: &str, key_file: &str) -> Result<serde_json::Value, String> {
    let key_bytes = std::fs::read(key_file).map_err(|e| format!("{key_file}: {e}"))?;
    let key = BackupKey::from_key_file(&key_bytes).map_err(|e| format!("{key_file}: {e}"))?;
    let storage = Storage::open(repo_dir).map_err(|e| e.to_string())?;
    let repo = Repository::open(storage, &key).map_err(|e| e.to_string())?;
    let index = repo.load_index().map_err(|e| e.to_string())?;

    // Walk every snapshot: which data blobs are SQLite pages; the largest content lists.
    let mut sqlite_blobs: HashSet<BlobId> = HashSet::new();
    let mut seen_trees: HashSet<BlobId> = HashSet::new();
    let mut seen_lists: HashSet<BlobId> = HashSet::new();
    let mut big_nodes: Vec<serde_json::Value> = Vec::new();
    let mut snapshots = Vec::new();
    let mut all = Vec::new();
    for (id, snap) in repo.snapshots().map_err(|e| e.to_string())? {
        all.push((id, snap.map_err(|e| e.to_string())?));
    }
    all.sort_by(|a, b| a.1.time.cmp(&b.1.time)); // oldest first: later ones count only new trees
    for (id, snap) in all {
        let mut tree_bytes = Tally::default();
        let mut list_bytes = Tally::default();
        let mut w = Walk {
            sqlite_blobs: &mut sqlite_blobs,
            seen: &mut seen_trees,
            seen_lists: &mut seen_lists,
            big: &mut big_nodes,
            new_trees: &mut tree_bytes,
            new_lists: &mut list_bytes,
        };
        walk(&repo, &index, &snap.tree, "", &mut w)?;
        snapshots.push(
            json!({"id": id.to_string(), "time": snap.time, "seq": snap.seq,
                              "new_trees": tree_bytes.json(), "new_lists": list_bytes.json()}),
        );
    }

    let mut pages = Tally::default();
    let mut other = Tally::default();
    let mut trees = Tally::default();
    let mut lists = Tally::default();
    let mut in_pack: HashMap<_, u64> = HashMap::new();
    for (id, loc) in index.iter() {
        let (sealed, raw) = (u64::from(loc.length), u64::from(loc.raw_length));
        *in_pack.entry(loc.pack).or_default() += sealed;
        match loc.ty {
            BlobType::Tree => trees.add(sealed, raw),
            BlobType::List => lists.add(sealed, raw),
            BlobType::Data if sqlite_blobs.contains(&id) => pages.add(sealed, raw),
            BlobType::Data => other.add(sealed, raw),
        }
    }
    let packs_bytes: u64 = index.packs.values().sum();
    let blobs_bytes: u64 = in_pack.values().sum();
    let folder = |name: &str| -> (u64, u64) {
        let mut n = 0;
        let mut bytes = 0;
        for e in std::fs::read_dir(Path::new(repo_dir).join(name))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(m) = e.metadata()
                && m.is_file()
            {
                n += 1;
                bytes += m.len();
            }
        }
        (n, bytes)
    };
    let (idx_n, idx_b) = folder("index");
    let (snap_n, snap_b) = folder("snapshots");
    big_nodes.sort_by_key(|v| std::cmp::Reverse(v["content_ids"].as_u64().unwrap_or(0)));
    big_nodes.truncate(8);
    Ok(json!({
        "sqlite_pages": pages.json(),
        "other_data": other.json(),
        "trees": trees.json(),
        "lists": lists.json(),
        "packs": {"count": index.packs.len(), "bytes": packs_bytes,
                  "overhead": packs_bytes - blobs_bytes},
        "index_objects": {"count": idx_n, "bytes": idx_b},
        "snapshot_objects": {"count": snap_n, "bytes": snap_b},
        "snapshots": snapshots,
        "largest_content_lists": big_nodes,
    }))
}

struct Walk<'a> {
    sqlite_blobs: &'a mut HashSet<BlobId>,
    seen: &'a mut HashSet<BlobId>,
    seen_lists: &'a mut HashSet<BlobId>,
    big: &'a mut Vec<serde_json::Value>,
    new_trees: &'a mut Tally,
    new_lists: &'a mut Tally,
}

fn walk(
    repo: &Repository,
    index: &Index,
    tree_id: &BlobId,
    path: &str,
    w: &mut Walk<'_>,
) -> Result<(), String> {
    if !w.seen.insert(*tree_id) {
        return Ok(()); // shared with an earlier snapshot: neither new nor walked again
    }
    let loc = index.get(tree_id).ok_or("tree not in index")?;
    w.new_trees
        .add(u64::from(loc.length), u64::from(loc.raw_length));
    // A large folder's tree in parts (FORMAT §10.2): the parts not seen before are new too.
    let loaded = repo
        .load_tree_full(index, tree_id)
        .map_err(|e| e.to_string())?;
    for part in &loaded.parts {
        if w.seen.insert(*part) {
            let l = index.get(part).ok_or("tree part not in index")?;
            w.new_trees.add(u64::from(l.length), u64::from(l.raw_length));
        }
    }
    let tree = loaded.tree;
    for node in &tree.nodes {
        let name = format!("{path}/{}", String::from_utf8_lossy(&node.name.0));
        match &node.kind {
            NodeKind::File {
                content,
                lists,
                sqlite_snapshot,
                size,
                ..
            } => {
                // Only list blobs not seen in an earlier snapshot are new (and walked).
                let mut new_lists = Vec::new();
                let ids = if lists.is_empty() {
                    content.clone()
                } else {
                    let seen_lists = &mut *w.seen_lists;
                    repo.walk_lists(index, lists, |id| {
                        let fresh = seen_lists.insert(*id);
                        if fresh {
                            new_lists.push(*id);
                        }
                        fresh
                    })
                    .map_err(|e| e.to_string())?
                };
                for id in &new_lists {
                    if let Some(l) = index.get(id) {
                        w.new_lists
                            .add(u64::from(l.length), u64::from(l.raw_length));
                    }
                }
                if *sqlite_snapshot {
                    w.sqlite_blobs.extend(ids.iter().copied());
                }
                if content.len() >= 1000 || !lists.is_empty() {
                    w.big.push(
                        json!({"tree": tree_id.to_string(), "path": name, "size": size,
                                      "content_ids": content.len(), "lists": lists.len(),
                                      "tree_raw": loc.raw_length, "tree_sealed": loc.length}),
                    );
                }
            }
            NodeKind::Dir { subtree } => walk(repo, index, subtree, &name, w)?,
            NodeKind::Symlink { .. } => {}
        }
    }
    Ok(())
}
