//! The cloud backends: one HTTP client (reqwest on rustls/ring) shared by all of them.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

#[allow(unused_imports)]
use opendal::Operator;

#[allow(unused_imports)]
use super::backends::{Built, CloudUrl, Settings, bad_location};
use crate::error::{RepoError, Result};

/// Installs the TLS provider and the process-wide HTTP transport once.
pub(super) fn init() -> Result<()> {
    static INIT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        // Another component may have installed a provider already; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot start the HTTPS client: {e}"))?;
        opendal::HttpTransporter::install_default(Counted(
            opendal_http_transport_reqwest::ReqwestTransport::new(client),
        ));
        Ok(())
    })
    .clone()
    .map_err(RepoError::Invalid)
}

/// The HTTP transport, counting requests (by method, and part uploads) for
/// [`super::stats()`].
struct Counted(opendal_http_transport_reqwest::ReqwestTransport);

impl opendal::HttpTransport for Counted {
    fn fetch(
        &self,
        req: http::Request<opendal::Buffer>,
    ) -> impl Future<Output = opendal::Result<http::Response<opendal::HttpBody>>> + Send {
        let c = &super::stats::COUNTERS;
        let method = req.method().as_str();
        let slot = super::stats::HTTP_METHODS
            .iter()
            .position(|m| *m == method)
            .unwrap_or(super::stats::HTTP_METHODS.len());
        super::stats::count(&c.http[slot]);
        // S3 and GCS multipart parts, Azure blocks, GCS resumable-upload chunks.
        let query = req.uri().query().unwrap_or("");
        if method == "PUT"
            && ["partNumber=", "blockid=", "upload_id="]
                .iter()
                .any(|k| query.contains(k))
        {
            super::stats::count(&c.part_uploads);
        }
        self.0.fetch(req)
    }
}

/// Credential lookup: the environment first, then `CHATVAULT_CREDENTIALS_FILE` (lines of
/// `NAME=VALUE`, `#` comments, optional `export ` prefix and quotes). Every secret value
/// handed out is remembered so error messages can be scrubbed.
pub(super) struct Creds {
    settings: Settings,
    file: HashMap<String, String>,
    pub(super) secrets: Vec<String>,
}

impl Creds {
    pub(super) fn load(settings: &Settings) -> Result<Creds> {
        let mut file = HashMap::new();
        if let Some(path) = settings.get("CHATVAULT_CREDENTIALS_FILE") {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                RepoError::io(
                    "reading the credentials file (CHATVAULT_CREDENTIALS_FILE)",
                    &path,
                    e,
                )
            })?;
            for line in text.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let line = line.strip_prefix("export ").unwrap_or(line);
                if let Some((k, v)) = line.split_once('=') {
                    let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
                    file.insert(k.trim().to_string(), v.to_string());
                }
            }
        }
        Ok(Creds {
            settings: settings.clone(),
            file,
            secrets: Vec::new(),
        })
    }

    /// A non-secret setting (region, endpoint, account name, client id).
    pub(super) fn get(&self, name: &str) -> Option<String> {
        self.settings
            .get(name)
            .or_else(|| self.file.get(name).filter(|v| !v.is_empty()).cloned())
    }

    /// A secret: remembered for scrubbing.
    pub(super) fn secret(&mut self, name: &str) -> Option<String> {
        let v = self.get(name)?;
        self.secrets.push(v.clone());
        Some(v)
    }

    /// The first of `names` that is set.
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    pub(super) fn first(&self, names: &[&str]) -> Option<String> {
        names.iter().find_map(|n| self.get(n))
    }
}

#[allow(dead_code)]
fn need_authority(location: &str, url: &CloudUrl<'_>, what: &str) -> Result<()> {
    if url.authority.is_empty() {
        return Err(RepoError::Invalid(format!(
            "repository URL {location:?} names no {what} (expected scheme://{what}/prefix)"
        )));
    }
    Ok(())
}

#[allow(dead_code)]
fn missing(location: &str, what: &str) -> RepoError {
    RepoError::Invalid(format!(
        "cannot use {location}: {what} (README \"Storage backends\")"
    ))
}

#[cfg(feature = "s3")]
pub(super) fn s3(location: &str, url: &CloudUrl<'_>, creds: &mut Creds) -> Result<Built> {
    need_authority(location, url, "bucket")?;
    let bucket = url.authority;
    let endpoint = creds
        .first(&[
            "AWS_ENDPOINT_URL_S3",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT",
            "AWS_S3_ENDPOINT",
        ])
        .map(|e| e.trim_end_matches('/').to_string());
    let region = match creds.first(&["AWS_REGION", "AWS_DEFAULT_REGION"]) {
        Some(r) => r,
        // Most S3-compatible servers ignore the region but need one for signing.
        None if endpoint.is_some() => "us-east-1".to_string(),
        None => {
            return Err(missing(
                location,
                "no AWS region: set AWS_REGION (e.g. eu-central-1)",
            ));
        }
    };
    // Virtual-host style on AWS (path style is deprecated there) unless the bucket name has
    // dots (TLS wildcard certificates do not match them); path style on custom endpoints,
    // which is what S3-compatible servers (MinIO, Ceph, Garage, moto, …) support everywhere.
    let virtual_host = match creds.get("CHATVAULT_S3_VIRTUAL_HOST").as_deref() {
        Some("1" | "true" | "yes") => true,
        Some("0" | "false" | "no") => false,
        Some(v) => {
            return Err(missing(
                location,
                &format!("CHATVAULT_S3_VIRTUAL_HOST={v:?}: expected 1 or 0"),
            ));
        }
        None => endpoint.is_none() && !bucket.contains('.'),
    };
    let mut b = opendal::services::S3::default()
        .bucket(bucket)
        .root(&url.root())
        .region(&region);
    if let Some(e) = &endpoint {
        b = b.endpoint(e);
        // No instance metadata service behind a custom endpoint: do not wait for one.
        b = b.disable_ec2_metadata();
    }
    if virtual_host {
        b = b.enable_virtual_host_style();
    }
    if let (Some(ak), Some(sk)) = (
        creds.get("AWS_ACCESS_KEY_ID"),
        creds.secret("AWS_SECRET_ACCESS_KEY"),
    ) {
        b = b.access_key_id(&ak).secret_access_key(&sk);
        if let Some(t) = creds.secret("AWS_SESSION_TOKEN") {
            b = b.session_token(&t);
        }
    }
    if let Some(p) = creds.get("AWS_PROFILE") {
        b = b.profile(&p);
    }
    Ok(Built {
        op: Operator::new(b).map_err(|e| bad_location(location, e))?,
        display: format!("s3://{bucket}/{}", url.path),
        scheme: "s3",
        secrets: Vec::new(),
    })
}

#[cfg(feature = "gcs")]
pub(super) fn gcs(location: &str, url: &CloudUrl<'_>, creds: &mut Creds) -> Result<Built> {
    need_authority(location, url, "bucket")?;
    let mut b = opendal::services::Gcs::default()
        .bucket(url.authority)
        .root(&url.root());
    if let Some(p) = creds.get("GOOGLE_APPLICATION_CREDENTIALS") {
        b = b.credential_path(&p);
    }
    if let Some(t) = creds.secret("CHATVAULT_GCS_TOKEN") {
        b = b.token(t);
    }
    if let Some(e) = creds.get("CHATVAULT_GCS_ENDPOINT") {
        b = b.endpoint(&e);
        // An emulator or proxy: no VM metadata service to ask for a token (its address is
        // not on this machine, and waiting for it would only delay a clear error).
        b = b.disable_vm_metadata();
    }
    Ok(Built {
        op: Operator::new(b).map_err(|e| bad_location(location, e))?,
        display: format!("gcs://{}/{}", url.authority, url.path),
        scheme: "gcs",
        secrets: Vec::new(),
    })
}

#[cfg(feature = "azblob")]
pub(super) fn azblob(location: &str, url: &CloudUrl<'_>, creds: &mut Creds) -> Result<Built> {
    need_authority(location, url, "container")?;
    let mut b = match creds.secret("AZURE_STORAGE_CONNECTION_STRING") {
        Some(cs) => opendal::services::Azblob::from_connection_string(&cs).map_err(|_| {
            missing(
                location,
                "AZURE_STORAGE_CONNECTION_STRING is not a valid connection string",
            )
        })?,
        None => {
            let account = creds.get("AZURE_STORAGE_ACCOUNT");
            let endpoint = creds.get("AZURE_STORAGE_ENDPOINT").or_else(|| {
                account
                    .as_ref()
                    .map(|a| format!("https://{a}.blob.core.windows.net"))
            });
            let Some(endpoint) = endpoint else {
                return Err(missing(
                    location,
                    "set AZURE_STORAGE_ACCOUNT (and AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN), \
                     or AZURE_STORAGE_CONNECTION_STRING",
                ));
            };
            let mut b = opendal::services::Azblob::default().endpoint(&endpoint);
            if let Some(a) = &account {
                b = b.account_name(a);
            }
            if let Some(k) = creds.secret("AZURE_STORAGE_KEY") {
                b = b.account_key(&k);
            }
            if let Some(s) = creds.secret("AZURE_STORAGE_SAS_TOKEN") {
                b = b.sas_token(&s);
            }
            b
        }
    };
    b = b.container(url.authority).root(&url.root());
    Ok(Built {
        op: Operator::new(b).map_err(|e| bad_location(location, e))?,
        display: format!("azblob://{}/{}", url.authority, url.path),
        scheme: "azblob",
        secrets: Vec::new(),
    })
}

/// Google Drive, OneDrive and Dropbox: OAuth tokens from `CHATVAULT_<SERVICE>_…`.
#[cfg(any(feature = "gdrive", feature = "onedrive", feature = "dropbox"))]
pub(super) fn token_drive(
    location: &str,
    url: &CloudUrl<'_>,
    creds: &mut Creds,
    service: &'static str,
) -> Result<Built> {
    // gdrive://Backups/chat: the "authority" is the first folder.
    let path = [url.authority, url.path]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/");
    let root = if path.is_empty() {
        "/".to_string()
    } else {
        format!("/{path}/")
    };
    let up = service.to_ascii_uppercase();
    let access = creds.secret(&format!("CHATVAULT_{up}_ACCESS_TOKEN"));
    let refresh = creds.secret(&format!("CHATVAULT_{up}_REFRESH_TOKEN"));
    let client_id = creds.get(&format!("CHATVAULT_{up}_CLIENT_ID"));
    let client_secret = creds.secret(&format!("CHATVAULT_{up}_CLIENT_SECRET"));
    if access.is_none() && refresh.is_none() {
        return Err(missing(
            location,
            &format!(
                "set CHATVAULT_{up}_REFRESH_TOKEN with CHATVAULT_{up}_CLIENT_ID and \
                 CHATVAULT_{up}_CLIENT_SECRET (or a short-lived CHATVAULT_{up}_ACCESS_TOKEN)"
            ),
        ));
    }
    if refresh.is_some() && (client_id.is_none() || client_secret.is_none()) {
        return Err(missing(
            location,
            &format!(
                "CHATVAULT_{up}_REFRESH_TOKEN needs CHATVAULT_{up}_CLIENT_ID and CHATVAULT_{up}_CLIENT_SECRET"
            ),
        ));
    }
    macro_rules! oauth {
        ($b:expr) => {{
            let mut b = $b.root(&root);
            if let Some(t) = &access {
                b = b.access_token(t);
            }
            if let Some(t) = &refresh {
                b = b.refresh_token(t);
            }
            if let Some(c) = &client_id {
                b = b.client_id(c);
            }
            if let Some(c) = &client_secret {
                b = b.client_secret(c);
            }
            Operator::new(b).map_err(|e| bad_location(location, e))?
        }};
    }
    let op = match service {
        #[cfg(feature = "gdrive")]
        "gdrive" => oauth!(opendal::services::Gdrive::default()),
        #[cfg(feature = "onedrive")]
        "onedrive" => oauth!(opendal::services::Onedrive::default()),
        #[cfg(feature = "dropbox")]
        "dropbox" => oauth!(opendal::services::Dropbox::default()),
        _ => unreachable!("token_drive called for {service}"),
    };
    Ok(Built {
        op,
        display: format!("{service}://{path}"),
        scheme: service,
        secrets: Vec::new(),
    })
}

#[cfg(feature = "webdav")]
pub(super) fn webdav(
    location: &str,
    scheme: &str,
    url: &CloudUrl<'_>,
    creds: &mut Creds,
) -> Result<Built> {
    need_authority(location, url, "host")?;
    let https = scheme == "webdav+https";
    let endpoint = format!(
        "{}://{}",
        if https { "https" } else { "http" },
        url.authority
    );
    let mut b = opendal::services::Webdav::default()
        .endpoint(&endpoint)
        .root(&url.root());
    if let Some(u) = creds.get("CHATVAULT_WEBDAV_USERNAME") {
        b = b.username(&u);
    }
    if let Some(p) = creds.secret("CHATVAULT_WEBDAV_PASSWORD") {
        if !https {
            let host = url
                .authority
                .rsplit_once(':')
                .map_or(url.authority, |(h, _)| h);
            if !matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
                tracing::warn!("webdav:// sends the password unencrypted; use webdav+https://");
            }
        }
        b = b.password(&p);
    }
    if let Some(t) = creds.secret("CHATVAULT_WEBDAV_TOKEN") {
        b = b.token(&t);
    }
    Ok(Built {
        op: Operator::new(b).map_err(|e| bad_location(location, e))?,
        display: format!("{scheme}://{}/{}", url.authority, url.path),
        scheme: "webdav",
        secrets: Vec::new(),
    })
}
