//! Sources that look like the files real media libraries hold, generated at test
//! time with the real ffmpeg: small (320x180 or less, about 10 s) and quick to
//! make, but with the traits that make real files hard to split: broadcast
//! MPEG-TS cut mid-GOP with a clock far from zero, interlacing, open GOPs and
//! RASL pictures, variable frame rate, rotation, anamorphic pixels, edit lists
//! and negative timestamps, several audio tracks, subtitles, chapters and
//! attachments.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::cluster::{real, run_ok};

/// Every source [`make`] knows, in the order the exactness corpus lists them.
pub const ALL: [&str; 8] =
    ["tv_mpeg2_ts", "tv_h264_ts", "phone_vfr_mp4", "avi_mpeg4", "hevc10_mkv", "vp9_webm", "mp4_editlist", "film_mkv"];

/// Seconds of media in a source (a TV recording is made longer and loses its
/// first 30% to the cut).
pub const SECONDS: f64 = 10.0;

/// A generated source file.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: &'static str,
    pub path: PathBuf,
    /// Interlaced video: Jellyfin adds `yadif` to its filter chain.
    pub interlaced: bool,
}

impl Source {
    /// The file's name, for command lines relative to a directory beside it.
    pub fn file_name(&self) -> String {
        self.path.file_name().unwrap().to_string_lossy().into_owned()
    }
}

fn ffmpeg() -> Command {
    let mut c = Command::new(real("ffmpeg"));
    c.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"]);
    c
}

fn testsrc(size: &str, rate: &str, seconds: f64) -> [String; 4] {
    ["-f".into(), "lavfi".into(), "-i".into(), format!("testsrc2=size={size}:rate={rate}:duration={seconds}")]
}

fn sine(freq: u32, rate: u32, seconds: f64) -> [String; 4] {
    ["-f".into(), "lavfi".into(), "-i".into(), format!("sine=frequency={freq}:sample_rate={rate}:duration={seconds}")]
}

/// Makes source `name` (one of [`ALL`]) in `dir`.
pub fn make(name: &str, dir: &Path) -> Source {
    std::fs::create_dir_all(dir).unwrap();
    let s = SECONDS;
    let (name, path, interlaced): (&'static str, PathBuf, bool) = match name {
        // A DVB recording: interlaced MPEG-2 (top field first, open 12-frame
        // GOPs with 2 B-frames), MP2, the broadcast clock far from zero, and the
        // recording starting mid-GOP.
        "tv_mpeg2_ts" => {
            let full = dir.join("tv_mpeg2_full.ts");
            run_ok(
                ffmpeg()
                    .args(testsrc("320x180", "50", s / 0.7))
                    .args(sine(440, 48000, s / 0.7))
                    .args(["-vf", "tinterlace=mode=interleave_top", "-c:v", "mpeg2video", "-b:v", "1500k"])
                    .args(["-flags", "+ilme+ildct", "-top", "1", "-g", "12", "-bf", "2"])
                    .args(["-c:a", "mp2", "-b:a", "192k", "-output_ts_offset", "10000", "-f", "mpegts"])
                    .arg(&full),
            );
            let path = dir.join("tv_mpeg2_ts.ts");
            cut_mid_gop(&full, &path);
            ("tv_mpeg2_ts", path, true)
        }
        // An HD broadcast: interlaced H.264 (PAFF/MBAFF, B-frames), AC-3,
        // clock offset, cut mid-GOP.
        "tv_h264_ts" => {
            let full = dir.join("tv_h264_full.ts");
            run_ok(
                ffmpeg()
                    .args(testsrc("320x180", "50", s / 0.7))
                    .args(sine(440, 48000, s / 0.7))
                    .args(["-vf", "tinterlace=mode=interleave_top", "-c:v", "libx264", "-preset", "ultrafast"])
                    .args(["-flags", "+ildct+ilme", "-x264opts", "tff=1:bframes=2", "-g", "25", "-pix_fmt", "yuv420p"])
                    .args(["-c:a", "ac3", "-b:a", "192k", "-output_ts_offset", "10000", "-f", "mpegts"])
                    .arg(&full),
            );
            let path = dir.join("tv_h264_ts.ts");
            cut_mid_gop(&full, &path);
            ("tv_h264_ts", path, true)
        }
        // A phone clip: frames dropped irregularly from 30 fps (variable frame
        // rate, 90 kHz track clock), AAC, and a 90° display matrix.
        "phone_vfr_mp4" => {
            let plain = dir.join("phone_plain.mp4");
            run_ok(
                ffmpeg()
                    .args(testsrc("320x180", "30", s))
                    .args(sine(440, 48000, s))
                    .args([
                        "-vf",
                        "select='not(eq(mod(n\\,7)\\,3))*not(eq(mod(n\\,11)\\,5))*not(between(n\\,100\\,108))'",
                    ])
                    .args(["-vsync", "vfr", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30"])
                    .args(["-pix_fmt", "yuv420p", "-video_track_timescale", "90000"])
                    .args(["-c:a", "aac", "-b:a", "128k"])
                    .arg(&plain),
            );
            // ffmpeg 5.1 writes the rotation only when remuxing.
            let path = dir.join("phone_vfr_mp4.mp4");
            run_ok(ffmpeg().arg("-i").arg(&plain).args(["-c", "copy", "-metadata:s:v:0", "rotate=90"]).arg(&path));
            ("phone_vfr_mp4", path, false)
        }
        // An old download: MPEG-4 part 2 tagged XVID with packed B-frames, MP3, AVI.
        "avi_mpeg4" => {
            let path = dir.join("avi_mpeg4.avi");
            run_ok(
                ffmpeg()
                    .args(testsrc("320x176", "25", s))
                    .args(sine(440, 44100, s))
                    .args(["-c:v", "mpeg4", "-vtag", "XVID", "-bf", "2", "-g", "50", "-q:v", "4"])
                    .args(["-c:a", "libmp3lame", "-b:a", "128k"])
                    .arg(&path),
            );
            ("avi_mpeg4", path, false)
        }
        // A remux of a disc: 10-bit HEVC with x265's open GOPs (CRA pictures
        // with RASL leading pictures), 23.976 fps, anamorphic (SAR 32:27), two
        // tagged audio tracks, SRT subtitles, chapters, a font attachment,
        // and the video starting about 42 ms after the audio.
        "hevc10_mkv" => {
            let srt = dir.join("hevc10.srt");
            std::fs::write(
                &srt,
                "1\n00:00:00,500 --> 00:00:02,000\nHello\n\n2\n00:00:03,000 --> 00:00:05,500\nWorld\n",
            )
            .unwrap();
            let chapters = dir.join("hevc10.ffmeta");
            std::fs::write(
                &chapters,
                ";FFMETADATA1\ntitle=Test film\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=4000\ntitle=Opening\n\
                 [CHAPTER]\nTIMEBASE=1/1000\nSTART=4000\nEND=10000\ntitle=Ending\n",
            )
            .unwrap();
            let font = dir.join("hevc10-font.ttf");
            std::fs::write(&font, (0..2048u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<u8>>()).unwrap();
            let path = dir.join("hevc10_mkv.mkv");
            run_ok(
                ffmpeg()
                    .args(["-itsoffset", "0.042"])
                    .args(testsrc("240x160", "24000/1001", s))
                    .args(sine(440, 48000, s + 0.1))
                    .args(sine(660, 48000, s + 0.1))
                    .arg("-i")
                    .arg(&srt)
                    .arg("-i")
                    .arg(&chapters)
                    .args(["-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3:s", "-map_metadata", "4"])
                    .args(["-map_chapters", "4", "-vf", "setsar=32/27", "-c:v", "libx265", "-preset", "ultrafast"])
                    .args(["-pix_fmt", "yuv420p10le", "-x265-params", "log-level=error:keyint=48:min-keyint=1"])
                    .args(["-c:a:0", "aac", "-b:a:0", "128k", "-c:a:1", "ac3", "-b:a:1", "96k", "-c:s", "srt"])
                    .arg("-attach")
                    .arg(&font)
                    .args([
                        "-metadata:s:t",
                        "mimetype=application/x-truetype-font",
                        "-metadata:s:t",
                        "filename=Font.ttf",
                    ])
                    .args(["-metadata:s:v:0", "language=eng", "-metadata:s:v:0", "title=Main video"])
                    .args(["-metadata:s:a:0", "language=eng", "-metadata:s:a:0", "title=Stereo"])
                    .args(["-metadata:s:a:1", "language=jpn", "-metadata:s:a:1", "title=Commentary"])
                    .args(["-metadata:s:s:0", "language=eng"])
                    .arg(&path),
            );
            ("hevc10_mkv", path, false)
        }
        // A web download: VP9 (realtime) and Opus in WebM.
        "vp9_webm" => {
            let path = dir.join("vp9_webm.webm");
            run_ok(
                ffmpeg()
                    .args(testsrc("320x180", "25", s))
                    .args(sine(440, 48000, s))
                    .args(["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "500k", "-g", "50"])
                    .args(["-c:a", "libopus", "-b:a", "96k"])
                    .arg(&path),
            );
            ("vp9_webm", path, false)
        }
        // An mp4 with edit lists: H.264 with B-pyramid (negative DTS, an empty
        // edit then a media-time edit), AAC whose first 0.12 s lie before zero
        // (cut by its edit), so the audio starts before the video.
        "mp4_editlist" => {
            let mkv = dir.join("editlist_src.mkv");
            run_ok(
                ffmpeg()
                    .args(["-itsoffset", "0.1"])
                    .args(testsrc("320x180", "25", s))
                    .args(sine(440, 48000, s + 0.1))
                    .args(["-c:v", "libx264", "-preset", "ultrafast", "-x264opts", "bframes=3:b-pyramid=normal"])
                    .args(["-g", "50", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k"])
                    .arg(&mkv),
            );
            let path = dir.join("mp4_editlist.mp4");
            run_ok(
                ffmpeg()
                    .arg("-i")
                    .arg(&mkv)
                    .args(["-c", "copy", "-output_ts_offset", "-0.12", "-avoid_negative_ts", "disabled"])
                    .arg(&path),
            );
            ("mp4_editlist", path, false)
        }
        // The clean control: a 23.976 fps H.264 film with AAC in Matroska.
        "film_mkv" => {
            let path = dir.join("film_mkv.mkv");
            run_ok(
                ffmpeg()
                    .args(testsrc("320x180", "24000/1001", s))
                    .args(sine(440, 48000, s))
                    .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "48", "-pix_fmt", "yuv420p"])
                    .args(["-c:a", "aac", "-b:a", "128k"])
                    .arg(&path),
            );
            ("film_mkv", path, false)
        }
        other => panic!("no source named {other}"),
    };
    Source { name, path, interlaced }
}

/// Copies `full` from a 188-byte-aligned offset 30% into it, as a recording
/// that started mid-programme: the file opens with non-key pictures and with
/// audio before the first decodable picture. Checks that it does.
fn cut_mid_gop(full: &Path, cut: &Path) {
    let bytes = std::fs::read(full).unwrap();
    let at = bytes.len() * 3 / 10 / 188 * 188;
    std::fs::write(cut, &bytes[at..]).unwrap();
    std::fs::remove_file(full).unwrap();
    let out = run_ok(
        Command::new(real("ffprobe"))
            .args(["-v", "error", "-select_streams", "v:0", "-read_intervals", "%+#1"])
            .args(["-show_entries", "packet=flags", "-of", "csv=p=0"])
            .arg(cut),
    );
    let flags = String::from_utf8_lossy(&out.stdout);
    assert!(!flags.trim().starts_with('K'), "{} starts with a keyframe: {flags}", cut.display());
}
