//! Where an HLS job picks up after the cluster lost it mid-way: Jellyfin's own
//! seek restart (CONTRACT.md §6.3). The newest segment may be incomplete, so it
//! is deleted and made again by the same command line started at that segment's
//! grid line (`-ss`) and number (`-start_number`). Jellyfin restarts ffmpeg this
//! way on every seek, so what it then reads is what it already copes with; the
//! segments before stay as they were published.
//!
//! Only what can restart exactly: one seekable input file, one VOD HLS output
//! whose keyframes are forced on a grid that `-hls_time` is a multiple of (so
//! segment `N` begins on a grid line), with `-hls_segment_filename` naming the
//! segments. Pure: the shim finds the files and runs the result.

use crate::ffmpeg::cmdline::{CommandLine, Opt};
use crate::ffmpeg::decision::{OutputShape, PlaylistType, classify_cmdline};
use crate::plan::Grid;

/// Why a lost job cannot be resumed (it then ends with the loss's error).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotResumable {
    #[error("not one input file and one output")]
    Shape,
    #[error("the output is not a VOD HLS playlist")]
    NotVodHls,
    #[error("the output names no -hls_segment_filename with %d")]
    NoSegmentPattern,
    #[error("the keyframes are not forced on the segment grid")]
    NoGrid,
    #[error("segment {0} is before the job's first")]
    BeforeStart(u64),
}

/// The job's segment naming: where segment `n` is and which names are segments.
#[derive(Debug, Clone, PartialEq)]
pub struct Segments {
    /// `-hls_segment_filename`: one `%d` (or `%0Nd`) for the index.
    pattern: String,
    start_number: u64,
    hls_time: f64,
    grid: Grid,
}

impl Segments {
    /// The segment naming of a job that can resume, or why it cannot.
    pub fn of(cl: &CommandLine) -> Result<Segments, NotResumable> {
        let ([input], [_]) = (cl.inputs.as_slice(), cl.outputs.as_slice()) else {
            return Err(NotResumable::Shape);
        };
        if input.url.local_path().is_none() {
            return Err(NotResumable::Shape);
        }
        let verdict = classify_cmdline(cl);
        let Some(
            shape @ OutputShape::Hls {
                playlist_type: PlaylistType::Vod, hls_time, start_number, segment_filename, ..
            },
        ) = verdict.outputs.first()
        else {
            return Err(NotResumable::NotVodHls);
        };
        let pattern =
            segment_filename.clone().filter(|p| index_at(p).is_some()).ok_or(NotResumable::NoSegmentPattern)?;
        let grid = Grid::of(cl, 0, shape).ok_or(NotResumable::NoGrid)?;
        Ok(Segments { pattern, start_number: (*start_number).max(0) as u64, hls_time: *hls_time, grid })
    }

    /// The segment index in `path`, if it is one of this job's segments.
    pub fn index(&self, path: &str) -> Option<u64> {
        let (at, len) = index_at(&self.pattern)?;
        let (head, tail) = (&self.pattern[..at], &self.pattern[at + len..]);
        let digits = path.strip_prefix(head)?.strip_suffix(tail)?;
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
    }

    /// The job's first segment.
    pub fn first(&self) -> u64 {
        self.start_number
    }

    /// The directory the segments are written to ("" for the working directory).
    pub fn dir(&self) -> &str {
        self.pattern.rfind('/').map_or("", |i| &self.pattern[..=i])
    }

    /// The command line that makes segment `n` and those after, as the job would
    /// have: the input seeked to `n`'s grid line, numbering from `n`.
    pub fn resume_at(&self, cl: &CommandLine, n: u64) -> Result<Vec<String>, NotResumable> {
        if n < self.start_number {
            return Err(NotResumable::BeforeStart(n));
        }
        let at = self.grid.origin + (n - self.start_number) as f64 * self.hls_time;
        let mut cl = cl.clone();
        let input = &mut cl.inputs[0];
        input.opts.retain(|o| o.name() != "ss");
        input.push(Opt::new("ss", Some(format!("{at:.6}"))));
        let output = &mut cl.outputs[0];
        match output.opts.iter_mut().rev().find(|o| o.name() == "start_number") {
            Some(o) => o.value = Some(n.to_string()),
            None => output.push(Opt::new("start_number", Some(n.to_string()))),
        }
        Ok(cl.to_args())
    }
}

/// Where the index placeholder (`%d`, `%05d`) sits in a segment pattern.
fn index_at(pattern: &str) -> Option<(usize, usize)> {
    let at = pattern.rfind('%')?;
    let rest = &pattern[at + 1..];
    let width = rest.bytes().take_while(u8::is_ascii_digit).count();
    (rest.as_bytes().get(width) == Some(&b'd')).then_some((at, width + 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cl(s: &str) -> CommandLine {
        CommandLine::parse(&s.split(' ').collect::<Vec<_>>()).unwrap()
    }

    const HLS: &str = "-i /m/film.mkv -c:v libx264 -force_key_frames:0 expr:gte(t,n_forced*3) -c:a aac -copyts \
                       -f hls -hls_time 3 -hls_segment_type mpegts -start_number 0 \
                       -hls_segment_filename /t/abc%d.ts -hls_playlist_type vod -hls_list_size 0 -y /t/abc.m3u8";

    #[test]
    fn resumes_at_the_segments_grid_line() {
        let c = cl(HLS);
        let s = Segments::of(&c).unwrap();
        assert_eq!(s.index("/t/abc17.ts"), Some(17));
        assert_eq!(s.index("/t/abc.m3u8"), None);
        assert_eq!(s.index("/t/abcx.ts"), None);
        assert_eq!(s.dir(), "/t/");
        let args = s.resume_at(&c, 7).unwrap();
        let r = CommandLine::parse(&args).unwrap();
        assert_eq!(r.inputs[0].last_value("ss"), Some("21.000000"));
        assert_eq!(r.outputs[0].last_value("start_number"), Some("7"));
        assert_eq!(r.outputs[0].url.raw, "/t/abc.m3u8");
    }

    #[test]
    fn a_seeked_job_resumes_from_its_own_origin() {
        let c =
            cl(&HLS.replace("-i /m/film.mkv", "-ss 60 -i /m/film.mkv").replace("-start_number 0", "-start_number 20"));
        let s = Segments::of(&c).unwrap();
        let r = CommandLine::parse(&s.resume_at(&c, 22).unwrap()).unwrap();
        assert_eq!(r.inputs[0].last_value("ss"), Some("66.000000"));
        assert_eq!(r.inputs[0].opts_named("ss").count(), 1);
        assert_eq!(s.resume_at(&c, 19), Err(NotResumable::BeforeStart(19)));
    }

    #[test]
    fn only_exact_restarts() {
        assert_eq!(Segments::of(&cl(&HLS.replace("vod", "event"))), Err(NotResumable::NotVodHls));
        assert_eq!(
            Segments::of(&cl(&HLS.replace(" -force_key_frames:0 expr:gte(t,n_forced*3)", ""))),
            Err(NotResumable::NoGrid)
        );
        assert_eq!(Segments::of(&cl(&HLS.replace("abc%d.ts", "abc.ts"))), Err(NotResumable::NoSegmentPattern));
        assert_eq!(Segments::of(&cl(&HLS.replace("/m/film.mkv", "pipe:0"))), Err(NotResumable::Shape));
        let padded = cl(&HLS.replace("abc%d.ts", "abc%05d.ts"));
        assert_eq!(Segments::of(&padded).unwrap().index("/t/abc00012.ts"), Some(12));
    }
}
