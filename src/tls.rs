//! TLS for every connection to the controller (contrib/docs/running-a-cluster.md, TLS), with rustls.
//!
//! One place builds what the controller serves with ([`server_config`]) and what
//! every client trusts ([`Trust`]): the system's roots plus an optional CA file
//! (`tls_ca`), so a home cluster's own CA works without touching the system
//! store. Hostname verification is always on; there is no switch to turn it off.
//! Clients with their own transport (tokio-tungstenite, tokio-rustls) take
//! [`Trust::client_config`]; the blocking HTTP client (`crate::http`, ureq)
//! builds the same configuration from [`Trust::roots`].

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {message}")]
    Read { what: &'static str, path: PathBuf, message: String },
    #[error("{what} {path} holds no PEM {expected}")]
    Empty { what: &'static str, path: PathBuf, expected: &'static str },
    #[error("no trusted CA certificates: the system store is empty or unreadable and no tls_ca is set")]
    NoRoots,
    #[error("the certificate ({cert}) and key ({key}) are unusable: {error}")]
    Server { cert: PathBuf, key: PathBuf, error: rustls::Error },
    #[error("TLS setup failed: {0}")]
    Setup(rustls::Error),
    #[error("{0:?} is not a host name or IP address a certificate can name")]
    ServerName(String),
    /// The TLS handshake with `url` failed; `cause` says why in words.
    #[error("TLS with {url} failed: {cause}")]
    Handshake { url: String, cause: String },
}

/// Whether `url` (a controller base URL or a URL made from one) asks for TLS.
pub fn is_tls_url(url: &str) -> bool {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss")
}

/// ring, for every configuration here and for ureq's (see the workspace's
/// Cargo.toml for why not rustls' default).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Which servers a client trusts: the system's roots and, if given, the CA
/// certificates in one more PEM file. The rustls configuration is built on first
/// use (reading the system store costs a few milliseconds) and then shared,
/// clones included.
#[derive(Default, Clone)]
pub struct Trust {
    ca_file: Option<PathBuf>,
    loaded: Arc<OnceLock<Loaded>>,
}

/// The roots as read, and the configuration made of them.
struct Loaded {
    roots: Arc<Vec<CertificateDer<'static>>>,
    config: Arc<ClientConfig>,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trust").field("ca_file", &self.ca_file).finish_non_exhaustive()
    }
}

impl Trust {
    pub fn new(ca_file: Option<PathBuf>) -> Trust {
        Trust { ca_file, loaded: Arc::default() }
    }

    /// The extra CA file (`tls_ca`), if any.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The client configuration: these roots, hostname verification on.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        Ok(self.load()?.config.clone())
    }

    /// The trusted root certificates: the system's that parse, and `tls_ca`'s.
    pub fn roots(&self) -> Result<Arc<Vec<CertificateDer<'static>>>, TlsError> {
        Ok(self.load()?.roots.clone())
    }

    fn load(&self) -> Result<&Loaded, TlsError> {
        if let Some(l) = self.loaded.get() {
            return Ok(l);
        }
        let mut store = RootCertStore::empty();
        let mut roots = Vec::new();
        // A broken system store must not stop a cluster that brings its own CA.
        for cert in rustls_native_certs::load_native_certs().certs {
            if store.add(cert.clone()).is_ok() {
                roots.push(cert);
            }
        }
        if let Some(path) = &self.ca_file {
            let certs = read_certs("tls_ca", path)?;
            let mut added = 0;
            for cert in certs {
                if store.add(cert.clone()).is_ok() {
                    roots.push(cert);
                    added += 1;
                }
            }
            if added == 0 {
                return Err(TlsError::Empty { what: "tls_ca", path: path.clone(), expected: "CA certificate" });
            }
        }
        if store.is_empty() {
            return Err(TlsError::NoRoots);
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?
            .with_root_certificates(store)
            .with_no_client_auth();
        let _ = self.loaded.set(Loaded { roots: Arc::new(roots), config: Arc::new(config) });
        Ok(self.loaded.get().expect("set above or by a racing caller"))
    }
}

/// `authority` (`host`, `host:port`, `[v6]:port`) split into its host and port.
fn split_authority(authority: &str) -> (&str, Option<&str>) {
    match authority.rsplit_once(':') {
        Some((h, p))
            if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']')) =>
        {
            (h, Some(p))
        }
        _ => (authority, None),
    }
}

/// `authority` with a port, for connecting: the URL scheme's default (443 for
/// `https://`, else 80) when it has none.
pub fn socket_target(url: &str, authority: &str) -> String {
    match split_authority(authority) {
        (_, Some(_)) => authority.to_owned(),
        (host, None) if is_tls_url(url) => format!("{host}:443"),
        (host, None) => format!("{host}:80"),
    }
}

/// The name a certificate must carry for `authority` (`host`, `host:port`,
/// `[v6]:port`).
pub fn server_name(authority: &str) -> Result<ServerName<'static>, TlsError> {
    let (host, _) = split_authority(authority);
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))
}

/// The controller's configuration from a PEM certificate chain and its private
/// key (`tls_cert`, `tls_key`). Read at start: a renewed certificate takes
/// effect on restart.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certs("tls_cert", cert)?;
    if chain.is_empty() {
        return Err(TlsError::Empty { what: "tls_cert", path: cert.into(), expected: "certificate" });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            TlsError::Empty { what: "tls_key", path: key.into(), expected: "private key" }
        }
        e => TlsError::Read { what: "tls_key", path: key.into(), message: e.to_string() },
    })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|error| TlsError::Server { cert: cert.into(), key: key.into(), error })?;
    Ok(Arc::new(config))
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |message: String| TlsError::Read { what, path: path.into(), message };
    CertificateDer::pem_file_iter(path)
        .map_err(|e| read(e.to_string()))?
        .map(|c| c.map_err(|e| read(e.to_string())))
        .collect()
}

/// Says in words why a TLS connection failed, if `err` or one of its causes is
/// a TLS failure: an unknown issuer, a name mismatch, or a peer that does not
/// speak TLS.
pub fn explain(err: &(dyn StdError + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(explain_rustls(r));
        }
        // An io::Error shows its inner error's text but does not return it as
        // its source.
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref())
            && let Some(r) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(explain_rustls(r));
        }
        next = e.source();
    }
    None
}

/// [`explain`] for an io error of a TLS connection, with a hint when the
/// server hung up in the handshake.
pub fn explain_io(e: &io::Error) -> String {
    match explain(e) {
        Some(s) => s,
        None if e.kind() == io::ErrorKind::UnexpectedEof || e.kind() == io::ErrorKind::ConnectionReset => {
            format!("{e}: the server ended the TLS handshake; is it serving plain HTTP? (then use http://)")
        }
        None => e.to_string(),
    }
}

pub fn explain_rustls(e: &rustls::Error) -> String {
    use rustls::Error as E;
    let why = match e {
        E::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the server's certificate is signed by an unknown authority: give the CA certificate that signed it \
             with tls_ca (--tls-ca, FFCLUSTER_TLS_CA)"
        }
        E::InvalidCertificate(CertificateError::BadSignature) => {
            "the server's certificate does not verify against the trusted CAs (another CA of the same name \
             signed it?): give the CA certificate that signed it with tls_ca (--tls-ca, FFCLUSTER_TLS_CA)"
        }
        E::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }) => {
            "the server's certificate is not issued for the host name in the URL: use a name the certificate \
             carries, or make a certificate for this name"
        }
        E::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            "the server's certificate has expired"
        }
        E::InvalidCertificate(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }) => {
            "the server's certificate is not valid yet (check the clocks)"
        }
        E::InvalidMessage(_) | E::InappropriateHandshakeMessage { .. } | E::InappropriateMessage { .. } => {
            "the server does not speak TLS; is it serving plain HTTP? (then use http://)"
        }
        _ => "",
    };
    if why.is_empty() { e.to_string() } else { format!("{why} ({e})") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_and_names() {
        assert!(is_tls_url("https://c:9470") && is_tls_url("WSS://c/x"));
        assert!(!is_tls_url("http://c:9470") && !is_tls_url("c:9470"));
        let name = |a: &str| server_name(a).map(|n| n.to_str().into_owned());
        assert_eq!(name("controller.lan:9470").unwrap(), "controller.lan");
        assert_eq!(name("127.0.0.1:1").unwrap(), "127.0.0.1");
        assert_eq!(name("[::1]:9470").unwrap(), "::1");
        assert_eq!(name("host").unwrap(), "host");
        assert!(server_name("bad host:1").is_err());
        assert_eq!(socket_target("https://h/x", "h"), "h:443");
        assert_eq!(socket_target("http://h/x", "h"), "h:80");
        assert_eq!(socket_target("https://[::1]/x", "[::1]"), "[::1]:443");
        assert_eq!(socket_target("https://[::1]:9/x", "[::1]:9"), "[::1]:9");
    }

    #[test]
    fn failures_are_explained() {
        let unknown = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert!(explain(&unknown).unwrap().contains("tls_ca"));
        let plain = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        assert!(explain(&plain).unwrap().contains("plain HTTP"));
        assert!(explain(&io::Error::other("x")).is_none());
    }

    #[test]
    fn a_missing_or_empty_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = Trust::new(Some(empty.clone())).client_config().unwrap_err().to_string();
        assert!(err.contains("tls_ca") && err.contains("empty.pem"), "{err}");
        let err = server_config(&dir.path().join("nope.pem"), &empty).unwrap_err().to_string();
        assert!(err.contains("tls_cert") && err.contains("nope.pem"), "{err}");
    }
}
