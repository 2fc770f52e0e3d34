//! Whole-file HTTP GET of a job's side files (subtitles, fonts, LUTs) from the
//! controller's relay into scratch.
//!
//! Hand-written HTTP/1.1 over a tokio `TcpStream`, with TLS (tokio-rustls and
//! the node's `tls_ca` trust) for an `https://` controller: the files are small,
//! and a client crate would add a second HTTP stack for one GET. ffmpeg reads
//! the inputs itself.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use ffcluster::tls::Trust;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// No progress for this long and the download fails.
const IDLE: Duration = Duration::from_secs(30);
/// Longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// A connection to the relay, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Downloads `url` into a new file `dest` and returns its size, which must be
/// `expected` (the size the shim offered). An `https://` URL is verified against
/// `trust`.
pub async fn download(url: &str, trust: &Trust, dest: &Path, expected: u64) -> anyhow::Result<u64> {
    let (host, path) = split_url(url)?;
    let tls = ffcluster::tls::is_tls_url(url);
    let addr = ffcluster::tls::socket_target(url, host);
    let tcp = idle(TcpStream::connect(&addr)).await?.with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let stream: Box<dyn Stream> = if tls {
        let connector = tokio_rustls::TlsConnector::from(trust.client_config()?);
        let name = ffcluster::tls::server_name(host)?;
        match idle(connector.connect(name, tcp)).await? {
            Ok(s) => Box::new(s),
            Err(e) => {
                let why = ffcluster::tls::explain(&e).unwrap_or_else(|| e.to_string());
                bail!("TLS with {url} failed: {why}")
            }
        }
    } else {
        Box::new(tcp)
    };
    let mut conn = BufReader::new(stream);
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ffcluster-node\r\nConnection: close\r\n\r\n");
    idle(conn.get_mut().write_all(request.as_bytes())).await??;

    let head = read_head(&mut conn).await?;
    let (status, length, chunked) = parse_head(&head)?;
    ensure!(status == 200, "GET {url}: HTTP status {status}");

    let mut file = tokio::fs::File::create(dest).await.with_context(|| format!("creating {}", dest.display()))?;
    let size = if chunked {
        copy_chunked(&mut conn, &mut file).await?
    } else {
        copy_body(&mut conn, &mut file, length).await?
    };
    file.flush().await?;
    file.sync_data().await.ok();
    ensure!(size == expected, "GET {url}: got {size} bytes, the shim offered {expected}");
    Ok(size)
}

async fn idle<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    tokio::time::timeout(IDLE, f).await.map_err(|_| anyhow::anyhow!("no progress for {IDLE:?}"))
}

/// `("host:port", "/path?query")` of an `http://` or `https://` URL.
fn split_url(url: &str) -> anyhow::Result<(&str, &str)> {
    let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else {
        bail!("cannot fetch {url:?}: only http:// and https:// controller URLs are supported for side files")
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    ensure!(!host.is_empty() && !host.contains('@'), "bad URL {url:?}");
    Ok((host, path))
}

async fn read_head<R: AsyncBufReadExt + Unpin>(r: &mut R) -> anyhow::Result<String> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = idle(r.read_until(b'\n', &mut head)).await??;
        ensure!(n > 0, "connection closed in the response head");
        ensure!(head.len() <= MAX_HEAD, "response head longer than {MAX_HEAD} bytes");
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            return Ok(String::from_utf8_lossy(&head).into_owned());
        }
    }
}

/// (status, Content-Length, chunked) of a response head.
fn parse_head(head: &str) -> anyhow::Result<(u16, Option<u64>, bool)> {
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or("");
    ensure!(version.starts_with("HTTP/1."), "not an HTTP/1 response: {status_line:?}");
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).context("no status code")?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.trim().eq_ignore_ascii_case("content-length") {
            length = Some(value.parse().with_context(|| format!("bad Content-Length {value:?}"))?);
        } else if name.trim().eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().split(',').any(|t| t.trim() == "chunked");
        }
    }
    Ok((status, length, chunked))
}

async fn copy_body<R, W>(r: &mut R, w: &mut W, length: Option<u64>) -> anyhow::Result<u64>
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let want = match length {
            Some(l) if total >= l => break,
            Some(l) => buf.len().min((l - total) as usize),
            None => buf.len(),
        };
        let n = idle(r.read(&mut buf[..want])).await??;
        if n == 0 {
            ensure!(length.is_none(), "connection closed after {total} of {} bytes", length.unwrap_or(0));
            break;
        }
        w.write_all(&buf[..n]).await?;
        total += n as u64;
    }
    Ok(total)
}

async fn copy_chunked<R, W>(r: &mut R, w: &mut W) -> anyhow::Result<u64>
where
    R: AsyncBufReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut total = 0u64;
    let mut line = String::new();
    loop {
        line.clear();
        ensure!(idle(r.read_line(&mut line)).await?? > 0, "connection closed in a chunk header");
        let hex = line.trim().split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(hex, 16).with_context(|| format!("bad chunk size {hex:?}"))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                line.clear();
                let n = idle(r.read_line(&mut line)).await??;
                if n == 0 || line.trim().is_empty() {
                    return Ok(total);
                }
            }
        }
        let copied = copy_body(r, w, Some(size)).await?;
        total += copied;
        line.clear();
        idle(r.read_line(&mut line)).await??;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_heads() {
        assert_eq!(
            split_url("http://127.0.0.1:9470/api/v1/files/a/1").unwrap(),
            ("127.0.0.1:9470", "/api/v1/files/a/1")
        );
        assert_eq!(split_url("http://h").unwrap(), ("h", "/"));
        assert_eq!(split_url("https://h:1/x").unwrap(), ("h:1", "/x"));
        assert!(split_url("ftp://h/x").is_err());
        let head = "HTTP/1.1 200 OK\r\ncontent-length: 12\r\nX: y\r\n\r\n";
        assert_eq!(parse_head(head).unwrap(), (200, Some(12), false));
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(parse_head(head).unwrap(), (200, None, true));
        assert!(parse_head("SSH-2.0\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn decodes_chunked_bodies() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n";
        let mut r = BufReader::new(&body[..]);
        let mut out = Vec::new();
        assert_eq!(copy_chunked(&mut r, &mut out).await.unwrap(), 12);
        assert_eq!(out, b"hello, world");
    }
}
