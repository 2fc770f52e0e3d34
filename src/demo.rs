//! `ffcluster demo`: the main job, end to end, on an embedded local cluster.
//!
//! It starts a controller and two node agents on loopback (real processes, the
//! same binaries a deployment runs), generates a sample clip, runs Jellyfin
//! 10.11's HLS command line through the shim installed as `ffmpeg`, checks the
//! result by decoding it, and says how to point Jellyfin at the shim.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ffcluster::controller::status::Status;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Working directory for the clip, the output and the logs (emptied first).
    #[arg(long, default_value_os_t = std::env::temp_dir().join("ffcluster-demo"))]
    dir: PathBuf,
    /// Length of the generated clip in seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u32,
    /// Number of node agents to start.
    #[arg(long, default_value_t = 2)]
    nodes: u32,
}

/// Child processes that are stopped (SIGTERM, then SIGKILL) however the demo ends.
#[derive(Debug)]
pub(crate) struct Children(pub(crate) Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // Only a child not yet reaped: a reaped one's pid may belong to another process.
            if matches!(c.try_wait(), Ok(None)) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for c in &mut self.0 {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let bins = std::env::current_exe()?.parent().context("executable directory")?.to_path_buf();
    let node_exe = sibling(&bins, "ffcluster-node")?;
    let shim_exe = sibling(&bins, "ffcluster-shim")?;
    let ffmpeg = which::which("ffmpeg").context("ffmpeg is not installed (apt-get install ffmpeg)")?;
    let ffprobe = which::which("ffprobe").context("ffprobe is not installed (apt-get install ffmpeg)")?;

    let dir = &args.dir;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    let (bin, transcodes, logs) = (dir.join("bin"), dir.join("transcodes"), dir.join("logs"));
    for d in [&bin, &transcodes, &logs] {
        std::fs::create_dir_all(d)?;
    }
    symlink(&shim_exe, bin.join("ffmpeg"))?;
    symlink(&shim_exe, bin.join("ffprobe"))?;

    let token = crate::random_token()?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let url = format!("http://127.0.0.1:{port}");
    let mut children = Children(Vec::new());
    step(&format!("controller on {url}"));
    children.0.push(
        Command::new(std::env::current_exe()?)
            // The demo's own cluster: not this machine's installed config files.
            .args(["serve", "--config", "/dev/null", "--listen", &format!("127.0.0.1:{port}")])
            .env("FFCLUSTER_TOKEN", &token)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(logs.join("controller.log"))?)
            .spawn()
            .context("starting the controller")?,
    );
    for i in 1..=args.nodes {
        let name = format!("node{i}");
        step(&format!("node agent {name}"));
        children.0.push(
            Command::new(&node_exe)
                .args(["--config", "/dev/null", "--controller", &url, "--token", &token, "--name", &name])
                .args(["--slots", "1", "--scratch"])
                .arg(dir.join(format!("scratch-{name}")))
                .arg("--ffmpeg")
                .arg(&ffmpeg)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(logs.join(format!("{name}.log")))?)
                .spawn()
                .context("starting a node agent")?,
        );
    }
    let status = wait_for_nodes(&url, &token, args.nodes as usize, &logs)?;
    for n in &status.nodes {
        let version = n.ffmpeg_version.split(" Copyright").next().unwrap_or_default();
        println!("    {} ready: {} cpus, speed {:.0} fps, {version}", n.name, n.cpus, n.speed);
    }

    step(&format!("generating a {} s 720p clip with 5.1 audio", args.seconds));
    let clip = dir.join("sample.mkv");
    let s = args.seconds;
    let gen_status = Command::new(&ffmpeg)
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i", &format!("testsrc2=size=1280x720:rate=24:duration={s}")])
        .args(["-f", "lavfi", "-i", &format!("sine=frequency=440:sample_rate=48000:duration={s}")])
        .args(["-filter:a", "pan=5.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "48", "-c:a", "ac3", "-b:a", "384k"])
        .arg(&clip)
        .status()?;
    ensure!(gen_status.success(), "generating the clip failed");

    let md5 = "d41d8cd98f00b204e9800998ecf8427e";
    let hls_args = jellyfin_hls_args(&clip, &transcodes, md5, 1280, 720);
    step("running Jellyfin 10.11's HLS command line through the shim");
    let started = Instant::now();
    let mut shim = Command::new(bin.join("ffmpeg"))
        .args(&hls_args)
        .env("FFCLUSTER_CONTROLLER", &url)
        .env("FFCLUSTER_TOKEN", &token)
        .env("FFCLUSTER_FFMPEG", &ffmpeg)
        .env("FFCLUSTER_FFPROBE", &ffprobe)
        .env("FFCLUSTER_LOG", logs.join("shim.log"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr_log = logs.join("ffmpeg-stderr.log");
    let progress = relay_progress(shim.stderr.take().context("stderr")?, stderr_log.clone());
    let exit = shim.wait()?;
    let elapsed = started.elapsed();
    let _ = progress.join();
    eprintln!();
    if !exit.success() {
        bail!("the shim exited with {exit}; see {} and {}", stderr_log.display(), logs.display());
    }

    step("checking the result by decoding it");
    let playlist = transcodes.join(format!("{md5}.m3u8"));
    let segments = std::fs::read_dir(&transcodes)?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ts"))
        .count();
    let frames = count_frames(&ffprobe, &playlist)?;
    let decode = Command::new(&ffmpeg)
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(&playlist)
        .args(["-f", "null", "-"])
        .output()?;
    let expected = u64::from(s) * 24;
    ensure!(
        decode.status.success() && decode.stderr.is_empty(),
        "decode errors: {}",
        String::from_utf8_lossy(&decode.stderr)
    );
    ensure!(frames == expected, "expected {expected} frames, decoded {frames}");
    ensure!(segments as u32 == s.div_ceil(3), "expected {} segments, found {segments}", s.div_ceil(3));

    let status = fetch_status(&url, &token)?;
    let job = status.jobs.first().context("the controller recorded no job")?;
    let shim_log = std::fs::read_to_string(logs.join("shim.log")).unwrap_or_default();
    let offloaded = shim_log.contains("runs on node") || shim_log.contains("split: job");
    let ran_on = match (&job.node, &job.nodes) {
        (Some(node), _) => node.clone(),
        (None, Some(nodes)) => {
            format!("split across {} in {} chunks", nodes.join(" and "), job.chunks_done.unwrap_or(0))
        }
        (None, None) => "?".into(),
    };

    println!();
    println!("ffcluster demo: OK");
    println!("  output     {} ({segments} segments, {frames} frames, no decode errors)", playlist.display());
    println!(
        "  ran on     {} ({} job, exit code {})",
        if offloaded { ran_on.as_str() } else { "this machine (fallback)" },
        job.mode,
        job.exit_code.map_or("-".into(), |c| c.to_string())
    );
    println!(
        "  time       {:.1} s for {s} s of 720p video ({:.1}x real time)",
        elapsed.as_secs_f64(),
        f64::from(s) / elapsed.as_secs_f64()
    );
    println!("  logs       {}", logs.display());
    println!();
    println!("To use it from Jellyfin, on the Jellyfin host:");
    println!("  1. install ffcluster-shim and make `ffmpeg` and `ffprobe` symlinks to it in one directory");
    println!("     (this demo's are in {})", bin.display());
    println!("  2. set FFCLUSTER_CONTROLLER=http://<controller>:9470 and FFCLUSTER_TOKEN=<token> for Jellyfin,");
    println!("     or write them to /etc/ffcluster/shim.toml");
    println!("  3. point Jellyfin at the shim with --ffmpeg <dir>/ffmpeg (the Debian package and the Docker");
    println!("     image already pass --ffmpeg, which beats JELLYFIN_FFMPEG; see contrib/docs/JELLYFIN.md)");
    println!("  4. on each spare machine: ffcluster-node --controller http://<controller>:9470 --token <token>");
    println!("  5. watch it at http://<controller>:9470/#token=<token>, or with `ffcluster status`");
    if !offloaded {
        bail!("the job ran locally instead of on a node; see {}", logs.join("shim.log").display());
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn step(what: &str) {
    println!("==> {what}");
}

pub(crate) fn sibling(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    ensure!(p.is_file(), "{} not found: build the whole workspace (cargo build --release --workspace)", p.display());
    Ok(p)
}

/// The status of a cluster this program started on loopback, in plain HTTP.
pub(crate) fn fetch_status(url: &str, token: &str) -> Result<Status> {
    Ok(ffcluster::controller::http_client::fetch_status(url, token, &ffcluster::tls::Trust::default())?)
}

fn wait_for_nodes(url: &str, token: &str, n: usize, logs: &Path) -> Result<Status> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(s) = fetch_status(url, token)
            && s.nodes.len() >= n
        {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("the nodes did not register within 60 s; see the logs in {}", logs.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Shows ffmpeg's progress line as it updates and keeps the whole stderr in a file.
fn relay_progress(stderr: impl Read + Send + 'static, log: PathBuf) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut file = std::fs::File::create(log).ok();
        let mut r = BufReader::new(stderr);
        let mut buf = Vec::new();
        while r.read_until(b'\r', &mut buf).map(|n| n > 0).unwrap_or(false) {
            if let Some(f) = file.as_mut() {
                let _ = std::io::Write::write_all(f, &buf);
            }
            let text = String::from_utf8_lossy(&buf);
            if let Some(line) = text.lines().rev().find(|l| l.starts_with("frame=")) {
                eprint!("\r    {}", line.trim_end());
            }
            buf.clear();
        }
    })
}

pub(crate) fn count_frames(ffprobe: &Path, path: &Path) -> Result<u64> {
    Ok(decode_frames(ffprobe, path)?.0)
}

/// The video frames ffprobe decodes from `path`, and what it complained of
/// meanwhile (empty when nothing).
pub(crate) fn decode_frames(ffprobe: &Path, path: &Path) -> Result<(u64, String)> {
    let out = Command::new(ffprobe)
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(path)
        .stdin(Stdio::null())
        .output()?;
    // A playlist is a program per variant, and an MPEG-TS file has programs
    // too; ffprobe repeats the stream for each.
    let text = String::from_utf8_lossy(&out.stdout);
    let frames = text
        .lines()
        .map(|l| l.trim().trim_end_matches(','))
        .find(|l| !l.is_empty())
        .and_then(|l| l.parse().ok())
        .with_context(|| format!("ffprobe frame count: {text:?}"))?;
    Ok((frames, String::from_utf8_lossy(&out.stderr).trim().replace('\n', "; ")))
}

/// The segment length of Jellyfin's HLS template (`SegmentLength`), seconds.
pub(crate) const SEGMENT_SECS: u32 = 3;

/// Jellyfin 10.11's HLS transcode (CONTRACT.md §5.3): libx264 scaled to fit
/// `width`x`height` (the demo's is 720p), 5.1 to stereo AAC, 3 s mpegts segments.
pub(crate) fn jellyfin_hls_args(input: &Path, dir: &Path, md5: &str, width: u32, height: u32) -> Vec<String> {
    HlsTemplate { input, dir, md5, width, height, fmp4: false, start: 0 }.args()
}

/// One HLS transcode as Jellyfin 10.11 starts it (CONTRACT.md §5.3, §6.3).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HlsTemplate<'a> {
    pub(crate) input: &'a Path,
    pub(crate) dir: &'a Path,
    /// The file name stem (Jellyfin's MD5 of the request).
    pub(crate) md5: &'a str,
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// fMP4 segments (`<md5>N.mp4` with the init file `<md5>-1.mp4`) instead of mpegts.
    pub(crate) fmp4: bool,
    /// The first segment: a job started after a seek begins at `start` × 3 s.
    pub(crate) start: u32,
}

impl HlsTemplate<'_> {
    fn ext(&self) -> &'static str {
        if self.fmp4 { "mp4" } else { "ts" }
    }

    /// The segment file of index `n`; -1 is the fMP4 init file.
    pub(crate) fn segment(&self, n: i64) -> PathBuf {
        self.dir.join(format!("{}{n}.{}", self.md5, self.ext()))
    }

    /// The argument list, as Jellyfin passes it to ffmpeg.
    pub(crate) fn args(&self) -> Vec<String> {
        template_args(self)
    }
}

fn template_args(job: &HlsTemplate<'_>) -> Vec<String> {
    let (input, dir, md5) = (job.input, job.dir, job.md5);
    let (w, h) = (job.width, job.height);
    let scale =
        format!(r"scale=trunc(min(max(iw\,ih*a)\,min({w}\,{h}*a))/2)*2:trunc(min(max(iw/a\,ih)\,min({w}/a\,{h}))/2)*2");
    let vf = format!("setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709,{scale},format=yuv420p");
    let mut a: Vec<String> = ["-analyzeduration", "200M", "-probesize", "1G"].map(String::from).to_vec();
    if job.start > 0 {
        // Jellyfin seeks on the input; fMP4 keeps the keyframe before the point.
        let t = job.start * SEGMENT_SECS;
        a.extend(["-ss".into(), format!("{:02}:{:02}:{:02}.000", t / 3600, t / 60 % 60, t % 60)]);
        if job.fmp4 {
            a.push("-noaccurate_seek".into());
        }
    }
    a.extend(["-i".into(), format!("file:{}", input.display())]);
    a.extend(
        [
            "-map_metadata",
            "-1",
            "-map_chapters",
            "-1",
            "-threads",
            "0",
            "-map",
            "0:0",
            "-map",
            "0:1",
            "-map",
            "-0:s",
            "-codec:v:0",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "23",
            "-maxrate",
            "4000000",
            "-bufsize",
            "8000000",
            "-profile:v:0",
            "high",
            "-level",
            "41",
            "-x264opts:0",
            "subme=0:me_range=16:rc_lookahead=10:me=hex:open_gop=0",
            "-force_key_frames:0",
        ]
        .map(String::from),
    );
    a.push(format!("expr:gte(t,n_forced*{SEGMENT_SECS})"));
    a.extend(["-sc_threshold:v:0", "0", "-vf"].map(String::from));
    a.push(vf);
    a.extend(
        [
            "-codec:a:0",
            "aac",
            "-ac",
            "2",
            "-ab",
            "256000",
            "-af",
            "volume=2",
            "-copyts",
            "-avoid_negative_ts",
            "disabled",
            "-max_muxing_queue_size",
            "2048",
            "-f",
            "hls",
            "-max_delay",
            "5000000",
            "-hls_time",
        ]
        .map(String::from),
    );
    a.extend([SEGMENT_SECS.to_string(), "-hls_segment_type".into()]);
    if job.fmp4 {
        a.extend(["fmp4".into(), "-hls_fmp4_init_filename".into(), format!("{md5}-1.mp4")]);
    } else {
        a.push("mpegts".into());
    }
    a.extend(["-start_number".into(), job.start.to_string(), "-hls_segment_filename".into()]);
    a.push(format!("{}/{md5}%d.{}", dir.display(), job.ext()));
    a.extend(["-hls_playlist_type", "vod", "-hls_list_size", "0"].map(String::from));
    if job.fmp4 {
        a.extend(["-hls_segment_options".into(), "movflags=+frag_discont".into()]);
    }
    a.extend(["-y".into(), format!("{}/{md5}.m3u8", dir.display())]);
    a
}
