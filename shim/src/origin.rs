//! Network inputs the shim fetches itself and relays to the node (a Live TV
//! stream at `http://localhost:8096/…`, which only this machine can reach).
//!
//! A thread reads the origin into a buffer; the node's reads, which the
//! controller relays one at a time, take from it and wait for what has not
//! arrived yet. The buffer is a window: the thread stops reading the origin
//! (and TCP stops the origin) once [`AHEAD`] bytes wait unread, and bytes more
//! than [`BEHIND`] before the newest read are dropped. So a slow node slows the
//! origin down instead of growing the shim, as it would if ffmpeg read the
//! origin itself. The thread does not pace itself: `-re` stays on the node's
//! ffmpeg, which applies it to what it reads. The origin is asked the way the
//! input's own http options ask it (headers, reconnecting), which the node's
//! argument list then goes without (`ffcluster::remote::ORIGIN_OPTIONS`).

use std::io::Read;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use ffcluster::ffmpeg::cmdline::Input;

use crate::config::RelayInputs;

/// Unread bytes the shim holds at most before it stops reading the origin:
/// about a minute of a high-bitrate HD channel.
const AHEAD: usize = 16 << 20;
/// Bytes kept before the newest read (a read may start a little back). A
/// live split job reads the stream twice, for the controller and for the
/// finisher, which may be apart by what arrived while the job was starting.
const BEHIND: usize = 16 << 20;
/// What one read of the origin asks for.
const PIECE: usize = 64 << 10;
/// Connecting and the response head; the body has no time limit (it is live).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the shim relays input `url` under `policy`. `own` are this
/// machine's addresses ([`own_addresses`]).
pub fn relayed(url: &str, policy: RelayInputs, own: &dyn Fn() -> Vec<IpAddr>) -> bool {
    let Some(host) = http_host(url) else { return false };
    match policy {
        RelayInputs::None => false,
        RelayInputs::All => true,
        RelayInputs::Local => is_loopback(host) || host.parse::<IpAddr>().is_ok_and(|ip| own().contains(&ip)),
    }
}

/// The host of an `http://` or `https://` URL, without brackets, port or user
/// information; `None` for other schemes.
fn http_host(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => host_port.split(':').next()?,
    };
    (!host.is_empty()).then_some(host)
}

/// `localhost` (and its subdomains, RFC 6761), 127.0.0.0/8, `::1`, and IPv4
/// loopback written as an IPv6 mapped address.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        Err(_) => false,
    }
}

/// This machine's own addresses, from its interfaces.
pub fn own_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect()
}

/// The request headers an input's own http options ask for, as ffmpeg's http
/// protocol sends them (`-user_agent`, `-referer`, `-headers`).
fn request_headers(input: &Input) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let agent = input.opts.iter().rev().find(|o| matches!(o.name(), "user_agent" | "user-agent"));
    // ffmpeg's default, so an origin that looks at it sees the same client.
    let agent = agent.and_then(|o| o.value.clone()).unwrap_or_else(|| "Lavf".to_owned());
    out.push(("User-Agent".to_owned(), agent));
    if let Some(r) = input.last_value("referer") {
        out.push(("Referer".to_owned(), r.to_owned()));
    }
    for line in input.last_value("headers").unwrap_or("").split('\n') {
        if let Some((name, value)) = line.trim_end_matches('\r').split_once(':')
            && !name.trim().is_empty()
        {
            out.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    out
}

/// One relayed input: the origin's bytes as they arrive.
#[derive(Debug)]
pub struct Origin {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    window: Mutex<Window>,
    /// The reader thread waits here for room.
    room: Condvar,
    /// Reads wait here for bytes.
    arrived: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Window {
    /// Stream offset of `data[0]`.
    base: u64,
    data: Vec<u8>,
    /// End of the newest read: what lies before it is consumed.
    consumed: u64,
    /// How the origin ended: `Ok` at its clean end, `Err` when it broke.
    ended: Option<Result<(), String>>,
    /// Nobody reads any more: the thread stops and drops the connection.
    closed: bool,
}

impl Window {
    fn end(&self) -> u64 {
        self.base + self.data.len() as u64
    }
}

impl Origin {
    /// Requests `input`'s URL with its own http options and starts reading the
    /// body. An error (unreachable, an HTTP error status) means the job should
    /// run locally, where ffmpeg reports it in its own words.
    pub fn open(input: &Input) -> Result<Origin, String> {
        // ffmpeg checks an https origin's certificate only with -tls_verify 1.
        let verify = input.last_value("tls_verify").is_some_and(|v| v.trim() == "1");
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(HEAD_TIMEOUT))
            .tls_config(ureq::tls::TlsConfig::builder().disable_verification(!verify).build())
            .build();
        let agent = ureq::Agent::new_with_config(config);
        let url = input.url.raw.clone();
        let headers = request_headers(input);
        let get = move |from: u64| -> Result<Body, String> {
            let mut request = agent.get(&url);
            for (name, value) in &headers {
                request = request.header(name, value);
            }
            if from > 0 {
                // As ffmpeg asks when it reconnects.
                request = request.header("Range", format!("bytes={from}-"));
            }
            let response = request.call().map_err(|e| format!("{url}: {e}"))?;
            Ok(Box::new(response.into_body().into_reader()))
        };
        let body = get(0)?;
        let policy = Reconnect::of(input);
        Ok(Origin::from_reader(body, policy.map(|p| (p, Box::new(get) as Reopen))))
    }

    /// Starts the thread that reads `body` into the window, and reconnects
    /// with `reopen` (from a byte offset) when the policy says so.
    fn from_reader(body: Body, reopen: Option<(Reconnect, Reopen)>) -> Origin {
        let shared = Arc::new(Shared {
            window: Mutex::new(Window::default()),
            room: Condvar::new(),
            arrived: tokio::sync::Notify::new(),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("origin".into())
            .spawn(move || fill(&s, body, reopen))
            .expect("a thread can be started");
        Origin { shared }
    }

    /// Up to `max` bytes at `offset`, as soon as at least one is there; empty at
    /// the origin's clean end.
    pub async fn read(&self, offset: u64, max: usize) -> Result<Vec<u8>, String> {
        self.read_at(offset, max, true).await
    }

    /// [`Origin::read`] that leaves the bytes unread: the stream is probed
    /// before the job starts, and the job reads it from its beginning.
    pub async fn peek(&self, offset: u64, max: usize) -> Result<Vec<u8>, String> {
        self.read_at(offset, max, false).await
    }

    async fn read_at(&self, offset: u64, max: usize, consume: bool) -> Result<Vec<u8>, String> {
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            // Registered before looking, so a wake-up in between is not lost.
            arrived.as_mut().enable();
            {
                let mut w = self.shared.lock();
                if offset < w.base {
                    return Err(format!("byte {offset} of the stream is no longer buffered"));
                }
                if offset < w.end() {
                    let from = (offset - w.base) as usize;
                    let n = max.min(w.data.len() - from);
                    let bytes = w.data[from..from + n].to_vec();
                    if !consume {
                        return Ok(bytes);
                    }
                    w.consumed = w.consumed.max(offset + n as u64);
                    let keep_from = w.consumed.saturating_sub(BEHIND as u64);
                    // Dropping in steps keeps the copying rare.
                    if keep_from >= w.base + BEHIND as u64 {
                        let drop = (keep_from - w.base) as usize;
                        w.data.drain(..drop);
                        w.base = keep_from;
                    }
                    self.shared.room.notify_all();
                    return Ok(bytes);
                }
                match &w.ended {
                    Some(Ok(())) => return Ok(Vec::new()),
                    Some(Err(e)) => return Err(e.clone()),
                    None => {}
                }
            }
            arrived.await;
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        // The thread notices at its next step; if it is blocked reading a silent
        // origin, the connection goes when the shim exits, right after the job.
        self.shared.lock().closed = true;
        self.shared.room.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A response body being read.
type Body = Box<dyn Read + Send>;
/// Requests the origin again, from a byte offset.
type Reopen = Box<dyn FnMut(u64) -> Result<Body, String> + Send>;

/// When the shim reconnects to the origin, from the input's own options, as
/// ffmpeg's http protocol does for a stream: only with `-reconnect_streamed`,
/// after an error, and at the end too with `-reconnect_at_eof`; waiting 0 s,
/// then 1, 3, 7… while that stays within `-reconnect_delay_max` (120 s).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reconnect {
    at_eof: bool,
    delay_max: Duration,
}

impl Reconnect {
    fn of(input: &Input) -> Option<Reconnect> {
        let on = |name: &str| input.last_value(name).is_some_and(|v| v.trim() != "0" && v.trim() != "false");
        if !on("reconnect_streamed") {
            return None;
        }
        let delay_max = input.last_value("reconnect_delay_max").and_then(|v| v.trim().parse().ok()).unwrap_or(120);
        Some(Reconnect { at_eof: on("reconnect_at_eof"), delay_max: Duration::from_secs(delay_max) })
    }
}

/// The reader thread: the origin's body into the window, never more than
/// [`AHEAD`] unread bytes.
fn fill(shared: &Shared, mut body: Body, mut reopen: Option<(Reconnect, Reopen)>) {
    let mut buf = vec![0u8; PIECE];
    let mut delay = Duration::ZERO;
    loop {
        {
            let mut w = shared.lock();
            while !w.closed && w.end() - w.consumed >= AHEAD as u64 {
                w = shared.room.wait(w).unwrap_or_else(|e| e.into_inner());
            }
            if w.closed {
                return;
            }
        }
        let got = match body.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(n) if n > 0 => Ok(n),
            Ok(_) => Err(None),
            Err(e) => Err(Some(e.to_string())),
        };
        if let (Err(error), Some((policy, open))) = (&got, reopen.as_mut())
            && (error.is_some() || policy.at_eof)
            && delay <= policy.delay_max
        {
            std::thread::sleep(delay);
            delay = delay * 2 + Duration::from_secs(1);
            let from = shared.lock().end();
            if let Ok(next) = open(from) {
                body = next;
            }
            continue;
        }
        let mut w = shared.lock();
        match got {
            Ok(n) => {
                w.data.extend_from_slice(&buf[..n]);
                delay = Duration::ZERO;
            }
            Err(None) => w.ended = Some(Ok(())),
            Err(Some(e)) => w.ended = Some(Err(e)),
        }
        let ended = w.ended.is_some();
        drop(w);
        shared.arrived.notify_waiters();
        if ended {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffcluster::ffmpeg::CommandLine;
    use std::net::Ipv4Addr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn which_urls_are_relayed() {
        let own = || vec![IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10)), "fe80::1".parse().unwrap()];
        let local = |u: &str| relayed(u, RelayInputs::Local, &own);
        for u in [
            "http://localhost:8096/LiveTv/LiveStreamFiles/ab/stream.ts",
            "http://LOCALHOST./x",
            "https://user:pw@127.0.0.53:8920/x",
            "http://[::1]:8096/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://192.168.1.10:8096/LiveTv/LiveStreamFiles/ab/stream.ts",
            "http://[fe80::1]/x",
            "http://tv.localhost/x",
        ] {
            assert!(local(u), "{u}");
        }
        for u in [
            "http://192.168.1.11:8096/x",
            "http://example.com/x",
            "http://localhost.example.com/x",
            "http://128.0.0.1/x",
            "rtsp://localhost/x",
            "udp://127.0.0.1:1234",
            "/media/localhost.ts",
            "file:http://localhost/x",
        ] {
            assert!(!local(u), "{u}");
        }
        assert!(relayed("http://example.com/x", RelayInputs::All, &own));
        assert!(!relayed("rtsp://example.com/x", RelayInputs::All, &own));
        assert!(!relayed("http://localhost/x", RelayInputs::None, &own));
        assert!(own_addresses().iter().any(IpAddr::is_loopback), "{:?}", own_addresses());
    }

    #[test]
    fn the_input_options_become_request_headers() {
        let cl = CommandLine::parse(&[
            "-user_agent",
            "Jellyfin/10.11",
            "-referer",
            "http://r/",
            "-headers",
            "X-A: 1\r\nX-B:two\r\n",
            "-i",
            "http://localhost/x",
            "out.ts",
        ])
        .unwrap();
        let h = request_headers(&cl.inputs[0]);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(h, [("User-Agent", "Jellyfin/10.11"), ("Referer", "http://r/"), ("X-A", "1"), ("X-B", "two")]);
        let plain = CommandLine::parse(&["-i", "http://localhost/x", "out.ts"]).unwrap();
        assert_eq!(request_headers(&plain.inputs[0]), [("User-Agent".to_owned(), "Lavf".to_owned())]);
    }

    /// A body that hands out `total` bytes in pieces and counts what was taken.
    struct Counted {
        taken: Arc<AtomicUsize>,
        total: usize,
    }

    impl Read for Counted {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let at = self.taken.load(Ordering::SeqCst);
            let n = buf.len().min(self.total - at);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = ((at + i) % 251) as u8;
            }
            self.taken.fetch_add(n, Ordering::SeqCst);
            Ok(n)
        }
    }

    #[tokio::test]
    async fn a_slow_reader_holds_the_origin_back() {
        let taken = Arc::new(AtomicUsize::new(0));
        let origin = Origin::from_reader(Box::new(Counted { taken: taken.clone(), total: 4 * AHEAD }), None);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while taken.load(Ordering::SeqCst) < AHEAD {
            assert!(std::time::Instant::now() < deadline, "the window did not fill");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200));
        // Nobody has read: the thread stopped at the window.
        let idle = taken.load(Ordering::SeqCst);
        assert!((AHEAD..AHEAD + PIECE).contains(&idle), "{idle}");
        let first = origin.read(0, 1000).await.unwrap();
        assert_eq!(first.len(), 1000);
        assert_eq!(first[250..252], [250, 0]);
        // Reading everything, in order, gets every byte once, then the end.
        let mut at = 1000u64;
        loop {
            let b = origin.read(at, 256 << 10).await.unwrap();
            if b.is_empty() {
                break;
            }
            assert_eq!(b[0], (at % 251) as u8);
            at += b.len() as u64;
            let held = taken.load(Ordering::SeqCst) as u64 - at;
            assert!(held <= (AHEAD + PIECE) as u64, "{held}");
        }
        assert_eq!(at, 4 * AHEAD as u64);
        assert!(origin.read(0, 10).await.unwrap_err().contains("no longer buffered"));
    }

    #[tokio::test]
    async fn a_broken_origin_is_an_error_after_its_bytes() {
        let body = std::io::Cursor::new(b"abc".to_vec()).chain(Broken);
        let origin = Origin::from_reader(Box::new(body), None);
        assert_eq!(origin.read(0, 10).await.unwrap(), b"abc");
        assert!(origin.read(3, 10).await.unwrap_err().contains("reset"));
    }

    #[tokio::test]
    async fn reconnects_as_ffmpeg_would_when_told_to() {
        let input = |opts: &[&str]| {
            let mut args = opts.to_vec();
            args.extend(["-i", "http://localhost/x", "out.ts"]);
            CommandLine::parse(&args).unwrap().inputs.remove(0)
        };
        assert_eq!(Reconnect::of(&input(&["-reconnect", "1"])), None);
        let jellyfin = input(&["-reconnect_at_eof", "1", "-reconnect_streamed", "1", "-reconnect_delay_max", "2"]);
        let policy = Reconnect::of(&jellyfin).unwrap();
        assert_eq!(policy, Reconnect { at_eof: true, delay_max: Duration::from_secs(2) });

        // A body that breaks after "abc", then one that ends after "de": the
        // second request asks from byte 3; after the end it reconnects twice
        // more (0 s, 1 s; 3 s is past the 2 s maximum) and then ends.
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        let reopen: Reopen = Box::new(move |from| {
            log.lock().unwrap().push(from);
            let body: Body =
                if from == 3 { Box::new(std::io::Cursor::new(b"de".to_vec())) } else { Box::new(std::io::empty()) };
            Ok(body)
        });
        let first: Body = Box::new(std::io::Cursor::new(b"abc".to_vec()).chain(Broken));
        let origin = Origin::from_reader(first, Some((policy, reopen)));
        let mut got = Vec::new();
        loop {
            let b = origin.read(got.len() as u64, 10).await.unwrap();
            if b.is_empty() {
                break;
            }
            got.extend(b);
        }
        assert_eq!(got, b"abcde");
        assert_eq!(*asked.lock().unwrap(), [3, 5, 5]);
    }

    struct Broken;

    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset"))
        }
    }
}
