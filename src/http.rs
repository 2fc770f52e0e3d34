//! The blocking HTTP client of the admin CLI (`ffcluster status`, `jobs`,
//! `log`, drain…), of the shim's cluster probes and of the node's side-file
//! downloads: ureq, over TLS for an `https://` controller, trusting what
//! [`Trust`] trusts.
//!
//! ureq rather than our own HTTP/1.1: it is maintained, reads Content-Length,
//! chunked and close-delimited bodies, and is already the shim's origin client,
//! so the product has one HTTP stack. It is blocking and starts no runtime or
//! thread for a plain request, which keeps a probe as cheap as a socket of our
//! own. What this module adds is the product's own behaviour: the trust, the
//! timeouts, no proxy and no redirects (a controller is reached directly, as
//! before), every status as an answer, and errors in the words users know.

use std::io;
use std::time::Duration;

use crate::tls::{TlsError, Trust};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}: only http:// and https:// URLs are supported")]
    Scheme(String),
    #[error("{0}: not a valid URL")]
    Url(String),
    // The io errors are part of the message rather than `source`s, so that the
    // text is complete however the error is printed.
    #[error("cannot resolve {host}: {error}")]
    Resolve { host: String, error: io::Error },
    #[error("cannot connect to {host}: {error}")]
    Connect { host: String, error: io::Error },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("talking to {host}: {error}")]
    Io { host: String, error: io::Error },
    #[error("malformed HTTP response from {host}: {what}")]
    Malformed { host: String, what: String },
}

/// Each direction's buffer, and the largest response head.
const BUFFER: usize = 16 << 10;

/// How long a request may wait: to connect (each address in turn), and for
/// each read or write after that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub io: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// Names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// `method url` with extra request headers and no body; the whole response, of
/// at most `max_body` bytes. Any status is an answer: the callers say what a
/// 401 or a 404 means.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    trust: &Trust,
    timeouts: Timeouts,
    max_body: u64,
) -> Result<HttpResponse, HttpError> {
    let host = authority(url)?.to_owned();
    let agent = agent(url, trust, timeouts)?;
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(ureq::SendBody::none()).map_err(|_| HttpError::Url(url.to_owned()))?;
    let response = agent.run(request).map_err(|e| error(url, &host, e))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).trim().to_owned()))
        .collect();
    let body = response.into_body().with_config().limit(max_body).read_to_vec().map_err(|e| error(url, &host, e))?;
    Ok(HttpResponse { status, headers, body })
}

/// `GET url` with the body copied into `sink` as it arrives, for files too
/// large to hold: the status, and the bytes copied (none unless the status is
/// 200).
pub fn download(
    url: &str,
    trust: &Trust,
    timeouts: Timeouts,
    sink: &mut dyn io::Write,
) -> Result<(u16, u64), HttpError> {
    let host = authority(url)?.to_owned();
    let response = agent(url, trust, timeouts)?.get(url).call().map_err(|e| error(url, &host, e))?;
    let status = response.status().as_u16();
    if status != 200 {
        return Ok((status, 0));
    }
    let mut body = response.into_body().into_reader();
    let copied = io::copy(&mut body, sink).map_err(|e| error(url, &host, ureq::Error::from(e)))?;
    Ok((status, copied))
}

/// An agent for one request to `url`. The trusted roots are read only for an
/// `https://` URL: a plain request (a probe to an http:// controller) does not
/// pay for the system store.
fn agent(url: &str, trust: &Trust, timeouts: Timeouts) -> Result<ureq::Agent, TlsError> {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_connect(Some(timeouts.connect))
        .timeout_per_read(Some(timeouts.io))
        .timeout_per_write(Some(timeouts.io))
        .user_agent(concat!("ffcluster/", env!("CARGO_PKG_VERSION")))
        // ureq's 128 KiB buffers each way are for large transfers; the
        // controller's heads are small, and a probe should not map and fault
        // in a quarter MiB it never uses.
        .input_buffer_size(BUFFER)
        .output_buffer_size(BUFFER)
        .max_response_header_size(BUFFER);
    if crate::tls::is_tls_url(url) {
        // The same roots and provider as `Trust::client_config`, which the
        // WebSocket clients use: ureq builds its rustls config from them.
        let roots = trust.roots()?;
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(roots.iter().map(|der| ureq::tls::Certificate::from_der(der).to_owned()).into())
            .unversioned_rustls_crypto_provider(crate::tls::provider())
            .build();
        config = config.tls_config(tls);
    }
    Ok(ureq::Agent::new_with_config(config.build()))
}

/// The `host[:port]` of an `http://` or `https://` URL, for messages; the
/// errors users saw before ureq for other schemes and malformed URLs.
fn authority(url: &str) -> Result<&str, HttpError> {
    let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else {
        return Err(if url.contains("://") { HttpError::Scheme(url.into()) } else { HttpError::Url(url.into()) });
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || rest.contains(char::is_whitespace) {
        return Err(HttpError::Url(url.into()));
    }
    Ok(authority)
}

/// ureq's error in the product's words: a certificate or handshake problem
/// explained (`tls::explain`), else what failed with which host.
fn error(url: &str, host: &str, e: ureq::Error) -> HttpError {
    use ureq::Error as E;
    let host = host.to_owned();
    match e {
        E::Rustls(r) => {
            HttpError::Tls(TlsError::Handshake { url: url.to_owned(), cause: crate::tls::explain_rustls(&r) })
        }
        E::Io(error) if crate::tls::is_tls_url(url) && crate::tls::explain(&error).is_some() => {
            HttpError::Tls(TlsError::Handshake { url: url.to_owned(), cause: crate::tls::explain_io(&error) })
        }
        E::Io(error) if is_connect_error(&error) => HttpError::Connect { host, error },
        E::Io(error) => HttpError::Io { host, error },
        E::HostNotFound => HttpError::Resolve { host, error: io::Error::new(io::ErrorKind::NotFound, "no address") },
        E::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
            HttpError::Connect { host, error: io::Error::new(io::ErrorKind::TimedOut, "connection timed out") }
        }
        E::Timeout(t) => {
            HttpError::Io { host, error: io::Error::new(io::ErrorKind::TimedOut, format!("timeout: {t}")) }
        }
        E::BadUri(_) | E::Http(_) => HttpError::Url(url.to_owned()),
        e => HttpError::Malformed { host, what: e.to_string() },
    }
}

/// An error of the connection itself (ureq says which addresses it tried only
/// through the error's kind), or of the name lookup before it.
fn is_connect_error(e: &io::Error) -> bool {
    use io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable | K::TimedOut
    ) || e.to_string().starts_with("failed to lookup address")
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts { connect: Duration::from_secs(2), io: Duration::from_secs(2) };

    #[test]
    fn urls() {
        assert_eq!(authority("http://h:1/api/v1/status").unwrap(), "h:1");
        assert_eq!(authority("http://h:1").unwrap(), "h:1");
        assert_eq!(authority("http://[::1]:9470/x").unwrap(), "[::1]:9470");
        assert_eq!(authority("https://h/x").unwrap(), "h");
        assert!(matches!(authority("ftp://h/x"), Err(HttpError::Scheme(_))));
        assert!(matches!(authority("h:1/x"), Err(HttpError::Url(_))));
        assert!(matches!(authority("http:///x"), Err(HttpError::Url(_))));
        assert!(matches!(authority("http://u@h/x"), Err(HttpError::Url(_))));
    }

    /// Serves `raw` once on a fresh port and returns the port.
    fn serve_once(raw: &'static [u8]) -> u16 {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(raw);
        });
        port
    }

    fn get(port: u16) -> Result<HttpResponse, HttpError> {
        request("GET", &format!("http://127.0.0.1:{port}/x"), &[], &Trust::default(), T, 1 << 20)
    }

    #[test]
    fn bodies_of_every_framing() {
        let r = get(serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello")).unwrap();
        assert_eq!((r.status, r.body.as_slice(), r.header("x-a")), (200, &b"hello"[..], Some("b")));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\nA\r\n, world!!!\r\n0\r\n\r\n";
        assert_eq!(get(serve_once(chunked)).unwrap().body, b"hello, world!!!");
        let r = get(serve_once(b"HTTP/1.0 401 Unauthorized\r\nConnection: close\r\n\r\nno")).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (401, &b"no"[..]));
        let short = get(serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello"));
        assert!(short.is_err(), "{short:?}");
        let cut = get(serve_once(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"));
        assert!(cut.is_err(), "{cut:?}");
        assert!(get(serve_once(b"SSH-2.0-OpenSSH\r\n\r\n")).is_err());
    }

    #[test]
    fn downloads_stream_into_a_sink() {
        let url = |port: u16| format!("http://127.0.0.1:{port}/f");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        let mut sink = Vec::new();
        let got = download(&url(serve_once(chunked)), &Trust::default(), T, &mut sink).unwrap();
        assert_eq!((got, sink.as_slice()), ((200, 5), &b"hello"[..]));
        let missing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno";
        let mut sink = Vec::new();
        assert_eq!(download(&url(serve_once(missing)), &Trust::default(), T, &mut sink).unwrap(), (404, 0));
        assert!(sink.is_empty());
        let cut = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello";
        assert!(download(&url(serve_once(cut)), &Trust::default(), T, &mut Vec::new()).is_err());
    }

    #[test]
    fn an_unreachable_host_is_a_connect_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = get(port).unwrap_err();
        assert!(matches!(err, HttpError::Connect { .. }), "{err:?}");
        assert!(err.to_string().starts_with(&format!("cannot connect to 127.0.0.1:{port}: ")), "{err}");
    }
}
