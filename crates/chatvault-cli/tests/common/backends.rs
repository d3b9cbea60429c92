//! The cloud backends the suites run against, as one table (tests/backends.rs runs the same
//! cycle against each, crash.rs one kill -9 trial each).
//!
//! A backend is tested when its `CHATVAULT_TEST_<NAME>` variable is set; otherwise its tests print
//! `SKIPPED: …` and pass. CI sets them for the local servers: S3 (moto, scripts/ci-s3.sh), Azure
//! Blob (Azurite), GCS (fake-gcs-server) and WebDAV (rclone serve webdav) from
//! scripts/ci-backends.sh. Google Drive, OneDrive and Dropbox have no local server: a user runs
//! the same suite against their own account by setting `CHATVAULT_TEST_GDRIVE` (etc.) to a
//! dedicated folder and the backend's usual `CHATVAULT_<NAME>_…` credentials (README "Running
//! the backend tests").

/// Names of the backends, in the order the suites list them.
pub const ALL: &[&str] = &[
    "s3", "gcs", "azblob", "webdav", "gdrive", "onedrive", "dropbox",
];

/// How chatvault must write to a backend (checked against what `CHATVAULT_STORAGE_STATS`
/// reports, so a server or OpenDAL change that alters it shows).
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// Write-once is the service's own create-if-absent (a conditional write); otherwise
    /// chatvault asks whether the name is free, then writes.
    pub atomic_write_once: bool,
    /// The server enforces those conditional writes. fake-gcs-server ignores `ifGenerationMatch=0`
    /// (real GCS enforces it): a second write replaces the object there.
    pub server_enforces_conditions: bool,
    /// Packs larger than the part size go up in parts.
    pub multipart: bool,
}

/// Credentials the service must refuse.
pub enum BadCredentials {
    /// Wrong values: `set` replaces the variables, `remove` drops others.
    Wrong {
        set: Vec<(String, String)>,
        remove: Vec<String>,
    },
    /// The server accepts any credentials (an emulator), so only their absence can be tested:
    /// `remove` drops them, `set` points configuration files elsewhere; `why` says so.
    Missing {
        set: Vec<(String, String)>,
        remove: Vec<String>,
        why: &'static str,
    },
}

/// A backend configured for tests.
pub struct Target {
    pub name: &'static str,
    /// URL of the test area (bucket, container or folder); each test uses a fresh prefix in it.
    pub base: String,
    /// Environment for every chatvault command.
    pub env: Vec<(String, String)>,
    /// Variables removed for every command (so another backend's settings cannot interfere).
    pub remove: Vec<String>,
    /// Secret values that must never appear in output.
    pub secrets: Vec<String>,
    pub expect: Expect,
    /// A location whose bucket/container/share does not exist, or why there is none.
    pub missing_container: Result<String, &'static str>,
    pub bad_credentials: BadCredentials,
}

impl Target {
    /// A fresh repository URL under the test area.
    pub fn repo(&self, tag: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!(
            "{}/{tag}-{}-{nanos:x}",
            self.base.trim_end_matches('/'),
            std::process::id()
        )
    }

    /// Applies the environment to a command.
    pub fn apply(&self, c: &mut std::process::Command) {
        for k in &self.remove {
            c.env_remove(k);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn need(name: &str, backend: &str) -> String {
    var(name).unwrap_or_else(|| {
        panic!(
            "CHATVAULT_TEST_{} is set but {name} is not",
            backend.to_uppercase()
        )
    })
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Variables of every backend, removed before a backend's own are set.
const ALL_BACKEND_VARS: &[&str] = &[
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_ENDPOINT",
    "CHATVAULT_GCS_ENDPOINT",
    "CHATVAULT_WEBDAV_TOKEN",
    "CHATVAULT_CREDENTIALS_FILE",
];

/// The backend `name` as configured by the environment, or `None` (after printing `SKIPPED`).
pub fn target(name: &'static str) -> Option<Target> {
    let flag = format!("CHATVAULT_TEST_{}", name.to_uppercase());
    let Some(flag_value) = var(&flag) else {
        let how = match name {
            "s3" => "eval \"$(bash scripts/ci-s3.sh)\"",
            "gcs" | "azblob" | "webdav" => "eval \"$(bash scripts/ci-backends.sh)\"",
            _ => {
                "a dedicated folder and your own credentials: README \"Running the backend tests\""
            }
        };
        eprintln!("SKIPPED: no {name} server ({flag} is not set; {how})");
        return None;
    };
    let pid = std::process::id();
    let mut remove = names(ALL_BACKEND_VARS);
    let t = match name {
        "s3" => {
            let bucket = var("CHATVAULT_TEST_S3_BUCKET").unwrap_or_else(|| "chatvault-test".into());
            Target {
                name,
                base: format!("s3://{bucket}"),
                // Small parts so that packs over 5 MiB really go multipart.
                env: pairs(&[("CHATVAULT_S3_PART_SIZE", "5MiB")]),
                remove,
                secrets: var("AWS_SECRET_ACCESS_KEY").into_iter().collect(),
                expect: Expect {
                    atomic_write_once: true,
                    server_enforces_conditions: true,
                    multipart: true,
                },
                missing_container: Ok(format!("s3://chatvault-no-such-bucket-{pid}/x")),
                bad_credentials: BadCredentials::Missing {
                    set: pairs(&[
                        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/chatvault-test"),
                        ("AWS_CONFIG_FILE", "/nonexistent/chatvault-test"),
                    ]),
                    remove: names(&[
                        "AWS_ACCESS_KEY_ID",
                        "AWS_SECRET_ACCESS_KEY",
                        "AWS_SESSION_TOKEN",
                        "AWS_PROFILE",
                    ]),
                    why: "moto accepts any signature",
                },
            }
        }
        "gcs" => {
            let bucket =
                var("CHATVAULT_TEST_GCS_BUCKET").unwrap_or_else(|| "chatvault-test".into());
            let mut env = pairs(&[("CHATVAULT_S3_PART_SIZE", "5MiB")]);
            let mut secrets = Vec::new();
            let emulator = var("CHATVAULT_TEST_GCS_ENDPOINT");
            if let Some(e) = &emulator {
                // The emulator checks no token; any will do.
                env.extend(pairs(&[
                    ("CHATVAULT_GCS_ENDPOINT", e),
                    ("CHATVAULT_GCS_TOKEN", "chatvault-test-token"),
                ]));
                secrets.push("chatvault-test-token".to_string());
                remove.push("GOOGLE_APPLICATION_CREDENTIALS".into());
            }
            Target {
                name,
                base: format!("gcs://{bucket}"),
                env,
                remove,
                secrets,
                expect: Expect {
                    atomic_write_once: true,
                    server_enforces_conditions: emulator.is_none(),
                    multipart: true,
                },
                missing_container: Ok(format!("gcs://chatvault-no-such-bucket-{pid}/x")),
                bad_credentials: if emulator.is_some() {
                    BadCredentials::Missing {
                        set: Vec::new(),
                        remove: names(&["CHATVAULT_GCS_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS"]),
                        why: "fake-gcs-server checks no credentials",
                    }
                } else {
                    BadCredentials::Wrong {
                        set: pairs(&[("CHATVAULT_GCS_TOKEN", "ya29.chatvault-wrong-token")]),
                        remove: names(&["GOOGLE_APPLICATION_CREDENTIALS"]),
                    }
                },
            }
        }
        "azblob" => {
            let container =
                var("CHATVAULT_TEST_AZBLOB_CONTAINER").unwrap_or_else(|| "chatvault-test".into());
            let key = need("CHATVAULT_TEST_AZBLOB_KEY", name);
            let mut env = pairs(&[
                (
                    "AZURE_STORAGE_ACCOUNT",
                    &need("CHATVAULT_TEST_AZBLOB_ACCOUNT", name),
                ),
                ("AZURE_STORAGE_KEY", &key),
                ("CHATVAULT_S3_PART_SIZE", "5MiB"),
            ]);
            if let Some(e) = var("CHATVAULT_TEST_AZBLOB_ENDPOINT") {
                env.push(("AZURE_STORAGE_ENDPOINT".into(), e));
            }
            // Another valid account key (64 bytes, base64), not the account's.
            let wrong = "Y2hhdHZhdWx0LXRlc3Qtd3JvbmctYWNjb3VudC1rZXktLS0tLS0tLS0tLS0tLS0tLS0tLS0tLS0tLS0tLS0tLQ==";
            Target {
                name,
                base: format!("azblob://{container}"),
                env,
                remove,
                secrets: vec![key],
                expect: Expect {
                    atomic_write_once: true,
                    server_enforces_conditions: true,
                    multipart: true,
                },
                missing_container: Ok(format!("azblob://chatvault-no-such-container-{pid}/x")),
                bad_credentials: BadCredentials::Wrong {
                    set: pairs(&[("AZURE_STORAGE_KEY", wrong)]),
                    remove: Vec::new(),
                },
            }
        }
        "webdav" => {
            let url = need("CHATVAULT_TEST_WEBDAV_URL", name);
            let password = need("CHATVAULT_TEST_WEBDAV_PASSWORD", name);
            let env = pairs(&[
                (
                    "CHATVAULT_WEBDAV_USERNAME",
                    &need("CHATVAULT_TEST_WEBDAV_USERNAME", name),
                ),
                ("CHATVAULT_WEBDAV_PASSWORD", &password),
            ]);
            // The share is the URL's first path segment (rclone's --baseurl, Nextcloud's
            // remote.php/dav/files/USER); another one does not exist.
            let (scheme, rest) = url.split_once("://").unwrap();
            let host = rest.split('/').next().unwrap();
            Target {
                name,
                base: url.clone(),
                env,
                remove,
                secrets: vec![password],
                expect: Expect {
                    atomic_write_once: false,
                    server_enforces_conditions: false,
                    multipart: false,
                },
                missing_container: Ok(format!("{scheme}://{host}/chatvault-no-such-share-{pid}/x")),
                bad_credentials: BadCredentials::Wrong {
                    set: pairs(&[("CHATVAULT_WEBDAV_PASSWORD", "chatvault-wrong-password")]),
                    remove: Vec::new(),
                },
            }
        }
        "gdrive" | "onedrive" | "dropbox" => {
            // The flag's value is the dedicated folder; credentials are the backend's own.
            let up = name.to_uppercase();
            let folder = flag_value.trim_matches('/').to_string();
            let secrets = ["ACCESS_TOKEN", "REFRESH_TOKEN", "CLIENT_SECRET"]
                .iter()
                .filter_map(|s| var(&format!("CHATVAULT_{up}_{s}")))
                .collect();
            Target {
                name,
                base: format!("{name}://{folder}"),
                env: Vec::new(),
                remove,
                secrets,
                expect: Expect {
                    atomic_write_once: false,
                    server_enforces_conditions: false,
                    multipart: false,
                },
                missing_container: Err("no buckets: chatvault creates the folder"),
                bad_credentials: BadCredentials::Wrong {
                    set: vec![(
                        format!("CHATVAULT_{up}_ACCESS_TOKEN"),
                        "chatvault-wrong-token".into(),
                    )],
                    remove: vec![format!("CHATVAULT_{up}_REFRESH_TOKEN")],
                },
            }
        }
        other => panic!("unknown backend {other}"),
    };
    Some(t)
}

/// What one chatvault run asked of its storage (`CHATVAULT_STORAGE_STATS=1`).
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct Stats {
    pub reads: u64,
    pub ranged_reads: u64,
    pub writes: u64,
    pub stats: u64,
    pub lists: u64,
    pub deletes: u64,
    pub retries: u64,
    pub http_requests: u64,
    pub http_by_method: std::collections::BTreeMap<String, u64>,
    pub part_uploads: u64,
    pub backends: std::collections::BTreeMap<String, Writes>,
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct Writes {
    pub atomic_write_once: bool,
    pub part_size: Option<u64>,
}

impl Stats {
    /// The `storage-stats:` line of a run's stderr.
    pub fn of(stderr: &[u8]) -> Stats {
        let text = String::from_utf8_lossy(stderr);
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("storage-stats: "))
            .unwrap_or_else(|| panic!("no storage-stats line in:\n{text}"));
        serde_json::from_str(line).unwrap()
    }

    pub fn add(&mut self, o: &Stats) {
        self.reads += o.reads;
        self.ranged_reads += o.ranged_reads;
        self.writes += o.writes;
        self.stats += o.stats;
        self.lists += o.lists;
        self.deletes += o.deletes;
        self.retries += o.retries;
        self.http_requests += o.http_requests;
        for (m, n) in &o.http_by_method {
            *self.http_by_method.entry(m.clone()).or_default() += n;
        }
        self.part_uploads += o.part_uploads;
        for (b, w) in &o.backends {
            self.backends.insert(b.clone(), w.clone());
        }
    }

    /// Storage operations of all kinds.
    pub fn operations(&self) -> u64 {
        self.reads + self.ranged_reads + self.writes + self.stats + self.lists + self.deletes
    }
}
