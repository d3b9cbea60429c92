//! Every domain-separation label of the repository format, in one place.
//!
//! These strings are part of the on-disk format (docs/FORMAT.md §3 "Keys" and §4 "Envelopes"):
//! renaming one silently changes every derived key or associated-data string, so the golden test
//! at the bottom freezes them.

/// Magic bytes at the start of the `config` object (16 bytes).
pub const CONFIG_MAGIC: &[u8; 16] = b"chatvault-repo\0\0";

/// HKDF info for the key-check subkey (`K_check`).
pub const HKDF_KEY_CHECK: &str = "chatvault/v1/key-check";
/// HKDF info for the data (blob and pack header) encryption subkey (`K_data`).
pub const HKDF_DATA: &str = "chatvault/v1/data-encryption";
/// HKDF info for the metadata (config params, index, snapshot, lock) encryption subkey (`K_meta`).
pub const HKDF_METADATA: &str = "chatvault/v1/metadata-encryption";
/// HKDF info for the keyed-id subkey (`K_id`): BLAKE3 key for blob and object ids.
pub const HKDF_ID: &str = "chatvault/v1/object-id";
/// HKDF info for the chunker seed (`K_chunk`): 8 bytes, little-endian u64.
pub const HKDF_CHUNKER: &str = "chatvault/v1/chunker-seed";

/// Input prefix of the key-check value.
pub const KEY_CHECK_INPUT: &str = "chatvault/v1/key-check-value";

/// Associated-data label of the sealed config parameters.
pub const AD_CONFIG: &str = "chatvault/v1/config";
/// Associated-data label of a pack header.
pub const AD_PACK_HEADER: &str = "chatvault/v1/pack-header";
/// Associated-data label of a data blob (and its keyed-id domain).
pub const AD_BLOB_DATA: &str = "chatvault/v1/blob/data";
/// Associated-data label of a tree blob (and its keyed-id domain).
pub const AD_BLOB_TREE: &str = "chatvault/v1/blob/tree";
/// Associated-data label of an index object (and its keyed-id domain).
pub const AD_INDEX: &str = "chatvault/v1/index";
/// Associated-data label of a snapshot object (and its keyed-id domain).
pub const AD_SNAPSHOT: &str = "chatvault/v1/snapshot";
/// Associated-data label of a lock object.
pub const AD_LOCK: &str = "chatvault/v1/lock";
/// Associated-data label of a prune plan object (and its keyed-id domain).
pub const AD_PRUNE_PLAN: &str = "chatvault/v1/prune-plan";
/// Associated-data label of a rollback commitment (kept by the Backup Key Vault; docs/PROTOCOL.md).
pub const AD_COMMITMENT: &str = "chatvault/v1/commitment";
/// Associated-data label of a content-list blob (and its keyed-id domain): a piece of a large
/// file's list of data blob ids (docs/FORMAT.md §10.1).
pub const AD_BLOB_LIST: &str = "chatvault/v1/blob/list";
/// Associated-data label of a version 2 pack's trailer: where the sealed header starts
/// (docs/FORMAT.md §7).
pub const AD_PACK_TRAILER: &str = "chatvault/v1/pack-trailer";
/// Associated-data label of a device's merged index (local cache only, never in storage;
/// docs/FORMAT.md §12.3).
pub const AD_CACHE_INDEX: &str = "chatvault/v1/cache-index";
/// BLAKE3 key-derivation context of the envelope ids of a device's merged index segments (local
/// cache only; docs/FORMAT.md §12.3).
pub const DERIVE_CACHE_INDEX_SEGMENT: &str = "chatvault/v1/cache-index-segment";

/// Keyed-hash domain (§4.2) of the content-defined cut of a large tree into parts
/// (docs/FORMAT.md §10.2); the hashes are never stored.
pub const TREE_CUT: &str = "chatvault/v1/tree-cut";

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden test: these values are the format. Changing one requires a new format version.
    #[test]
    fn labels_are_frozen() {
        let all = [
            HKDF_KEY_CHECK,
            HKDF_DATA,
            HKDF_METADATA,
            HKDF_ID,
            HKDF_CHUNKER,
            KEY_CHECK_INPUT,
            AD_CONFIG,
            AD_PACK_HEADER,
            AD_BLOB_DATA,
            AD_BLOB_TREE,
            AD_INDEX,
            AD_SNAPSHOT,
            AD_LOCK,
        ];
        let joined = all.join("|");
        assert_eq!(
            blake3::hash(joined.as_bytes()).to_hex().as_str(),
            GOLDEN,
            "a format label changed: {joined}"
        );
        assert_eq!(CONFIG_MAGIC, b"chatvault-repo\0\0");
        // Added later (prune plans, rollback commitments): frozen separately so the original
        // set above keeps its golden value.
        let added = [AD_PRUNE_PLAN, AD_COMMITMENT].join("|");
        assert_eq!(
            blake3::hash(added.as_bytes()).to_hex().as_str(),
            GOLDEN_ADDED,
            "a format label changed: {added}"
        );
        assert_eq!(AD_BLOB_LIST, "chatvault/v1/blob/list");
        assert_eq!(AD_PACK_TRAILER, "chatvault/v1/pack-trailer");
        assert_eq!(AD_CACHE_INDEX, "chatvault/v1/cache-index");
        assert_eq!(
            DERIVE_CACHE_INDEX_SEGMENT,
            "chatvault/v1/cache-index-segment"
        );
        assert_eq!(TREE_CUT, "chatvault/v1/tree-cut");
    }

    const GOLDEN_ADDED: &str = "0226ecb8249995cc6b75604c8b33cb13006dff62ccda7c68ac16cbe4cfd5a8ed";

    const GOLDEN: &str = "29a886b601ead44c477de37434703e1cc742580dd9ce66cdaa14692ae16f9369";
}
