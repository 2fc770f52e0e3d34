//! A real player on the cluster's HLS output: hls.js (from the npm registry,
//! pinned in tests/player/package-lock.json and installed by
//! contrib/scripts/ensure-deps.sh) in headless Chromium (Debian's package) plays
//! Jellyfin's HLS job, split across two real nodes, in mpegts and fMP4, from
//! start to end at a high playback rate. It must reach the end with no fatal
//! error and no stall over 2 s. The direct ffmpeg output of the same command
//! line is played first, as a check of the harness itself.
//!
//! The page (tests/player/player.html, player.js) measures; this file judges.
//! Chromium, hls.js and ffmpeg are required: a missing one fails the test.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::cluster::*;

/// Chromium's ceiling for HTMLMediaElement.playbackRate.
const RATE: f64 = 16.0;
/// The longest the picture may freeze while playing.
const MAX_STALL_MS: u64 = 2000;
/// Page load to the first frame moving, on loopback.
const MAX_STARTUP_MS: u64 = 5000;
const CLIP_SECONDS: u32 = 24;
const SEGMENT_SECONDS: u32 = 3;
const MD5: &str = "0cc175b9c0f1b6a831c399e269772661";

fn player_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/player")
}

/// hls.js's dist directory; fails loudly when `npm ci` has not been run.
fn hls_dist() -> PathBuf {
    let dist = player_dir().join("node_modules/hls.js/dist");
    assert!(
        dist.join("hls.min.js").is_file(),
        "{} is missing: this test needs hls.js from npm (contrib/scripts/ensure-deps.sh runs \
         `npm ci` in tests/player)",
        dist.join("hls.min.js").display()
    );
    dist
}

/// A tiny static file server on loopback: `/<prefix>/<file>` from the matching
/// root, with the MIME types HLS players expect; `POST /result?id=N` hands the
/// page's verdict to the test.
struct Server {
    port: u16,
    results: Receiver<(String, String)>,
    /// `(status, path)` of every GET, for the failure messages.
    log: Arc<Mutex<Vec<(u16, String)>>>,
}

fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "m3u8" => "application/vnd.apple.mpegurl",
        "ts" => "video/mp2t",
        "mp4" | "m4s" => "video/mp4",
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "map" | "json" => "application/json",
        _ => "application/octet-stream",
    }
}

fn serve(roots: Vec<(String, PathBuf)>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let roots = Arc::new(roots);
    let log2 = log.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (roots, tx, log) = (roots.clone(), tx.clone(), log2.clone());
            std::thread::spawn(move || {
                let _ = handle(conn, &roots, &tx, &log);
            });
        }
    });
    Server { port, results: rx, log }
}

fn handle(
    conn: TcpStream,
    roots: &[(String, PathBuf)],
    tx: &Sender<(String, String)>,
    log: &Mutex<Vec<(u16, String)>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    // One request per connection is enough for a test; answer `Connection: close`.
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        // A speculative preconnect that never sent a request.
        return Ok(());
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("/").to_owned());
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let reply = |w: &mut TcpStream, status: u16, ctype: &str, body: &[u8]| -> std::io::Result<()> {
        let reason = match status {
            200 => "OK",
            204 => "No Content",
            _ => "Not Found",
        };
        write!(
            w,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        w.write_all(body)?;
        w.flush()
    };
    if method == "POST" && path == "/result" {
        let mut body = vec![0; length];
        r.read_exact(&mut body)?;
        let id = query.strip_prefix("id=").unwrap_or("").to_owned();
        let _ = tx.send((id, String::from_utf8_lossy(&body).into_owned()));
        return reply(&mut w, 204, "text/plain", b"");
    }
    let file = roots.iter().find_map(|(prefix, dir)| {
        let rest = path.strip_prefix(prefix.as_str())?.strip_prefix('/')?;
        (!rest.is_empty() && !rest.split('/').any(|s| s == ".." || s.is_empty())).then(|| dir.join(rest))
    });
    match file.and_then(|f| std::fs::read(&f).ok().map(|b| (f, b))) {
        Some((f, body)) if method == "GET" => {
            log.lock().unwrap().push((200, path.to_owned()));
            reply(&mut w, 200, mime(&f), &body)
        }
        _ => {
            log.lock().unwrap().push((404, path.to_owned()));
            reply(&mut w, 404, "text/plain", b"not found")
        }
    }
}

/// Headless Chromium on `url`, in its own process group (killed on drop).
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    stderr: std::thread::JoinHandle<String>,
}

impl Browser {
    fn open(url: &str) -> Browser {
        let (mut cmd, profile) = support::headless_chromium("player");
        let mut child = cmd
            .args(["--autoplay-policy=no-user-gesture-required", "--mute-audio"])
            // Real time: media playback follows the wall clock, not virtual time.
            .args(["--disable-background-timer-throttling", "--disable-renderer-backgrounding"])
            .arg(url)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Browser { child, _profile: profile, stderr }
    }

    /// Stops the browser and returns its stderr.
    fn close(mut self) -> String {
        self.stop();
        let h = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new));
        h.join().unwrap_or_default()
    }

    fn stop(&mut self) {
        use nix::sys::signal::{Signal, killpg};
        use nix::unistd::Pid;
        let group = Pid::from_raw(self.child.id() as i32);
        if let Ok(None) = self.child.try_wait() {
            let _ = killpg(group, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Whatever of the group is left (renderer, zygote, GPU process).
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Plays `playlist` (a URL path on `server`) in Chromium and returns the page's verdict.
fn play(server: &Server, id: &str, playlist: &str) -> Value {
    let limit = Duration::from_secs(45);
    let url = format!(
        "http://127.0.0.1:{}/page/player.html?id={id}&rate={RATE}&timeout={}&src={playlist}",
        server.port,
        limit.as_secs()
    );
    let browser = Browser::open(&url);
    // The page gives up (and reports) at `limit`; leave it room for that.
    let got = loop {
        match server.results.recv_timeout(limit + Duration::from_secs(15)) {
            Ok((got, body)) if got == id => break Ok(body),
            Ok(_) => continue,
            Err(e) => break Err(e),
        }
    };
    let stderr = browser.close();
    match got {
        Ok(body) => serde_json::from_str(&body).unwrap_or_else(|e| panic!("verdict of {id}: {e}: {body}")),
        Err(e) => {
            let log = server.log.lock().unwrap().clone();
            panic!("no verdict from the page for {id} ({e}); requests {log:?}; chromium: {stderr}")
        }
    }
}

/// What is wrong with one playback, if anything; `segments` are the playlist's
/// `#EXTINF` durations.
fn judge(v: &Value, segments: &[f64]) -> Vec<String> {
    let mut bad = Vec::new();
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    // `a < b`, or `a` unknown.
    let below = |a: f64, b: f64| a.is_nan() || a < b;
    if v["verdict"] != "ended" {
        bad.push(format!("did not reach the end: verdict {} ({})", v["verdict"], v["reason"]));
    }
    if v["ended"] != true {
        bad.push("the video element did not end".into());
    }
    if !v["fatal"].is_null() {
        bad.push(format!("fatal hls.js error: {}", v["fatal"]));
    }
    let startup = f("startup_ms");
    if startup.is_nan() || startup > MAX_STARTUP_MS as f64 {
        bad.push(format!("the first frame took {} ms (at most {MAX_STARTUP_MS})", v["startup_ms"]));
    }
    if f("max_stall_ms") > MAX_STALL_MS as f64 {
        bad.push(format!("stalled {} ms (at most {MAX_STALL_MS}): {}", v["max_stall_ms"], v["stalls"]));
    }
    let listed: f64 = segments.iter().sum();
    let off = (f("duration") - listed).abs();
    if off.is_nan() || off > 0.5 {
        bad.push(format!("duration {} s, the playlist lists {listed:.3} s", v["duration"]));
    }
    if below(f("current_time"), f("duration") - 0.25) {
        bad.push(format!("stopped at {} s of {} s", v["current_time"], v["duration"]));
    }
    if v["playlist_fragments"].as_u64() != Some(segments.len() as u64) {
        bad.push(format!("hls.js saw {} fragments, the playlist has {}", v["playlist_fragments"], segments.len()));
    }
    let sns: BTreeSet<u64> = v["frag_sns"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
    if sns.len() != segments.len() {
        bad.push(format!("loaded fragments {sns:?} of {}", segments.len()));
    }
    if v["video_width"] != 640 || v["video_height"] != 360 {
        bad.push(format!("picture {}x{}, expected 640x360", v["video_width"], v["video_height"]));
    }
    // The clip has 24 frames a second; the browser counts every one, shown or dropped.
    let frames = (listed * 24.0).round();
    if below(f("frames_total"), frames - 2.0) {
        bad.push(format!("{} video frames decoded, the media has {frames}", v["frames_total"]));
    }
    if v["buffered"].as_array().map_or(0, Vec::len) != 1 {
        bad.push(format!("holes in the buffered media: {}", v["buffered"]));
    }
    // Nothing here seeks: a seek is hls.js jumping a hole in the media.
    let skipped: f64 = v["seeks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| (s["to"].as_f64().unwrap() - s["from"].as_f64().unwrap()).max(0.0))
        .sum();
    if skipped > 0.5 {
        bad.push(format!("hls.js skipped {skipped:.3} s of media: {}", v["seeks"]));
    }
    bad
}

fn figures(label: &str, v: &Value) -> String {
    let errors: Vec<String> = v["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| format!("{} at {}", e["details"].as_str().unwrap_or("?"), e["ct"]))
        .collect();
    format!(
        "{label}: {} ended={} duration {} s, reached {} s; startup {} ms, played in {} ms wall, rate {}x \
         (asked {}, set {}); fragments {} (+{} init) of {}; max stall {} ms {}, waiting {}, seeks {}; \
         frames {} ({} dropped) {}x{}; buffered {}; non-fatal errors {errors:?}; hls.js {}",
        v["verdict"],
        v["ended"],
        v["duration"],
        v["current_time"],
        v["startup_ms"],
        v["play_wall_ms"],
        v["rate_achieved"],
        v["rate_requested"],
        v["rate_set"],
        v["frags_loaded"],
        v["init_loaded"],
        v["playlist_fragments"],
        v["max_stall_ms"],
        v["stalls"],
        v["waiting"],
        v["seeks"],
        v["frames_total"],
        v["frames_dropped"],
        v["video_width"],
        v["video_height"],
        v["buffered"],
        v["hls_version"],
    )
}

#[test]
fn hls_js_plays_split_hls_output_to_the_end() {
    let started = Instant::now();
    let dist = hls_dist();
    assert!(
        Path::new(support::CHROMIUM).is_file(),
        "{} is missing (contrib/scripts/ensure-deps.sh)",
        support::CHROMIUM
    );
    let c = Cluster::start(2);
    let input = c.work.join("clip.mkv");
    make_clip(&input, CLIP_SECONDS, "640x360", &[]);

    let mut roots = vec![("/page".to_owned(), player_dir()), ("/hls".to_owned(), dist)];
    let mut runs = Vec::new();
    for fmp4 in [false, true] {
        let kind = if fmp4 { "fmp4" } else { "mpegts" };
        for how in ["direct", "split"] {
            let dir = c.work.join(format!("{how}-{kind}"));
            std::fs::create_dir_all(&dir).unwrap();
            let args = jellyfin_hls(&input, &dir, MD5, fmp4, SEGMENT_SECONDS);
            let t = Instant::now();
            if how == "direct" {
                run_ok(Command::new(real("ffmpeg")).args(&args).stdin(Stdio::null()));
            } else {
                let out = c.shim().env("FFCLUSTER_MODE", "split").args(&args).stdin(Stdio::null()).output().unwrap();
                assert!(
                    out.status.success(),
                    "shim failed: {}\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    c.all_logs()
                );
            }
            eprintln!("{how} {kind}: encoded in {:.1} s", t.elapsed().as_secs_f64());
            roots.push((format!("/media/{how}-{kind}"), dir.clone()));
            runs.push((how, kind, dir));
        }
    }

    // The cluster really split both jobs across both nodes.
    let status = c.status();
    let jobs = status["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{status}");
    for job in jobs {
        assert_eq!(job["mode"], "split", "{job}\n{}", c.log("shim.log"));
        assert_eq!(job["state"], "done", "{job}");
        assert_eq!(job["nodes"].as_array().unwrap().len(), 2, "both nodes took chunks: {job}");
    }

    let server = serve(roots);
    let mut failures = Vec::new();
    let mut direct_ok = std::collections::HashMap::new();
    for (n, (how, kind, dir)) in runs.iter().enumerate() {
        let label = format!("{how} {kind}");
        let segments = extinf(&dir.join(format!("{MD5}.m3u8")));
        let v = play(&server, &n.to_string(), &format!("/media/{how}-{kind}/{MD5}.m3u8"));
        eprintln!("{}", figures(&label, &v));
        let bad = judge(&v, &segments);
        if *how == "direct" {
            direct_ok.insert(*kind, bad.is_empty());
        }
        if !bad.is_empty() {
            let harness = if *how == "direct" {
                " (the direct ffmpeg output fails too: the harness or the browser is at fault, not the cluster)"
                    .to_owned()
            } else if direct_ok.get(kind) == Some(&true) {
                format!(
                    " (the direct ffmpeg output of the same command played fine: the cluster's {kind} output is at fault)"
                )
            } else {
                String::new()
            };
            failures.push(format!("{label}{harness}:\n  - {}\n  events: {}", bad.join("\n  - "), v["events"]));
        }
    }
    let missing: Vec<_> =
        server.log.lock().unwrap().iter().filter(|(s, p)| *s != 200 && p != "/favicon.ico").cloned().collect();
    assert!(missing.is_empty(), "the player asked for files that do not exist: {missing:?}");
    eprintln!("player test: {:.1} s in all", started.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
