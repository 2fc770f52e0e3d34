//! How urgently a job wants nodes. A person in front of a screen waits on a
//! playback; a library's batch encode can run overnight. The controller hands
//! free slots to the most urgent work first and takes a slot back from less
//! urgent chunks when urgent work would wait (see the controller's dispatch).
//!
//! Derived from the job's shape (pure), overridable per shim
//! (`FFCLUSTER_PRIORITY`, `priority` in shim.toml) and per job from the admin
//! CLI (`ffcluster priority JOB LEVEL`).

use serde::{Deserialize, Serialize};

use crate::ffmpeg::decision::OutputShape;

/// Most urgent first: the derived order compares `Interactive < Streaming < Batch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// A player waits on its next segment: HLS playback, Live TV.
    Interactive,
    /// A client reads the output as it is written: a stream on stdout or a
    /// pipe, a progressive transcode Jellyfin tails.
    Streaming,
    /// Nobody waits on it: trickplay, chapter images, conversions, the
    /// encodes people run by hand.
    #[default]
    Batch,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::Interactive, Priority::Streaming, Priority::Batch];

    /// The priority of a job writing `outputs`: that of its most urgent output.
    pub fn of(outputs: &[OutputShape]) -> Priority {
        outputs.iter().map(Priority::of_output).min().unwrap_or_default()
    }

    fn of_output(o: &OutputShape) -> Priority {
        match o {
            OutputShape::Hls { .. } => Priority::Interactive,
            OutputShape::Stream { .. } | OutputShape::Network { .. } => Priority::Streaming,
            _ => Priority::Batch,
        }
    }

    /// As [`Priority::of`], also knowing the output paths (`paths[i]` is
    /// output `i`'s): a progressive file named like Jellyfin's transcodes
    /// (`<32 hex digits>.<ext>`) is streamed to a client.
    pub fn of_job(outputs: &[OutputShape], paths: &[&str]) -> Priority {
        let streamed =
            |(o, p): (&OutputShape, &&str)| matches!(o, OutputShape::Progressive { .. }) && jellyfin_transcode_name(p);
        let by_shape = Priority::of(outputs);
        if outputs.iter().zip(paths).any(streamed) { by_shape.min(Priority::Streaming) } else { by_shape }
    }

    /// The priority of a job run with `args` (ffmpeg's arguments), from its
    /// shape: what the controller gives a request that names none.
    pub fn of_args(args: &[String]) -> Priority {
        let Ok(cl) = crate::ffmpeg::CommandLine::parse(args) else { return Priority::default() };
        let paths: Vec<&str> = cl.outputs.iter().map(|o| o.url.raw.as_str()).collect();
        Priority::of_job(&crate::ffmpeg::decision::classify_cmdline(&cl).outputs, &paths)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Streaming => "streaming",
            Priority::Batch => "batch",
        }
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A priority name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority {0:?}: expected interactive, streaming or batch")]
pub struct UnknownPriority(pub String);

impl std::str::FromStr for Priority {
    type Err = UnknownPriority;

    fn from_str(s: &str) -> Result<Priority, UnknownPriority> {
        Priority::ALL.into_iter().find(|p| p.as_str() == s.trim()).ok_or_else(|| UnknownPriority(s.to_owned()))
    }
}

fn jellyfin_transcode_name(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let stem = name.split_once('.').map_or(name, |(s, _)| s);
    stem.len() == 32 && stem.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(args: &str) -> Priority {
        Priority::of_args(&args.split(' ').map(str::to_owned).collect::<Vec<_>>())
    }

    #[test]
    fn playback_before_streams_before_batch() {
        assert!(Priority::Interactive < Priority::Streaming && Priority::Streaming < Priority::Batch);
        let hls = "-i in.mkv -c:v libx264 -f hls -hls_time 3 -hls_segment_filename /t/x%d.ts -y /t/x.m3u8";
        assert_eq!(of(hls), Priority::Interactive);
        assert_eq!(of("-i in.mkv -c:v libx264 -f mpegts pipe:1"), Priority::Streaming);
        assert_eq!(
            of("-i in.mkv -c:v libx264 -y /var/cache/jellyfin/transcodes/0f1e2d3c4b5a69780f1e2d3c4b5a6978.mkv"),
            Priority::Streaming
        );
        assert_eq!(of("-i in.mkv -c:v libx264 -crf 22 -y film.mkv"), Priority::Batch);
        assert_eq!(of("-i in.mkv -vf fps=1/10 -y /t/img%08d.jpg"), Priority::Batch);
    }

    #[test]
    fn names_round_trip() {
        for p in Priority::ALL {
            assert_eq!(p.as_str().parse::<Priority>(), Ok(p));
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert_eq!("urgent".parse::<Priority>(), Err(UnknownPriority("urgent".into())));
    }
}
