//! From a location to an OpenDAL operator: local folders, `memory://` and the cloud URL
//! schemes (each behind its cargo feature, built by [`super::http`]), the settings and
//! credentials they read (explicit values, then the environment), and the retry, timeout and
//! part-size tuning every backend gets.

use std::time::Duration;

use opendal::Operator;

#[cfg(feature = "_http")]
use super::http;
use crate::error::{RepoError, Result};

/// URL schemes and the cargo feature (of `chatvault-cli` and `chatvault-repo`) that builds each.
pub(super) const CLOUD_SCHEMES: &[(&str, &str)] = &[
    ("s3", "s3"),
    ("gcs", "gcs"),
    ("azblob", "azblob"),
    ("gdrive", "gdrive"),
    ("onedrive", "onedrive"),
    ("dropbox", "dropbox"),
    ("webdav", "webdav"),
    ("webdav+https", "webdav"),
    ("webdav+http", "webdav"),
];

/// What [`Storage::open`] builds before the common layers are added.
pub(super) struct Built {
    pub(super) op: Operator,
    pub(super) display: String,
    pub(super) scheme: &'static str,
    pub(super) secrets: Vec<String>,
}

/// Robustness settings shared by all backends.
pub(super) struct Tuning {
    pub(super) attempts: usize,
    pub(super) first_delay: Duration,
    pub(super) timeout: Duration,
    pub(super) io_timeout: Duration,
    pub(super) part_size: usize,
}

/// Where settings and credentials come from: explicit values first (an empty value: unset),
/// then the environment.
#[derive(Clone, Default)]
pub(super) struct Settings {
    pub(super) explicit: Vec<(String, String)>,
}

impl Settings {
    pub(super) fn get(&self, name: &str) -> Option<String> {
        // The last value given for a name wins.
        match self.explicit.iter().rev().find(|(k, _)| k == name) {
            Some((_, v)) => Some(v.clone()).filter(|v| !v.trim().is_empty()),
            None => env_nonempty(name),
        }
    }
}

impl Tuning {
    pub(super) fn from_settings(settings: &Settings) -> Result<Tuning> {
        let env_nonempty = |name: &str| settings.get(name);
        let attempts = match env_nonempty("CHATVAULT_STORAGE_ATTEMPTS") {
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| {
                    RepoError::Invalid(format!(
                        "CHATVAULT_STORAGE_ATTEMPTS={v:?}: expected a number from 1 to 100"
                    ))
                })?,
            None => 5,
        };
        let first_delay = match env_nonempty("CHATVAULT_STORAGE_RETRY_DELAY_MS") {
            Some(v) => Duration::from_millis(v.parse::<u64>().map_err(|_| {
                RepoError::Invalid(format!(
                    "CHATVAULT_STORAGE_RETRY_DELAY_MS={v:?}: expected milliseconds"
                ))
            })?),
            None => Duration::from_secs(1),
        };
        let (timeout, io_timeout) = match env_nonempty("CHATVAULT_STORAGE_TIMEOUT") {
            Some(v) => {
                let s = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| {
                        RepoError::Invalid(format!(
                            "CHATVAULT_STORAGE_TIMEOUT={v:?}: expected seconds"
                        ))
                    })?;
                (Duration::from_secs_f64(s), Duration::from_secs_f64(s))
            }
            None => (Duration::from_secs(60), Duration::from_secs(120)),
        };
        let part_size = match env_nonempty("CHATVAULT_S3_PART_SIZE") {
            Some(v) => parse_size(&v).ok_or_else(|| {
                RepoError::Invalid(format!(
                    "CHATVAULT_S3_PART_SIZE={v:?}: expected a size such as 5MiB or 8388608"
                ))
            })?,
            None => 8 << 20,
        };
        Ok(Tuning {
            attempts,
            first_delay,
            timeout,
            io_timeout,
            part_size,
        })
    }
}

pub(super) fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `8388608`, `5M`, `5MiB`, `512K`, `5MB` (binary units).
pub(super) fn parse_size(v: &str) -> Option<usize> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult).filter(|n| *n > 0)
}

pub(super) fn bad_location(location: &str, e: opendal::Error) -> RepoError {
    RepoError::Invalid(format!("cannot use repository location {location:?}: {e}"))
}

/// Builds the operator for `location` (no layers yet).
pub(super) fn build(location: &str, settings: &Settings) -> Result<Built> {
    if let Some(rest) = location.strip_prefix("memory://") {
        let b = opendal::services::Memory::default().root(&format!("/{rest}"));
        return Ok(Built {
            op: Operator::new(b).map_err(|e| bad_location(location, e))?,
            display: location.to_string(),
            scheme: "memory",
            secrets: Vec::new(),
        });
    }
    if let Some((scheme, rest)) = location.split_once("://")
        && scheme != "file"
    {
        return build_cloud(location, &scheme.to_ascii_lowercase(), rest, settings);
    }
    let path = location.strip_prefix("file://").unwrap_or(location);
    if path.is_empty() {
        return Err(RepoError::Invalid("empty repository location".into()));
    }
    let abs = std::path::absolute(path)
        .map_err(|e| RepoError::io("resolving the repository path", path, e))?;
    let root = abs.to_string_lossy().into_owned();
    // Objects are written under tmp/ and renamed into place, so a crash never leaves a partial
    // object under its final name.
    let b = opendal::services::Fs::default()
        .root(&root)
        .atomic_write_dir(&format!("{root}/tmp"));
    Ok(Built {
        op: Operator::new(b).map_err(|e| bad_location(location, e))?,
        display: root,
        scheme: "fs",
        secrets: Vec::new(),
    })
}

/// `scheme://AUTHORITY/PATH` split into parts, with credentials in the URL refused.
#[cfg_attr(not(feature = "_http"), allow(dead_code))]
pub(super) struct CloudUrl<'a> {
    /// Bucket, container or host (may be empty for drive-style URLs).
    pub(super) authority: &'a str,
    /// Path after the authority, without leading or trailing `/`.
    pub(super) path: &'a str,
}

impl CloudUrl<'_> {
    /// OpenDAL root: `/path/` (or `/`).
    #[cfg_attr(
        not(any(
            feature = "s3",
            feature = "gcs",
            feature = "azblob",
            feature = "webdav"
        )),
        allow(dead_code)
    )]
    pub(super) fn root(&self) -> String {
        if self.path.is_empty() {
            "/".to_string()
        } else {
            format!("/{}/", self.path)
        }
    }
}

pub(super) fn build_cloud(
    location: &str,
    scheme: &str,
    rest: &str,
    settings: &Settings,
) -> Result<Built> {
    let Some(&(_, feature)) = CLOUD_SCHEMES.iter().find(|(s, _)| *s == scheme) else {
        let known: Vec<&str> = CLOUD_SCHEMES.iter().map(|(s, _)| *s).collect();
        return Err(RepoError::Invalid(format!(
            "unsupported repository URL scheme {scheme:?} in {location:?}: use a local path, \
             file://, memory:// or one of {}://",
            known.join("://, ")
        )));
    };
    if rest.contains(['?', '#']) {
        return Err(RepoError::Invalid(format!(
            "repository URL {location:?}: query strings and fragments are not supported; \
             backend options come from environment variables (README \"Storage backends\")"
        )));
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err(RepoError::Invalid(format!(
            "repository URL for {scheme}:// must not contain credentials (user@ or user:password@): \
             they would be saved in the device configuration and shown in messages; set them in \
             environment variables instead (README \"Storage backends\")"
        )));
    }
    let url = CloudUrl {
        authority,
        path: path.trim_matches('/'),
    };
    build_backend(location, scheme, feature, &url, settings)
}

#[cfg(not(feature = "_http"))]
pub(super) fn build_backend(
    location: &str,
    scheme: &str,
    feature: &str,
    _url: &CloudUrl<'_>,
    _settings: &Settings,
) -> Result<Built> {
    Err(not_compiled(location, scheme, feature))
}

pub(super) fn not_compiled(location: &str, scheme: &str, feature: &str) -> RepoError {
    RepoError::Invalid(format!(
        "{location:?}: the {scheme}:// backend is not compiled into this build of chatvault; \
         rebuild with the cargo feature `{feature}` (e.g. `cargo install --path crates/chatvault-cli \
         --features {feature}`, or `--features all-backends`)"
    ))
}

#[cfg(feature = "_http")]
pub(super) fn build_backend(
    location: &str,
    scheme: &str,
    feature: &str,
    url: &CloudUrl<'_>,
    settings: &Settings,
) -> Result<Built> {
    http::init()?;
    let mut creds = http::Creds::load(settings)?;
    let built = match scheme {
        #[cfg(feature = "s3")]
        "s3" => http::s3(location, url, &mut creds)?,
        #[cfg(feature = "gcs")]
        "gcs" => http::gcs(location, url, &mut creds)?,
        #[cfg(feature = "azblob")]
        "azblob" => http::azblob(location, url, &mut creds)?,
        #[cfg(feature = "gdrive")]
        "gdrive" => http::token_drive(location, url, &mut creds, "gdrive")?,
        #[cfg(feature = "onedrive")]
        "onedrive" => http::token_drive(location, url, &mut creds, "onedrive")?,
        #[cfg(feature = "dropbox")]
        "dropbox" => http::token_drive(location, url, &mut creds, "dropbox")?,
        #[cfg(feature = "webdav")]
        "webdav" | "webdav+http" | "webdav+https" => {
            http::webdav(location, scheme, url, &mut creds)?
        }
        _ => return Err(not_compiled(location, scheme, feature)),
    };
    Ok(Built {
        secrets: creds.secrets,
        ..built
    })
}
