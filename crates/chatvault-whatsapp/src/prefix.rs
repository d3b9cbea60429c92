//! The cleartext header in front of the ciphertext (FORMAT-crypt15.md, "Header").
//!
//! `[len: u8] [0x01 if a msgstore feature table follows]? [BackupPrefix protobuf: len bytes]`.
//! The protobuf messages are declared by hand with `prost` derives; field numbers follow
//! wa-crypt-tools' reading of WhatsApp's schema (research.md, "WhatsApp crypt15").

use std::collections::BTreeMap;

use crate::error::Error;

/// Byte after the length byte that announces a msgstore feature table.
pub(crate) const FEATURE_TABLE_FLAG: u8 = 0x01;

/// `key_type` value of backups encrypted with the 64-digit key, in the deprecated field 1
/// (WhatsApp's `E2EE_DEPRECATED`, formerly `HSM_CONTROLLED`).
pub(crate) const KEY_TYPE_E2EE: i32 = 1;
/// `key_type_new` (field 6) value of backups encrypted with the 64-digit key, as written by
/// WhatsApp 2.26 (`E2EE_ENCRYPTION_KEY`).
pub(crate) const KEY_TYPE_E2EE_ENCRYPTION_KEY: i32 = 3;

/// Length of the AES-GCM IV carried in the header.
pub(crate) const IV_LEN: usize = 16;

/// `BackupPrefix`, the top-level header message.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct BackupPrefix {
    /// Field 1, `key_type` (deprecated but still written): 1 for crypt15.
    #[prost(int32, optional, tag = 1)]
    pub key_type: Option<i32>,
    /// Field 2, crypt14's cipher data (kept opaque: only its presence matters here).
    #[prost(bytes = "vec", optional, tag = 2)]
    pub crypt14_data: Option<Vec<u8>>,
    /// Field 3, crypt15's key data: the IV.
    #[prost(message, optional, tag = 3)]
    pub e2ee_key_data: Option<C15Iv>,
    /// Field 4, app version and feature flags.
    #[prost(message, optional, tag = 4)]
    pub info: Option<BackupInfo>,
    /// Field 5, passkey metadata (kept opaque).
    #[prost(bytes = "vec", optional, tag = 5)]
    pub passkey_metadata: Option<Vec<u8>>,
    /// Field 6, `key_type_new`: 3 (`E2EE_ENCRYPTION_KEY`) in recent backups.
    #[prost(int32, optional, tag = 6)]
    pub key_type_new: Option<i32>,
}

/// `C15_IV`: the 16-byte AES-GCM IV, field 1.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct C15Iv {
    #[prost(bytes = "vec", tag = 1)]
    pub iv: Vec<u8>,
}

macro_rules! backup_info {
    ($($field:ident = $tag:literal),* $(,)?) => {
        /// `BackupExpiry` (field 4 of the prefix): app version, the last two digits of the
        /// phone number, the backup version and msgstore feature flags 5..=37, 39, 40.
        #[derive(Clone, PartialEq, prost::Message)]
        pub(crate) struct BackupInfo {
            #[prost(string, tag = 1)]
            pub app_version: String,
            #[prost(string, tag = 3)]
            pub jid_suffix: String,
            #[prost(int32, optional, tag = 4)]
            pub backup_version: Option<i32>,
            $(
                #[prost(bool, optional, tag = $tag)]
                pub $field: Option<bool>,
            )*
        }

        /// Field numbers of the feature flags this crate knows.
        pub(crate) const FEATURE_TAGS: &[u32] = &[$($tag),*];

        impl BackupInfo {
            pub(crate) fn feature_flags(&self) -> BTreeMap<u32, bool> {
                let mut flags = BTreeMap::new();
                $(
                    if let Some(v) = self.$field {
                        flags.insert($tag, v);
                    }
                )*
                flags
            }

            /// Sets the flags; the caller has checked every key is in `FEATURE_TAGS`.
            pub(crate) fn set_feature_flags(&mut self, flags: &BTreeMap<u32, bool>) {
                $(
                    self.$field = flags.get(&$tag).copied();
                )*
            }
        }
    };
}

backup_info!(
    f5 = 5,
    f6 = 6,
    f7 = 7,
    f8 = 8,
    f9 = 9,
    f10 = 10,
    f11 = 11,
    f12 = 12,
    f13 = 13,
    f14 = 14,
    f15 = 15,
    f16 = 16,
    f17 = 17,
    f18 = 18,
    f19 = 19,
    f20 = 20,
    f21 = 21,
    f22 = 22,
    f23 = 23,
    f24 = 24,
    f25 = 25,
    f26 = 26,
    f27 = 27,
    f28 = 28,
    f29 = 29,
    f30 = 30,
    f31 = 31,
    f32 = 32,
    f33 = 33,
    f34 = 34,
    f35 = 35,
    f36 = 36,
    f37 = 37,
    f39 = 39,
    f40 = 40,
);

/// What the cleartext header of a crypt15 backup says, as parsed.
///
/// Nothing here is secret, but nothing here is authenticated either: the header is covered
/// only by the MD5 trailer, not by the AES-GCM tag (it is not used as associated data).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupHeader {
    /// Whether the `0x01` feature-table byte follows the length byte (msgstore backups).
    pub feature_table: bool,
    /// Field 1, `key_type` (1 for the 64-digit key).
    pub key_type: Option<i32>,
    /// Field 6, `key_type_new` (3 for the 64-digit key in recent app versions).
    pub key_type_new: Option<i32>,
    /// The WhatsApp version that wrote the backup, e.g. `2.22.5.13` (empty if absent).
    pub app_version: String,
    /// The last two digits of the account's phone number (empty if absent).
    pub jid_suffix: String,
    /// `backup_version`, if present.
    pub backup_version: Option<i32>,
    /// Feature flags present in the header, by field number (5..=37, 39, 40).
    pub feature_flags: BTreeMap<u32, bool>,
}

/// A parsed header: where the ciphertext starts and which IV it uses.
pub(crate) struct ParsedHeader {
    /// Bytes from the start of the file to the first ciphertext byte.
    pub len: usize,
    pub iv: [u8; IV_LEN],
    pub header: BackupHeader,
}

/// Longest header: the length byte, the flag, 255 bytes of protobuf.
pub(crate) const MAX_HEADER_LEN: usize = 2 + 255;

/// Parses the header from the first bytes of a file (`buf` holds at least
/// `min(file length, MAX_HEADER_LEN)` bytes).
pub(crate) fn parse(buf: &[u8]) -> Result<ParsedHeader, Error> {
    use prost::Message;

    const PART: &str = "header";
    let (&len, rest) = buf.split_first().ok_or(Error::Truncated { part: PART })?;
    let len = usize::from(len);
    let first = *rest.first().ok_or(Error::Truncated { part: PART })?;
    // A protobuf cannot start with 0x01 (field number 0), so the flag is unambiguous.
    let feature_table = first == FEATURE_TABLE_FLAG;
    let start = if feature_table { 2 } else { 1 };
    let end = start + len;
    let raw = buf.get(start..end).ok_or(Error::Truncated { part: PART })?;
    let prefix = BackupPrefix::decode(raw)
        .map_err(|e| Error::corrupted_by("the header protobuf does not parse", e))?;

    let Some(key_data) = prefix.e2ee_key_data else {
        if prefix.crypt14_data.is_some() {
            return Err(Error::UnsupportedFormat {
                what: "crypt14 (a WhatsApp-held key); only crypt15 is supported",
            });
        }
        return Err(Error::corrupted("the header carries no IV"));
    };
    check_key_type(prefix.key_type, prefix.key_type_new)?;
    let iv: [u8; IV_LEN] = key_data.iv.as_slice().try_into().map_err(|_| {
        Error::corrupted(format!(
            "the header's IV is {} bytes, expected {IV_LEN}",
            key_data.iv.len()
        ))
    })?;
    let info = prefix.info.unwrap_or_default();
    Ok(ParsedHeader {
        len: end,
        iv,
        header: BackupHeader {
            feature_table,
            key_type: prefix.key_type,
            key_type_new: prefix.key_type_new,
            feature_flags: info.feature_flags(),
            app_version: info.app_version,
            jid_suffix: info.jid_suffix,
            backup_version: info.backup_version,
        },
    })
}

/// Accepts the two spellings of "the 64-digit key" and nothing else.
fn check_key_type(key_type: Option<i32>, key_type_new: Option<i32>) -> Result<(), Error> {
    match key_type_new {
        None | Some(KEY_TYPE_E2EE) | Some(KEY_TYPE_E2EE_ENCRYPTION_KEY) => {}
        Some(other) => return Err(Error::UnsupportedKeyType { key_type: other }),
    }
    match (key_type, key_type_new) {
        (Some(KEY_TYPE_E2EE), _) | (None, Some(_)) => Ok(()),
        (Some(other), _) => Err(Error::UnsupportedKeyType { key_type: other }),
        // Neither field: proto3's default, 0 (a WhatsApp-held key).
        (None, None) => Err(Error::UnsupportedKeyType { key_type: 0 }),
    }
}

/// Serializes a header: length byte, optional flag, protobuf.
pub(crate) fn serialize(
    iv: &[u8; IV_LEN],
    feature_table: bool,
    info: BackupInfo,
) -> Result<Vec<u8>, Error> {
    use prost::Message;

    let prefix = BackupPrefix {
        key_type: Some(KEY_TYPE_E2EE),
        crypt14_data: None,
        e2ee_key_data: Some(C15Iv { iv: iv.to_vec() }),
        info: Some(info),
        passkey_metadata: None,
        key_type_new: None,
    };
    let body = prefix.encode_to_vec();
    let len = u8::try_from(body.len()).map_err(|_| Error::InvalidOptions {
        reason: format!(
            "the header protobuf would be {} bytes; the format allows at most 255",
            body.len()
        )
        .into(),
    })?;
    let mut out = Vec::with_capacity(2 + body.len());
    out.push(len);
    if feature_table {
        out.push(FEATURE_TABLE_FLAG);
    }
    out.extend_from_slice(&body);
    Ok(out)
}
