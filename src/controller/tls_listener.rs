//! The controller's listener when TLS is configured: every connection is a TLS
//! connection, or it is closed.
//!
//! Handshakes run in their own tasks, each bounded by the hello timeout, so a
//! client that connects and says nothing cannot hold up accepting others; axum
//! is handed only connections whose handshake is done. A client that speaks
//! plain HTTP to this port gets a 400 saying to use `https://`, instead of a
//! silent close.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, warn};

/// Handshaken connections waiting for axum to take them.
const QUEUE: usize = 64;
/// How much of a plain-HTTP request is read before it is answered (closing a
/// socket with unread bytes resets it, and the client could miss the answer).
const MAX_PLAIN_HEAD: usize = 16 * 1024;

/// What a plain-HTTP request to the TLS port gets back.
const PLAIN_HTTP_BODY: &str = "This controller serves HTTPS only: use an https:// URL.\n";

/// An [`axum::serve::Listener`] of TLS connections.
pub(crate) struct TlsListener {
    incoming: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl TlsListener {
    /// Accepts on `tcp` and does each handshake within `handshake_timeout`.
    pub(crate) fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>, handshake_timeout: Duration) -> Self {
        let local = tcp.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, incoming) = mpsc::channel(QUEUE);
        let acceptor = tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), handshake_timeout, tx));
        TlsListener { incoming, local, acceptor }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(conn) => conn,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, usually: wait instead of spinning.
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // A response goes out as TLS records written one after another (session
        // tickets, head, body): with Nagle on, a record waits for the ACK of the
        // one before, which a client delays by up to 40 ms (measured on the
        // shim's https probes with ureq, which sends its request apart from
        // its handshake Finished).
        if let Err(e) = stream.set_nodelay(true) {
            debug!(%peer, "TCP_NODELAY: {e}");
        }
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(handshake_timeout, handshake(stream, &acceptor)).await {
                Ok(Ok(Some(tls))) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Ok(None)) => debug!(%peer, "plain HTTP on the TLS port: answered 400"),
                Ok(Err(e)) => debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => debug!(%peer, "no TLS handshake within {handshake_timeout:?}"),
            }
        });
    }
}

/// The TLS connection, or `None` when the client spoke plain HTTP.
async fn handshake(stream: TcpStream, acceptor: &TlsAcceptor) -> io::Result<Option<TlsStream<TcpStream>>> {
    let mut first = [0u8; 1];
    // A TLS connection starts with a handshake record (0x16); an HTTP request
    // with a method name in capitals.
    if stream.peek(&mut first).await? == 1 && first[0].is_ascii_uppercase() {
        let mut stream = stream;
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_PLAIN_HEAD {
            match stream.read(&mut buf).await? {
                0 => break,
                n => head.extend_from_slice(&buf[..n]),
            }
        }
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            PLAIN_HTTP_BODY.len(),
            PLAIN_HTTP_BODY
        );
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        return Ok(None);
    }
    acceptor.accept(stream).await.map(Some)
}
