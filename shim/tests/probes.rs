//! Jellyfin's capability probes (CONTRACT.md §2) through the shim give the same
//! stdout bytes and exit codes as the real ffmpeg, from a cold cache, from a warm
//! cache, and from the cache alone when the real binary cannot be run.

mod common;

use common::{Setup, assert_same, run};

/// EncoderValidator's probes that print and exit (§2 rows 1–7), plus a few more
/// a user might run.
const INFO_PROBES: &[&[&str]] = &[
    &["-version"],
    &["-hide_banner", "-version"],
    &["-decoders"],
    &["-encoders"],
    &["-filters"],
    &["-hwaccels"],
    &["-h", "filter=scale_cuda"],
    &["-h", "filter=scale"],
    &["-h", "filter=tonemap_opencl"],
    &["-h", "bsf=hevc_metadata"],
    &["-h", "bsf=dovi_rpu"],
    &["-h", "encoder=libx264"],
    &["-buildconf"],
    &["-pix_fmts"],
];

#[test]
fn info_probes_match_cold_and_warm() {
    let s = Setup::new();
    for args in INFO_PROBES {
        let direct = run(with_args(s.direct("ffmpeg"), args), b"");
        let cold = run(with_args(s.shim("ffmpeg"), args), b"");
        assert_same(&format!("{args:?} (cold)"), &direct, &cold);
        let warm = run(with_args(s.shim("ffmpeg"), args), b"");
        assert_same(&format!("{args:?} (warm)"), &direct, &warm);
        assert_eq!(direct.stderr, warm.stderr, "{args:?}: replayed stderr is byte-identical");
    }
    let entries = std::fs::read_dir(&s.cache).unwrap().count();
    assert!(entries >= INFO_PROBES.len(), "answers were recorded ({entries} entries)");
    assert!(s.log().contains("(probe.info) -> probe cache"), "log: {}", s.log());
}

#[test]
fn probes_answered_from_cache_when_ffmpeg_is_unreachable() {
    let s = Setup::new();
    let args: &[&str] = &["-encoders"];
    let direct = run(with_args(s.direct("ffmpeg"), args), b"");
    run(with_args(s.shim("ffmpeg"), args), b"");

    let mut gone = with_args(s.shim("ffmpeg"), args);
    gone.env("FFCLUSTER_FFMPEG", s.dir.path().join("no-such-ffmpeg"));
    let cached = run(gone, b"");
    assert_same("-encoders with ffmpeg gone", &direct, &cached);
    assert!(s.log().contains("from the probe cache"), "log: {}", s.log());

    // A probe never seen before cannot be invented: ffmpeg-like failure, nothing on stdout.
    let mut unseen = with_args(s.shim("ffmpeg"), &["-decoders"]);
    unseen.env("FFCLUSTER_FFMPEG", s.dir.path().join("no-such-ffmpeg"));
    let out = run(unseen, b"");
    assert_eq!(out.status.code(), Some(127));
    assert!(out.stdout.is_empty());
}

#[test]
fn keyboard_help_probe_and_exit_code_probes() {
    let s = Setup::new();
    // §2 row 8: `?` on stdin, help on stderr. ffmpeg 5.1 gets d=1000, 7.x d=10000.
    let kb: &[&str] = &["-hide_banner", "-f", "lavfi", "-i", "nullsrc=s=1x1:d=1000", "-f", "null", "-"];
    let direct = run(with_args(s.direct("ffmpeg"), kb), b"?");
    let shim = run(with_args(s.shim("ffmpeg"), kb), b"?");
    assert_same("keyboard probe", &direct, &shim);
    let help = String::from_utf8_lossy(&shim.stderr);
    assert!(help.contains("q      quit"), "help text shown: {help}");

    // §2 row 9: the exit code is the answer.
    let vt: &[&str] = &[
        "-loglevel",
        "quiet",
        "-hwaccel_flags",
        "+low_priority",
        "-hide_banner",
        "-f",
        "lavfi",
        "-i",
        "nullsrc=s=1x1:d=100",
        "-f",
        "null",
        "-",
    ];
    assert_same(
        "hwaccel_flags probe",
        &run(with_args(s.direct("ffmpeg"), vt), b""),
        &run(with_args(s.shim("ffmpeg"), vt), b""),
    );

    // §2 row 10, against ffprobe.
    let fp: &[&str] = &["-loglevel", "quiet", "-f", "lavfi", "-i", "nullsrc=s=1x1:d=1", "-only_first_vframe"];
    assert_same(
        "ffprobe only_first_vframe probe",
        &run(with_args(s.direct("ffprobe"), fp), b""),
        &run(with_args(s.shim("ffprobe"), fp), b""),
    );
}

#[test]
fn ffprobe_media_probe_is_identical() {
    let s = Setup::new();
    let clip = s.clip("clip.mp4", 2);
    let input = format!("file:{}", clip.display());
    let args: &[&str] = &[
        "-analyzeduration",
        "200M",
        "-probesize",
        "1G",
        "-i",
        &input,
        "-threads",
        "0",
        "-v",
        "warning",
        "-print_format",
        "json",
        "-show_streams",
        "-show_chapters",
        "-show_format",
    ];
    let direct = run(with_args(s.direct("ffprobe"), args), b"");
    let shim = run(with_args(s.shim("ffprobe"), args), b"");
    assert!(direct.status.success());
    assert_same("ffprobe json", &direct, &shim);
    let v: serde_json::Value = serde_json::from_slice(&shim.stdout).unwrap();
    assert_eq!(v["streams"].as_array().map(Vec::len), Some(2));
}

fn with_args(mut c: std::process::Command, args: &[&str]) -> std::process::Command {
    c.args(args);
    c
}
