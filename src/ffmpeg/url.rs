//! What an input or output URL refers to, decided as `libavformat/avio.c`
//! `url_find_protocol()` decides it: a scheme is a run of `[A-Za-z0-9+.-]`
//! followed by `:`, except for DOS paths (`C:\…`); everything else is a file.

use serde::Serialize;

/// The kind of resource a URL names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// A path on the local filesystem (plain, or `file:` prefixed).
    File { path: String },
    /// Standard input/output or another inherited descriptor: `-`, `pipe:`, `pipe:N`.
    Pipe { fd: Option<u32> },
    /// `concat:a|b|c` (the protocol, not the demuxer).
    Concat { parts: Vec<String> },
    /// `bluray:/path/to/disc`.
    Bluray { path: String },
    /// A network protocol (`http`, `https`, `rtsp`, `udp`, `tcp`, `srt`, `rtmp`, …).
    Network { scheme: String },
    /// Any other protocol ffmpeg knows (`data:`, `subfile,…:`, `lavfi` graphs given
    /// as input with `-f lavfi` are plain strings and land in `File`).
    Other { scheme: String },
}

/// A URL as written, with its interpretation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Url {
    pub raw: String,
    pub target: Target,
}

const NETWORK: &[&str] = &[
    "http",
    "https",
    "hls",
    "rtsp",
    "rtsps",
    "rtmp",
    "rtmps",
    "rtmpt",
    "rtmpe",
    "rtmpte",
    "rtmpts",
    "rtp",
    "srtp",
    "udp",
    "udplite",
    "tcp",
    "tls",
    "srt",
    "ftp",
    "sftp",
    "smb",
    "mmsh",
    "mmst",
    "gopher",
    "gophers",
    "icecast",
    "rist",
    "zmq",
    "unix",
    "ipfs",
    "ipns",
    "httpproxy",
    "prompeg",
    "librist",
    "libsrt",
    "amqp",
];

impl Url {
    pub fn parse(raw: &str) -> Url {
        Url { raw: raw.to_owned(), target: classify(raw) }
    }

    /// The local filesystem path, for `File` targets.
    pub fn local_path(&self) -> Option<&str> {
        match &self.target {
            Target::File { path } => Some(path),
            _ => None,
        }
    }

    pub fn is_pipe(&self) -> bool {
        matches!(self.target, Target::Pipe { .. })
    }

    pub fn is_network(&self) -> bool {
        matches!(self.target, Target::Network { .. })
    }
}

fn classify(raw: &str) -> Target {
    if raw == "-" {
        return Target::Pipe { fd: None };
    }
    let scheme_len = raw.bytes().take_while(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b)).count();
    let has_scheme = raw.as_bytes().get(scheme_len) == Some(&b':') && scheme_len > 0 && !is_dos_path(raw);
    // `subfile,,start,end,:url` names its protocol before the first comma.
    let subfile = raw.starts_with("subfile,") && raw[8..].contains(':');
    if !has_scheme && !subfile {
        return Target::File { path: raw.to_owned() };
    }
    if subfile {
        return Target::Other { scheme: "subfile".into() };
    }
    let scheme = raw[..scheme_len].to_ascii_lowercase();
    let rest = &raw[scheme_len + 1..];
    match scheme.as_str() {
        "file" => Target::File { path: rest.to_owned() },
        "pipe" => Target::Pipe { fd: rest.parse().ok() },
        "concat" => Target::Concat { parts: rest.split('|').map(str::to_owned).collect() },
        "bluray" => Target::Bluray { path: rest.to_owned() },
        s if NETWORK.contains(&s) => Target::Network { scheme },
        _ => Target::Other { scheme },
    }
}

/// `libavformat/os_support.h` `is_dos_path()`: only true on Windows builds, but a
/// Windows path reaching a Linux shim is still a file name, not a protocol.
fn is_dos_path(raw: &str) -> bool {
    let b = raw.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' && (b.len() == 2 || b[2] == b'\\' || b[2] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_like_avio() {
        assert_eq!(classify("file:/media/My Movie.mkv"), Target::File { path: "/media/My Movie.mkv".into() });
        assert_eq!(classify("/media/a:b.mkv"), Target::File { path: "/media/a:b.mkv".into() });
        assert_eq!(classify("out.m3u8"), Target::File { path: "out.m3u8".into() });
        assert_eq!(classify(r"G:\Docs\x.mkv"), Target::File { path: r"G:\Docs\x.mkv".into() });
        assert_eq!(classify("pipe:1"), Target::Pipe { fd: Some(1) });
        assert_eq!(classify("pipe:"), Target::Pipe { fd: None });
        assert_eq!(classify("-"), Target::Pipe { fd: None });
        assert_eq!(
            classify("concat:/d/VTS_01_1.VOB|/d/VTS_01_2.VOB"),
            Target::Concat { parts: vec!["/d/VTS_01_1.VOB".into(), "/d/VTS_01_2.VOB".into()] }
        );
        assert_eq!(classify("bluray:/iso"), Target::Bluray { path: "/iso".into() });
        assert_eq!(classify("http://h:8096/x.ts"), Target::Network { scheme: "http".into() });
        assert_eq!(classify("HTTPS://h/x"), Target::Network { scheme: "https".into() });
        assert_eq!(classify("data:,abc"), Target::Other { scheme: "data".into() });
        assert_eq!(classify("null"), Target::File { path: "null".into() });
    }
}
