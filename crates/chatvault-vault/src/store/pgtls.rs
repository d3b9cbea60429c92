//! TLS to PostgreSQL (PROTOCOL.md §9.2): the `sslmode` / `sslrootcert` parameters of the URL, and
//! a small `tokio_postgres` TLS connector over tokio-rustls (ring provider, the same rustls the
//! vault serves HTTPS with).
//!
//! Modes (libpq names; chatvault-vault is stricter where libpq is lax):
//! - `verify-full`: the server's chain must lead to the CA file **and** the certificate must
//!   name the host of the URL.
//! - `require`: treated as `verify-full`. libpq's `require` accepts any certificate, which stops
//!   no one on the path from resetting guess counters, so a CA file is mandatory.
//! - `verify-ca`: the chain must lead to the CA file; the host name is **not** checked (any
//!   server holding a certificate from that CA is accepted — only for a private CA that issues
//!   database certificates and nothing else).
//! - `disable` or no `sslmode`: plain TCP (a warning at start for a non-loopback host).
//! - `allow` / `prefer` are refused: they silently fall back to plain text.
//!
//! The CA comes from `sslrootcert=FILE` in the URL or from `serve --db-ca FILE` (no built-in or
//! system roots: the vault may run offline, and a database certificate comes from a private CA).
//! A CA given without `sslmode` means `verify-full`. Channel binding (SCRAM-SHA-256-PLUS,
//! `tls-server-end-point`) is offered whenever the server certificate's signature names its
//! hash (RSA PKCS#1 and ECDSA); `channel_binding=require` in the URL makes it mandatory.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_rustls::rustls;

use crate::error::{Error, Result};

/// How the connection to PostgreSQL is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgSslMode {
    /// Plain TCP (`sslmode=disable` or no `sslmode`).
    Disable,
    /// TLS; the chain must lead to the CA, the host name is not checked (`sslmode=verify-ca`).
    VerifyCa,
    /// TLS; chain to the CA and host name (`sslmode=verify-full`, and `sslmode=require`).
    VerifyFull,
}

impl PgSslMode {
    /// The libpq name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            PgSslMode::Disable => "disable",
            PgSslMode::VerifyCa => "verify-ca",
            PgSslMode::VerifyFull => "verify-full",
        }
    }
}

/// A PostgreSQL URL split into what tokio-postgres parses and what this module handles.
pub(crate) struct PgTarget {
    /// The connection parameters (never printed: they hold the password).
    pub config: tokio_postgres::Config,
    /// The protection asked for.
    pub mode: PgSslMode,
    /// The CA file (set for every TLS mode).
    pub ca: Option<PathBuf>,
}

fn err(msg: impl Into<String>) -> Error {
    Error::PgTls(msg.into())
}

/// Parameters of libpq this build does not implement; refused rather than ignored.
const UNSUPPORTED: &[&str] = &[
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "gssencmode",
];

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Splits `sslmode` and `sslrootcert` off a `postgres://` URL and parses the rest.
/// Errors never quote the URL (it may hold the password).
pub(crate) fn parse_target(url: &str, ca_flag: Option<&Path>) -> Result<PgTarget> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(err(
            "expected a postgres:// or postgresql:// URL (key=value connection strings are not supported)",
        ));
    }
    let TlsParams {
        rebuilt,
        sslmode,
        rootcert,
    } = split_tls_params(url)?;
    let ca = choose_ca(rootcert, ca_flag)?;
    let mode = choose_mode(sslmode.as_deref(), ca.is_some())?;
    let mut config: tokio_postgres::Config = rebuilt.parse()?;
    config.ssl_mode(if mode == PgSslMode::Disable {
        tokio_postgres::config::SslMode::Disable
    } else {
        // Never fall back to plain text: the server must accept TLS.
        tokio_postgres::config::SslMode::Require
    });
    Ok(PgTarget { config, mode, ca })
}

/// A URL with the TLS parameters this module handles taken out of its query.
struct TlsParams {
    /// The URL without them (for tokio-postgres).
    rebuilt: String,
    /// The `sslmode` value, decoded.
    sslmode: Option<String>,
    /// The `sslrootcert` value, decoded.
    rootcert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of the URL's query, refusing the [`UNSUPPORTED`]
/// parameters (refused rather than ignored); the other parameters stay, in order.
fn split_tls_params(url: &str) -> Result<TlsParams> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut sslmode = None;
    let mut rootcert = None;
    let mut kept = Vec::new();
    for piece in query.into_iter().flat_map(|q| q.split('&')) {
        if piece.is_empty() {
            continue;
        }
        let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
        let key = percent_decode(k).ok_or_else(|| err("malformed URL query parameter"))?;
        let value = || {
            percent_decode(v).ok_or_else(|| err(format!("malformed value of URL parameter {key}")))
        };
        match key.as_str() {
            "sslmode" => sslmode = Some(value()?),
            "sslrootcert" => rootcert = Some(value()?),
            k if UNSUPPORTED.contains(&k) => {
                return Err(err(format!(
                    "the URL parameter {k} is not supported (no client certificates, CRLs or \
                     GSSAPI encryption): authenticate with a password (SCRAM) over \
                     sslmode=verify-full"
                )));
            }
            _ => kept.push(piece),
        }
    }
    let rebuilt = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(TlsParams {
        rebuilt,
        sslmode,
        rootcert,
    })
}

/// The CA file, from `sslrootcert` or `--db-ca` (one of them at most; never the system roots).
fn choose_ca(rootcert: Option<String>, ca_flag: Option<&Path>) -> Result<Option<PathBuf>> {
    if rootcert.as_deref() == Some("system") {
        return Err(err(
            "sslrootcert=system is not supported: the vault uses no system or built-in roots; \
             give the CA that issued the database certificate with sslrootcert=FILE or --db-ca FILE",
        ));
    }
    Ok(match (rootcert, ca_flag) {
        (Some(_), Some(_)) => {
            return Err(err(
                "the PostgreSQL CA is given twice (sslrootcert in the URL and --db-ca): give one",
            ));
        }
        (Some(f), None) => Some(PathBuf::from(f)),
        (None, Some(f)) => Some(f.to_path_buf()),
        (None, None) => None,
    })
}

/// The protection from `sslmode` (see the module docs), checked against whether a CA file is
/// given: TLS needs one, plain TCP refuses one.
fn choose_mode(sslmode: Option<&str>, has_ca: bool) -> Result<PgSslMode> {
    let mode = match sslmode {
        None if has_ca => PgSslMode::VerifyFull,
        None | Some("disable") => PgSslMode::Disable,
        Some("require") | Some("verify-full") => PgSslMode::VerifyFull,
        Some("verify-ca") => PgSslMode::VerifyCa,
        Some(m @ ("allow" | "prefer")) => {
            return Err(err(format!(
                "sslmode={m} is refused: it falls back to plain text without notice; use \
                 sslmode=verify-full with sslrootcert=FILE (or --db-ca FILE), or sslmode=disable \
                 for a database on the same host"
            )));
        }
        Some(_) => {
            return Err(err(
                "unknown sslmode (use disable, require, verify-ca or verify-full)",
            ));
        }
    };
    if mode == PgSslMode::Disable && has_ca {
        return Err(err(
            "sslmode=disable together with a CA file (sslrootcert or --db-ca): choose \
             sslmode=verify-full, or drop the CA",
        ));
    }
    if mode != PgSslMode::Disable && !has_ca {
        let asked = sslmode.unwrap_or("verify-full");
        let also = if asked == "require" {
            " (chatvault-vault treats sslmode=require as verify-full: a database that is not \
             authenticated lets anyone on the path reset guess counters)"
        } else {
            ""
        };
        return Err(err(format!(
            "sslmode={asked} needs the CA certificate that issued the database's certificate: \
             add sslrootcert=FILE to the URL or pass --db-ca FILE; the vault has no built-in or \
             system roots{also}"
        )));
    }
    Ok(mode)
}

/// Hosts of `config` that are not loopback addresses or Unix sockets (for the plain-TCP warning).
pub(crate) fn non_loopback_hosts(config: &tokio_postgres::Config) -> Vec<String> {
    use tokio_postgres::config::Host;
    let mut out: Vec<String> = config
        .get_hosts()
        .iter()
        .filter_map(|h| match h {
            Host::Tcp(name) => {
                let bare = name.trim_start_matches('[').trim_end_matches(']');
                let loopback = bare.eq_ignore_ascii_case("localhost")
                    || bare
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                (!loopback).then(|| name.clone())
            }
            Host::Unix(_) => None,
        })
        .collect();
    out.extend(
        config
            .get_hostaddrs()
            .iter()
            .filter(|ip| !ip.is_loopback())
            .map(|ip| ip.to_string()),
    );
    out
}

/// A tokio-postgres TLS connector over tokio-rustls for [`PgSslMode::VerifyCa`] and
/// [`PgSslMode::VerifyFull`].
#[derive(Clone)]
pub struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    what: Arc<str>,
}

impl std::fmt::Debug for RustlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RustlsConnect({})", self.what)
    }
}

impl RustlsConnect {
    /// A connector trusting only the CA certificates in the PEM file `ca`.
    pub fn new(mode: PgSslMode, ca: &Path) -> Result<Self> {
        use rustls_pki_types::pem::PemObject as _;
        let shown = ca.display();
        let certs = CertificateDer::pem_file_iter(ca)
            .map_err(|e| err(format!("reading the PostgreSQL CA file {shown}: {e}")))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| err(format!("reading the PostgreSQL CA file {shown}: {e}")))?;
        if certs.is_empty() {
            return Err(err(format!(
                "the PostgreSQL CA file {shown} holds no PEM certificate"
            )));
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| err(format!("the PostgreSQL CA file {shown}: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .map_err(|e| err(format!("the PostgreSQL CA file {shown}: {e}")))?;
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match mode {
            PgSslMode::VerifyFull => webpki,
            PgSslMode::VerifyCa => Arc::new(ChainOnly(webpki)),
            PgSslMode::Disable => return Err(err("no TLS connector for sslmode=disable")),
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| err(format!("configuring TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // PostgreSQL 17 checks the ALPN protocol if one is sent; older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            what: format!("sslmode={} with the CA in {shown}", mode.as_str()).into(),
        })
    }
}

/// `verify-ca`: rustls' WebPKI verifier with the name check dropped. `WebPkiServerVerifier`
/// verifies the chain (to the CA, validity, key usage) *before* the name, and the name check is
/// its last step, so accepting exactly the name errors accepts exactly the chain-valid
/// certificates. Handshake signatures are still checked against the certificate's key.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Why the TLS connection to PostgreSQL failed (returned through tokio-postgres).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PgTlsError(String);

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnector;
    type Error = PgTlsError;

    fn make_tls_connect(
        &mut self,
        domain: &str,
    ) -> std::result::Result<RustlsConnector, PgTlsError> {
        let bare = domain.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(bare.to_owned())
            .map_err(|_| PgTlsError(format!("{domain:?} is not a valid TLS server name")))?;
        Ok(RustlsConnector {
            config: self.config.clone(),
            what: self.what.clone(),
            name,
        })
    }
}

/// One TLS handshake to one PostgreSQL host.
pub struct RustlsConnector {
    config: Arc<rustls::ClientConfig>,
    what: Arc<str>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = PgTlsError;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<RustlsStream<S>, PgTlsError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let host = self.name.to_str().into_owned();
            tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await
                .map(RustlsStream)
                .map_err(|e| {
                    let cause = e
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
                    PgTlsError(match cause {
                        Some(rustls::Error::InvalidCertificate(c)) => format!(
                            "certificate verification failed for the PostgreSQL server {host} \
                             ({}): {c}",
                            self.what
                        ),
                        _ => format!("TLS handshake with the PostgreSQL server {host} failed: {e}"),
                    })
                })
        })
    }
}

/// A TLS connection to PostgreSQL.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, conn) = self.0.get_ref();
        conn.peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| tls_server_end_point(cert.as_ref()))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

/// RFC 5929 `tls-server-end-point`: the certificate hashed with the hash of its signature
/// algorithm (MD5 and SHA-1 become SHA-256). `None` for algorithms without a single hash
/// (Ed25519, RSA-PSS): then no channel binding is offered.
fn tls_server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest as _;
    const RSA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03];
    const ECDSA_SHA1: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x01];
    let oid = signature_algorithm_oid(cert)?;
    let bits = match oid {
        o if o.len() == RSA.len() + 1 && o.starts_with(RSA) => match o[RSA.len()] {
            4 | 5 | 11 => 256, // md5, sha1, sha256 WithRSAEncryption
            12 => 384,
            13 => 512,
            _ => return None,
        },
        o if o.len() == ECDSA_SHA2.len() + 1 && o.starts_with(ECDSA_SHA2) => {
            match o[ECDSA_SHA2.len()] {
                2 => 256,
                3 => 384,
                4 => 512,
                _ => return None,
            }
        }
        o if o == ECDSA_SHA1 => 256,
        _ => return None,
    };
    Some(match bits {
        256 => sha2::Sha256::digest(cert).to_vec(),
        384 => sha2::Sha384::digest(cert).to_vec(),
        _ => sha2::Sha512::digest(cert).to_vec(),
    })
}

/// One DER TLV: (tag, contents, rest).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The OID of `Certificate.signatureAlgorithm` (X.509: SEQUENCE { tbs, algorithm, signature }).
fn signature_algorithm_oid(cert: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (SEQUENCE, cert, _) = der(cert)? else {
        return None;
    };
    let (SEQUENCE, _tbs, rest) = der(cert)? else {
        return None;
    };
    let (SEQUENCE, algorithm, _) = der(rest)? else {
        return None;
    };
    let (OID, oid, _) = der(algorithm)? else {
        return None;
    };
    Some(oid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "postgres://u:s3cret@db.example:5432/vault";

    fn msg(r: Result<PgTarget>) -> String {
        match r {
            Ok(t) => panic!("expected an error, got mode {:?}", t.mode),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn modes_and_ca() {
        let t = parse_target(URL, None).unwrap();
        assert_eq!((t.mode, t.ca), (PgSslMode::Disable, None));
        let t = parse_target(&format!("{URL}?sslmode=disable"), None).unwrap();
        assert_eq!(t.mode, PgSslMode::Disable);
        let t = parse_target(
            &format!("{URL}?application_name=v&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem"),
            None,
        )
        .unwrap();
        assert_eq!(t.mode, PgSslMode::VerifyFull);
        assert_eq!(t.ca.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(t.config.get_application_name(), Some("v"));
        assert_eq!(t.config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(
            t.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        let t = parse_target(
            &format!("{URL}?sslmode=require"),
            Some(Path::new("/ca.pem")),
        )
        .unwrap();
        assert_eq!(t.mode, PgSslMode::VerifyFull);
        let t = parse_target(&format!("{URL}?sslmode=verify-ca&sslrootcert=a"), None).unwrap();
        assert_eq!(t.mode, PgSslMode::VerifyCa);
        // A CA alone means verify-full.
        let t = parse_target(URL, Some(Path::new("/ca.pem"))).unwrap();
        assert_eq!(t.mode, PgSslMode::VerifyFull);
    }

    #[test]
    fn refusals_are_clear_and_never_quote_the_url() {
        let cases = [
            (
                format!("{URL}?sslmode=require"),
                None,
                "treats sslmode=require as verify-full",
            ),
            (format!("{URL}?sslmode=verify-full"), None, "--db-ca FILE"),
            (
                format!("{URL}?sslmode=prefer"),
                None,
                "falls back to plain text",
            ),
            (
                format!("{URL}?sslmode=allow"),
                None,
                "falls back to plain text",
            ),
            (format!("{URL}?sslmode=bogus"), None, "unknown sslmode"),
            (
                format!("{URL}?sslmode=disable&sslrootcert=x"),
                None,
                "sslmode=disable together",
            ),
            (
                format!("{URL}?sslrootcert=system"),
                None,
                "sslrootcert=system is not supported",
            ),
            (
                format!("{URL}?sslrootcert=a"),
                Some(Path::new("b")),
                "given twice",
            ),
            (
                format!("{URL}?sslmode=verify-full&sslcert=c"),
                None,
                "sslcert is not supported",
            ),
            (
                "host=db user=u password=s3cret".to_owned(),
                None,
                "expected a postgres://",
            ),
        ];
        for (url, flag, want) in cases {
            let m = msg(parse_target(&url, flag));
            assert!(m.contains(want), "{url}: {m}");
            assert!(!m.contains("s3cret"), "{m}");
        }
    }

    #[test]
    fn loopback_hosts() {
        let t = parse_target("postgres://u:p@127.0.0.1,localhost,[::1]/d", None).unwrap();
        assert!(non_loopback_hosts(&t.config).is_empty());
        let t = parse_target("postgres://u:p@127.0.0.1,db.internal:5433/d", None).unwrap();
        assert_eq!(
            non_loopback_hosts(&t.config),
            vec!["db.internal".to_owned()]
        );
    }

    #[test]
    fn signature_hash_of_certificates() {
        // rcgen makes ECDSA P-256 / SHA-256 certificates.
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["db".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().as_ref();
        use sha2::Digest as _;
        assert_eq!(
            tls_server_end_point(der).unwrap(),
            sha2::Sha256::digest(der).to_vec()
        );
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["db".to_owned()])
            .unwrap()
            .self_signed(&ed)
            .unwrap();
        assert_eq!(tls_server_end_point(cert.der().as_ref()), None);
        assert_eq!(tls_server_end_point(b"\x30\x03\x02\x01\x00"), None);
    }
}
