//! Cuts a live MPEG-TS stream (a tuner's growing HTTP stream) into *pieces*
//! that nodes transcode independently, each with
//! `ffmpeg -copyts -i piece.ts -map 0:<video> -vf trim=start_pts=S:end_pts=E,…`.
//!
//! Piece `j` covers the video frames whose PTS lies in `[start, end)`; the
//! pieces partition every frame from the stream's first keyframe on. Its bytes
//! are the PAT and PMT in force, then the stream's own packets, unchanged, from
//! the first packet of a keyframe's PES from which every frame of the piece
//! decodes, up to just before the first video PES that cannot hold a frame of
//! it. Consecutive pieces overlap in bytes (a GOP and the reordering delay), not
//! in frames.
//!
//! The rules, with `t0` the PTS of the first keyframe and grid lines
//! `c = t0 + k·piece`:
//! - A piece's first frame `f` is the smallest PTS at or after a grid line; the
//!   next piece's grid line is the first one after `f`, so that every piece holds
//!   a frame even across a gap in the stream.
//! - Its end `E` is the smallest PTS at or after that next grid line. `E` is
//!   final once a video PES arrives whose DTS is at or past it: frames come in
//!   decode order, and a frame's PTS is never below its DTS, so every frame
//!   still to come has a PTS at or past `E`, and every frame before `E` has been
//!   seen. The piece's bytes end just before that PES.
//! - Its bytes start at the last keyframe, in decode order, whose PTS is at or
//!   before `f`. Frames decoded before a keyframe are shown before it (H.264
//!   IDR, HEVC IRAP, MPEG-2 I pictures), so every frame of the piece follows it;
//!   the leading pictures of an open GOP that do not decode from it come before
//!   it in PTS and are trimmed away.
//!
//! Assumptions, each what broadcast muxers and ffmpeg's write: one frame per
//! video PES, each with a PTS (a PES without one is an error: its frame could
//! not be placed); DTS never decreasing. A DTS more than [`TIMESTAMP_JITTER`]
//! below the one before (a channel change that restarts the clock) is an error
//! rather than a silent stall: no piece could end until the DTS came back.
//!
//! **The 33-bit clock.** A tuner's timestamps start anywhere in their 26.5
//! hours and wrap to 0. Pieces lie on one unwrapped timeline, the one ffmpeg's
//! demuxer gives the whole stream (lavf's `correct_ts_overflow`): with `r` the
//! stream's first video DTS less 60 s, a timestamp below `r` is one wrap on
//! (plus 2^33). ffmpeg reads a stream that starts within 60 s of a wrap the
//! other way (a negative timeline, whose video before 0 it drops); such a
//! stream is not split (see [`super::split_live`]), and here it merely lies
//! 2^33 later. A forward jump is a gap: the next piece starts after it.
//!
//! A node reads a piece on its own, and its demuxer unwraps the piece
//! relative to the piece's first packet: a piece is placed on the stream's
//! timeline by its [`PieceClock`] (`-itsoffset` of whole wraps, and whether
//! the demuxer corrects a wrap inside the piece). A piece whose video crosses
//! the wrap is read with the correction, which then takes the piece's first
//! packet as before the wrap (every timestamp from it on moves back by 2^33);
//! so that this holds whatever PES comes first, no piece's bytes start at a
//! keyframe in the last [`WRAP_MARGIN`] before a wrap (an earlier one is taken).
//! A piece on one side of the wrap, close before it, is read without the
//! correction, which could otherwise take it for one that starts within 60 s
//! of a wrap.
//!
//! Pure: no IO, no clock. Feed it bytes as they arrive, take the pieces.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use super::mpegts::{self, PACKET, SYNC};

/// 90 kHz ticks.
pub const TICKS: u64 = 90_000;

/// Bytes searched for packet sync before the input is not MPEG-TS (what
/// ffmpeg's demuxer searches, `resync_size`).
pub const SYNC_LIMIT: usize = 65_536;
/// Bytes of packets read without finding a video stream in the program's PMT.
/// PAT and PMT repeat at least twice a second in broadcast streams.
pub const PSI_LIMIT: u64 = 8 << 20;
/// Bytes of packets read after the video stream is known without finding a
/// keyframe (a stream of intra refresh only has none).
pub const KEYFRAME_LIMIT: u64 = 64 << 20;
/// How far a video DTS may fall below the one before it before the stream's
/// timestamps count as jumping back (a wrap, a restart).
pub const TIMESTAMP_JITTER: u64 = TICKS;
/// The period of the 33-bit clock, in ticks.
pub const WRAP: u64 = 1 << 33;
/// How far before the stream's first timestamp ffmpeg's demuxer sets its
/// wrap reference: a timestamp below it is one wrap on.
const WRAP_REFERENCE: u64 = 60 * TICKS;
/// No piece's bytes start at a keyframe whose DTS is this close before a wrap:
/// the piece's first packets (audio may lead or lag the video by a second or
/// so) must all lie before the wrap.
pub const WRAP_MARGIN: u64 = 5 * TICKS;
/// A piece on one side of the wrap whose keyframe's DTS is this close before a
/// wrap is read without the demuxer's correction (which would move it back by
/// 2^33 if its first packet were within 60 s of the wrap).
const WRAP_ZONE: u64 = 2 * WRAP_REFERENCE;
/// How much of a video PES is read to tell whether it is a keyframe (x264's
/// first IDR follows a long SEI).
const ES_SCAN_LIMIT: usize = 64 * 1024;

/// A self-contained part of the stream that one node transcodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// 0, 1, 2, … in stream order.
    pub index: u32,
    /// Whole 188-byte packets: the PAT and PMT packets in force at the piece's
    /// first byte, then the stream's packets from the start of its keyframe's
    /// PES up to the cut.
    pub bytes: Vec<u8>,
    /// PTS of the piece's first frame (`trim` `start_pts`, inclusive).
    pub start: u64,
    /// PTS of the next piece's first frame (`trim` `end_pts`, exclusive);
    /// `None`: the last piece.
    pub end: Option<u64>,
    /// PTS of the stream's first keyframe: the grid origin.
    pub origin: u64,
    /// How the node's demuxer must read the piece for its timestamps to be
    /// these (the stream's, unwrapped).
    pub clock: PieceClock,
}

/// How a node reads a piece so that its timestamps are the stream's on the
/// cutter's unwrapped timeline (all of them are the stream's own but for
/// whole wraps of the 33-bit clock). The default is ffmpeg's: no option.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PieceClock {
    /// Ticks added to every timestamp the demuxer gives (`-itsoffset`, which
    /// `-copyts` adds as it is): whole wraps, 0 or [`WRAP`].
    pub offset: u64,
    /// `-correct_ts_overflow`: `Some(true)` for a piece whose video crosses
    /// the wrap (the demuxer moves what comes before it back by 2^33),
    /// `Some(false)` for one close before a wrap that must be read as it is.
    pub correct: Option<bool>,
}

impl PieceClock {
    /// The node's input options, before `-i`.
    pub fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(c) = self.correct {
            a.extend(["-correct_ts_overflow".to_owned(), u8::from(c).to_string()]);
        }
        if self.offset > 0 {
            // In microseconds, as ffmpeg parses it; back in 90 kHz ticks it
            // rounds to the exact offset (a tick is 11.1 µs).
            let us = (u128::from(self.offset) * 100 + 4) / 9;
            a.extend(["-itsoffset".to_owned(), format!("{}.{:06}", us / 1_000_000, us % 1_000_000)]);
        }
        a
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CutError {
    #[error("not MPEG-TS: no packet sync in {bytes} bytes")]
    NoSync { bytes: usize },
    #[error("no program (PAT and PMT) in the first {bytes} bytes")]
    NoProgram { bytes: u64 },
    #[error(
        "the program has no MPEG-1/2, MPEG-4 part 2, H.264 or HEVC video (stream types {types:02x?}) in the first {bytes} bytes"
    )]
    NoVideo { bytes: u64, types: Vec<u8> },
    #[error("no video keyframe in {bytes} bytes")]
    NoKeyframe { bytes: u64 },
    #[error("the video PES at byte {offset} has no PTS: its frame cannot be placed in a piece")]
    NoPts { offset: u64 },
    #[error("the video timestamps jump back at byte {offset}, from DTS {from} to {to}")]
    Backwards { offset: u64, from: u64, to: u64 },
    #[error("the stream has already ended")]
    Finished,
}

/// Cuts a whole stream that arrives as `slices` (a recording, a test): every
/// piece, the last one included.
pub fn cut_stream<'a>(piece: u64, slices: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<Piece>, CutError> {
    let mut cutter = Cutter::new(piece);
    let mut pieces = Vec::new();
    for slice in slices {
        pieces.extend(cutter.feed(slice)?);
    }
    pieces.extend(cutter.finish());
    Ok(pieces)
}

/// Video codecs whose keyframes the cutter can tell from the elementary stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Mpeg12,
    Mpeg4,
    H264,
    Hevc,
}

impl Codec {
    fn of(stream_type: u8) -> Option<Codec> {
        match stream_type {
            0x01 | 0x02 => Some(Codec::Mpeg12),
            0x10 => Some(Codec::Mpeg4),
            0x1b => Some(Codec::H264),
            0x24 => Some(Codec::Hevc),
            _ => None,
        }
    }

    /// Whether the first picture in `es` is a keyframe, once a picture header
    /// (a VCL NAL unit, a picture or VOP start code) is in `es[*from..]`;
    /// `*from` is left where the search goes on when more bytes arrive.
    fn keyframe(self, es: &[u8], from: &mut usize) -> Option<bool> {
        // Bytes from a start code to the one that decides.
        let need = match self {
            Codec::H264 | Codec::Hevc => 4,
            Codec::Mpeg4 => 5,
            Codec::Mpeg12 => 6,
        };
        let mut i = *from;
        while i + need <= es.len() {
            if es[i..i + 3] == [0, 0, 1] {
                let code = es[i + 3];
                let verdict = match self {
                    // IDR slice; other slices (and data partitions) are not.
                    Codec::H264 => match code & 0x1f {
                        5 => Some(true),
                        1..=4 => Some(false),
                        _ => None,
                    },
                    // IRAP (BLA, IDR, CRA); the other VCL types are not.
                    Codec::Hevc => match (code >> 1) & 0x3f {
                        16..=21 => Some(true),
                        0..=31 => Some(false),
                        _ => None,
                    },
                    // Picture start code: picture_coding_type 1 is I.
                    Codec::Mpeg12 => (code == 0x00).then(|| (es[i + 5] >> 3) & 7 == 1),
                    // VOP start code: vop_coding_type 0 is I.
                    Codec::Mpeg4 => (code == 0xb6).then(|| es[i + 4] >> 6 == 0),
                };
                if verdict.is_some() {
                    return verdict;
                }
            }
            i += 1;
        }
        *from = i;
        None
    }
}

/// What the start of a PES says.
#[derive(Debug, PartialEq, Eq)]
enum PesHeader {
    Incomplete,
    /// Not a PES start: ffmpeg's demuxer skips it too.
    Invalid,
    NoPts,
    /// PTS, DTS when present (33-bit, as written) and where the elementary
    /// stream starts.
    Stamped {
        pts: u64,
        dts: Option<u64>,
        es: usize,
    },
}

fn pes_header(d: &[u8]) -> PesHeader {
    if d.len() < 9 {
        return if d.iter().zip([0, 0, 1]).any(|(a, b)| *a != b) { PesHeader::Invalid } else { PesHeader::Incomplete };
    }
    if d[..3] != [0, 0, 1] {
        return PesHeader::Invalid;
    }
    let es = 9 + usize::from(d[8]);
    if d.len() < es {
        return PesHeader::Incomplete;
    }
    let (pts, dts) = match d[7] >> 6 {
        2 if es >= 14 => (mpegts::timestamp(&d[9..14]), None),
        3 if es >= 19 => (mpegts::timestamp(&d[9..14]), Some(mpegts::timestamp(&d[14..19]))),
        0 | 1 => return PesHeader::NoPts,
        _ => return PesHeader::Invalid,
    };
    PesHeader::Stamped { pts, dts, es }
}

/// CRC-32/MPEG-2 of `data`; 0 over a whole PSI section with its CRC.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04c1_1db7 } else { crc << 1 };
        }
    }
    crc
}

/// The table data of a PSI section with `table_id` that starts in this
/// packet's payload and ends in it, in force now and intact (CRC). A section
/// that goes on in later packets is not read: the cutter waits for the next
/// copy (tuners' PAT and PMT fit in one packet).
fn section(payload: &[u8], table_id: u8) -> Option<&[u8]> {
    let pointer = usize::from(*payload.first()?);
    let s = payload.get(1 + pointer..)?;
    if s.len() < 3 || s[0] != table_id {
        return None;
    }
    let len = (usize::from(s[1] & 0x0f) << 8) | usize::from(s[2]);
    let s = s.get(..3 + len)?;
    let current = s.get(5).is_some_and(|b| b & 1 == 1);
    (len >= 9 && current && crc32(s) == 0).then(|| &s[8..s.len() - 4])
}

/// A keyframe PES: where a piece's bytes may start.
#[derive(Debug)]
struct Key {
    offset: u64,
    pts: u64,
    /// Unwrapped, like `pts`.
    dts: u64,
    /// The PAT and PMT packets in force at `offset`.
    tables: Arc<[u8]>,
}

/// The video PES being read.
#[derive(Debug)]
struct Pes {
    offset: u64,
    rai: bool,
    tables: Arc<[u8]>,
    /// The PES from its start, up to [`ES_SCAN_LIMIT`], until it is decided.
    data: Vec<u8>,
    /// PTS and DTS (unwrapped) once the header is read.
    pts: Option<(u64, u64)>,
    /// Where the keyframe search goes on in `data`.
    scan: usize,
    /// Whether it is a keyframe, once known.
    key: Option<bool>,
}

/// Cuts a live MPEG-TS stream into [`Piece`]s.
#[derive(Debug)]
pub struct Cutter {
    piece: u64,
    /// Input not yet read as packets, from `pos`.
    input: Vec<u8>,
    pos: usize,
    synced: bool,
    /// Bytes skipped since sync was last had.
    unsynced: usize,
    /// Whole packets from stream offset `base` on (offsets count packets kept,
    /// not bytes skipped to find sync).
    buf: Vec<u8>,
    base: u64,
    total: u64,

    pat: Option<[u8; PACKET]>,
    pmt: Option<[u8; PACKET]>,
    tables: Arc<[u8]>,
    pmt_pid: Option<u16>,
    stream_types: Vec<u8>,
    video: Option<(u16, Codec)>,
    /// Stream offset at which the video stream became known.
    video_since: Option<u64>,
    pes: Option<Pes>,
    /// The DTS of the latest video PES.
    dts: Option<u64>,
    /// Raw timestamps below this are one wrap on: the first video DTS less
    /// [`WRAP_REFERENCE`] (ffmpeg's reference, 0 when that is negative).
    reference: Option<u64>,
    /// Where the first video PES with a timestamp past the wrap starts.
    wrapped_at: Option<u64>,

    origin: Option<u64>,
    /// Keyframes from the current piece's start keyframe on, in decode order.
    keys: VecDeque<Key>,
    /// The current piece: its index, first frame, the grid line that bounds it,
    /// and how far in the stream its start keyframe may lie (where the previous
    /// piece ended: no later keyframe shows a frame at or before `start`).
    index: u32,
    start: u64,
    line: u64,
    limit: u64,
    /// PTS seen at or after `line`: candidates for the current piece's end.
    ahead: BTreeSet<u64>,

    out: Vec<Piece>,
    failed: Option<CutError>,
    finished: bool,
}

impl Cutter {
    /// `piece` ticks per piece (> 0). Grid lines are origin + j*piece.
    pub fn new(piece: u64) -> Cutter {
        assert!(piece > 0, "a piece must last at least one tick");
        Cutter {
            piece,
            input: Vec::new(),
            pos: 0,
            synced: false,
            unsynced: 0,
            buf: Vec::new(),
            base: 0,
            total: 0,
            pat: None,
            pmt: None,
            tables: Arc::from(Vec::new()),
            pmt_pid: None,
            stream_types: Vec::new(),
            video: None,
            video_since: None,
            pes: None,
            dts: None,
            reference: None,
            wrapped_at: None,
            origin: None,
            keys: VecDeque::new(),
            index: 0,
            start: 0,
            line: 0,
            limit: 0,
            ahead: BTreeSet::new(),
            out: Vec::new(),
            failed: None,
            finished: false,
        }
    }

    /// Feeds the next bytes of the stream (any split, not packet-aligned).
    /// Returns pieces that became complete. An error is final: later calls
    /// return it again, and pieces this call completed are not returned.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Piece>, CutError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.finished {
            return Err(CutError::Finished);
        }
        self.input.extend_from_slice(bytes);
        let read = self.read();
        self.input.drain(..self.pos);
        self.pos = 0;
        if let Err(e) = read {
            self.failed = Some(e.clone());
            self.out.clear();
            return Err(e);
        }
        self.trim();
        Ok(std::mem::take(&mut self.out))
    }

    /// The stream ended: the rest as the last piece (end None), if it holds any
    /// frame at or after its start. None before the first keyframe, after an
    /// error, and on a second call.
    pub fn finish(&mut self) -> Option<Piece> {
        if self.finished || self.failed.is_some() {
            return None;
        }
        self.finished = true;
        // The PES being read ends here: decided, unless it is a keyframe only
        // by an elementary stream that never showed a picture.
        self.pes = None;
        self.origin?;
        let piece = self.piece_to(self.total, None);
        self.buf = Vec::new();
        self.input = Vec::new();
        self.keys.clear();
        Some(piece)
    }

    /// Grid origin once known.
    pub fn origin(&self) -> Option<u64> {
        self.origin
    }

    /// Bytes held that are not yet in a complete piece (for a memory bound).
    pub fn held(&self) -> usize {
        self.buf.len() + (self.input.len() - self.pos) + self.pes.as_ref().map_or(0, |p| p.data.len())
    }

    fn read(&mut self) -> Result<(), CutError> {
        loop {
            if !self.synced && !self.sync()? {
                return Ok(());
            }
            let Some(p) = self.input.get(self.pos..self.pos + PACKET) else { return Ok(()) };
            if p[0] != SYNC {
                self.synced = false;
                continue;
            }
            let p: [u8; PACKET] = p.try_into().expect("a whole packet");
            self.pos += PACKET;
            self.packet(&p)?;
        }
    }

    /// Finds three packets in a row; whether it did (else it waits for more).
    fn sync(&mut self) -> Result<bool, CutError> {
        let data = &self.input[self.pos..];
        let at = (0..data.len().saturating_sub(2 * PACKET))
            .find(|&i| data[i] == SYNC && data[i + PACKET] == SYNC && data[i + 2 * PACKET] == SYNC);
        let skip = at.unwrap_or(data.len().saturating_sub(2 * PACKET));
        self.pos += skip;
        self.unsynced += skip;
        if at.is_some() {
            self.synced = true;
            self.unsynced = 0;
        } else if self.unsynced > SYNC_LIMIT {
            return Err(CutError::NoSync { bytes: self.unsynced });
        }
        Ok(self.synced)
    }

    fn packet(&mut self, p: &[u8; PACKET]) -> Result<(), CutError> {
        let offset = self.total;
        self.total += PACKET as u64;
        self.buf.extend_from_slice(p);
        // A packet the demodulator flags as damaged is kept but not read.
        let damaged = p[1] & 0x80 != 0;
        if let (false, Some(at)) = (damaged, mpegts::payload_start(p)) {
            let pid = mpegts::pid(p);
            let unit_start = p[1] & 0x40 != 0;
            let payload = &p[at..];
            if pid == 0 && unit_start {
                self.read_pat(p, payload);
            } else if Some(pid) == self.pmt_pid && unit_start {
                self.read_pmt(p, payload);
            } else if self.video.is_some_and(|(v, _)| v == pid) {
                self.read_video(offset, mpegts::random_access(p), unit_start, payload)?;
            }
        }
        match (self.video, self.video_since) {
            (None, _) if self.total >= PSI_LIMIT => Err(match self.pmt {
                None => CutError::NoProgram { bytes: self.total },
                Some(_) => CutError::NoVideo { bytes: self.total, types: self.stream_types.clone() },
            }),
            (Some(_), Some(since)) if self.origin.is_none() && self.total - since >= KEYFRAME_LIMIT => {
                Err(CutError::NoKeyframe { bytes: self.total - since })
            }
            _ => Ok(()),
        }
    }

    fn read_pat(&mut self, p: &[u8; PACKET], payload: &[u8]) {
        let Some(table) = section(payload, 0x00) else { return };
        // The first program (number 0 names the network table).
        let Some(pmt_pid) = table
            .chunks_exact(4)
            .find(|e| u16::from_be_bytes([e[0], e[1]]) != 0)
            .map(|e| u16::from_be_bytes([e[2] & 0x1f, e[3]]))
        else {
            return;
        };
        if self.pmt_pid != Some(pmt_pid) {
            self.pmt_pid = Some(pmt_pid);
            self.pmt = None;
        }
        self.pat = Some(*p);
        self.set_tables();
    }

    fn read_pmt(&mut self, p: &[u8; PACKET], payload: &[u8]) {
        let Some(table) = section(payload, 0x02) else { return };
        let Some(info) = table.get(2..4) else { return };
        let info = (usize::from(info[0] & 0x0f) << 8) | usize::from(info[1]);
        let mut es = table.get(4 + info..).unwrap_or_default();
        let mut types = Vec::new();
        let mut video = None;
        while es.len() >= 5 {
            types.push(es[0]);
            if video.is_none() {
                video = Codec::of(es[0]).map(|c| (u16::from_be_bytes([es[1] & 0x1f, es[2]]), c));
            }
            let info = (usize::from(es[3] & 0x0f) << 8) | usize::from(es[4]);
            es = es.get(5 + info..).unwrap_or_default();
        }
        self.stream_types = types;
        self.pmt = Some(*p);
        self.set_tables();
        // A program whose video moves to another PID: its frames go on there.
        if video.is_some() && video != self.video {
            self.video = video;
            self.pes = None;
            self.video_since.get_or_insert(self.total);
        }
    }

    fn set_tables(&mut self) {
        let tables: Vec<u8> = self.pat.iter().chain(&self.pmt).flatten().copied().collect();
        self.tables = Arc::from(tables);
    }

    fn read_video(&mut self, offset: u64, rai: bool, unit_start: bool, payload: &[u8]) -> Result<(), CutError> {
        if unit_start {
            self.pes = Some(Pes {
                offset,
                rai,
                tables: self.tables.clone(),
                data: payload.to_vec(),
                pts: None,
                scan: 0,
                key: None,
            });
        } else if let Some(pes) = self.pes.as_mut().filter(|p| p.key.is_none()) {
            let room = ES_SCAN_LIMIT.saturating_sub(pes.data.len());
            pes.data.extend_from_slice(&payload[..payload.len().min(room)]);
        } else {
            return Ok(());
        }
        let Some(mut pes) = self.pes.take() else { return Ok(()) };
        if pes.pts.is_none() {
            match pes_header(&pes.data) {
                PesHeader::Incomplete => {
                    self.pes = Some(pes);
                    return Ok(());
                }
                PesHeader::Invalid => return Ok(()),
                PesHeader::NoPts => return Err(CutError::NoPts { offset: pes.offset }),
                PesHeader::Stamped { pts, dts, es } => {
                    let reference = *self.reference.get_or_insert(dts.unwrap_or(pts).saturating_sub(WRAP_REFERENCE));
                    let unwrap = |t: u64| if t < reference { t + WRAP } else { t };
                    let pts = unwrap(pts);
                    // A DTS above the PTS is broken; the PTS is the safe bound (a later cut).
                    let dts = dts.map_or(pts, |d| unwrap(d).min(pts));
                    if let Some(from) = self.dts.filter(|&d| dts.saturating_add(TIMESTAMP_JITTER) < d) {
                        return Err(CutError::Backwards { offset: pes.offset, from, to: dts });
                    }
                    if pts >= WRAP && self.wrapped_at.is_none() {
                        self.wrapped_at = Some(pes.offset);
                    }
                    self.dts = Some(dts);
                    pes.pts = Some((pts, dts));
                    pes.scan = es;
                    self.frame(pes.offset, pts, dts);
                }
            }
        }
        let codec = self.video.map(|(_, c)| c).expect("video PES of a known stream");
        let key = if pes.rai { Some(true) } else { codec.keyframe(&pes.data, &mut pes.scan) }
            .or((pes.data.len() >= ES_SCAN_LIMIT).then_some(false));
        if let (Some(key), Some((pts, dts))) = (key, pes.pts) {
            pes.key = Some(key);
            pes.data = Vec::new();
            if key {
                self.keyframe(pes.offset, pts, dts, pes.tables.clone());
            }
        }
        self.pes = Some(pes);
        Ok(())
    }

    fn keyframe(&mut self, offset: u64, pts: u64, dts: u64, tables: Arc<[u8]>) {
        if self.origin.is_none() {
            self.origin = Some(pts);
            self.start = pts;
            self.line = pts.saturating_add(self.piece);
            self.limit = offset;
        }
        self.keys.push_back(Key { offset, pts, dts, tables });
    }

    /// A video PES starts at `offset`: the end rule.
    fn frame(&mut self, offset: u64, pts: u64, dts: u64) {
        if self.origin.is_none() {
            return;
        }
        if pts >= self.line {
            self.ahead.insert(pts);
        }
        while let Some(&end) = self.ahead.first()
            && dts >= end
        {
            let piece = self.piece_to(offset, Some(end));
            self.out.push(piece);
            self.index += 1;
            self.start = end;
            self.limit = offset;
            let origin = self.origin.unwrap_or_default();
            self.line =
                origin.saturating_add(((end - origin) / self.piece).saturating_add(1).saturating_mul(self.piece));
            self.ahead = self.ahead.split_off(&self.line);
        }
    }

    /// The current piece, its bytes ending before stream offset `to`.
    fn piece_to(&self, to: u64, end: Option<u64>) -> Piece {
        let key = self.start_key().expect("the previous piece's keyframe shows no frame after this piece's start");
        let at = |offset: u64| (offset - self.base) as usize;
        // Its DTS is the least of the piece's (decode order); PTS are never below it.
        let wrapped = key.dts >= WRAP;
        let crosses = !wrapped && self.wrapped_at.is_some_and(|w| w < to);
        let clock = PieceClock {
            offset: if wrapped || crosses { WRAP } else { 0 },
            correct: if crosses {
                Some(true)
            } else if !wrapped && key.dts >= WRAP - WRAP_ZONE {
                Some(false)
            } else {
                None
            },
        };
        Piece {
            index: self.index,
            bytes: [&key.tables[..], &self.buf[at(key.offset)..at(to)]].concat(),
            start: self.start,
            end,
            origin: self.origin.unwrap_or_default(),
            clock,
        }
    }

    /// The last keyframe, in decode order, that shows a frame at or before the
    /// current piece's start, passing over those in the last [`WRAP_MARGIN`]
    /// before a wrap while an earlier one qualifies. While the PES being read
    /// is undecided this may be an earlier one: [`Cutter::trim`] keeps too
    /// much rather than too little.
    fn start_key(&self) -> Option<&Key> {
        let mut fits = self.keys.iter().rev().filter(|k| k.offset <= self.limit && k.pts <= self.start);
        let last = fits.next()?;
        let near_wrap = |k: &Key| k.dts < WRAP && k.dts >= WRAP - WRAP_MARGIN;
        if !near_wrap(last) {
            return Some(last);
        }
        Some(fits.find(|k| !near_wrap(k)).unwrap_or(last))
    }

    /// Drops what no piece to come needs.
    fn trim(&mut self) {
        let keep = match self.origin {
            // Only the PES being read may yet be the first keyframe.
            None => self.pes.as_ref().filter(|p| p.key.is_none()).map_or(self.total, |p| p.offset),
            Some(_) => match self.start_key() {
                Some(k) => k.offset,
                None => return,
            },
        };
        if keep > self.base {
            self.buf.drain(..(keep - self.base) as usize);
            self.base = keep;
        }
        while self.keys.front().is_some_and(|k| k.offset < keep) {
            self.keys.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;
    use crate::split::mpegts::tests::{pes_header as header, ts_packet};

    const PMT_PID: u16 = 0x100;
    const VIDEO: u16 = 0x101;
    const AUDIO: u16 = 0x102;
    /// 25 frames a second.
    const FRAME: u64 = 3600;
    /// A tuner's streams start far from 0.
    const T: u64 = 10 * TICKS;

    /// A PSI section with its pointer field and CRC.
    fn section_payload(table_id: u8, id: u16, body: &[u8]) -> Vec<u8> {
        let len = 5 + body.len() + 4;
        let mut s = vec![0, table_id, 0xb0 | (len >> 8) as u8, len as u8, (id >> 8) as u8, id as u8, 0xc1, 0, 0];
        s.extend(body);
        let crc = crc32(&s[1..]);
        s.extend(crc.to_be_bytes());
        s
    }

    fn pat_payload() -> Vec<u8> {
        section_payload(0, 1, &[0, 1, 0xe0 | (PMT_PID >> 8) as u8, PMT_PID as u8])
    }

    fn pmt_payload(streams: &[(u8, u16)]) -> Vec<u8> {
        let mut body = vec![0xe0 | (VIDEO >> 8) as u8, VIDEO as u8, 0xf0, 0];
        for &(kind, pid) in streams {
            body.extend([kind, 0xe0 | (pid >> 8) as u8, pid as u8, 0xf0, 0]);
        }
        section_payload(2, 1, &body)
    }

    /// How a frame shows whether it is a keyframe.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Mark {
        /// The random access indicator, and a key picture.
        Rai,
        /// Only its elementary stream.
        Es,
        Not,
    }

    /// The start of a picture of `codec`'s elementary stream.
    fn picture(codec: Codec, key: bool) -> Vec<u8> {
        match codec {
            // Access unit delimiter, then an IDR or a non-IDR slice.
            Codec::H264 => vec![0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, if key { 0x65 } else { 0x41 }, 0x88],
            // AUD (35), then CRA (21) or TRAIL_R (1).
            Codec::Hevc => vec![0, 0, 0, 1, 0x46, 0x01, 0x50, 0, 0, 1, if key { 0x2a } else { 0x02 }, 0x01],
            // Sequence header before an I picture; picture_coding_type I or P.
            Codec::Mpeg12 if key => vec![0, 0, 1, 0xb3, 0x14, 0, 0xf0, 0, 0, 1, 0, 0, 1 << 3, 0xff],
            Codec::Mpeg12 => vec![0, 0, 1, 0, 0, 2 << 3, 0xff],
            Codec::Mpeg4 => vec![0, 0, 1, 0xb6, if key { 0 } else { 1 << 6 }],
        }
    }

    fn stream_type(codec: Codec) -> u8 {
        match codec {
            Codec::H264 => 0x1b,
            Codec::Hevc => 0x24,
            Codec::Mpeg12 => 0x02,
            Codec::Mpeg4 => 0x10,
        }
    }

    /// A video frame of a test stream.
    #[derive(Debug, Clone, Copy)]
    struct Frame {
        offset: usize,
        pts: u64,
        dts: u64,
        key: bool,
    }

    /// A synthetic stream: PAT, PMT, a video and an audio PID.
    #[derive(Debug)]
    struct Ts {
        codec: Codec,
        bytes: Vec<u8>,
        cc: HashMap<u16, u8>,
        /// Video frames in decode order.
        frames: Vec<Frame>,
    }

    impl Ts {
        fn new(codec: Codec) -> Ts {
            Ts { codec, bytes: Vec::new(), cc: HashMap::new(), frames: Vec::new() }
        }

        fn packet(&mut self, pid: u16, start: bool, rai: bool, payload: &[u8]) {
            let cc = self.cc.entry(pid).or_insert(15);
            *cc = (*cc + 1) & 15;
            let p = ts_packet(pid, *cc, start, rai, payload);
            self.bytes.extend(p);
        }

        /// The PTS (unwrapped, as the frames hold it) of the frame whose PTS
        /// is written as `raw`.
        fn unwrapped(&self, raw: u64) -> u64 {
            self.frames.iter().map(|f| f.pts).find(|p| p % WRAP == raw).expect("a frame of the stream")
        }

        fn tables(&mut self) {
            self.packet(0, true, false, &pat_payload());
            let pmt = pmt_payload(&[(stream_type(self.codec), VIDEO), (0x0f, AUDIO)]);
            self.packet(PMT_PID, true, false, &pmt);
        }

        fn audio(&mut self) {
            self.packet(AUDIO, false, false, &[]);
        }

        /// A frame of `packets` packets whose picture header starts `lead`
        /// bytes into its elementary stream (after an SEI-like run).
        fn frame_with(&mut self, pts: u64, dts: u64, mark: Mark, packets: usize, lead: usize) {
            let key = mark != Mark::Not;
            self.frames.push(Frame { offset: self.bytes.len(), pts, dts, key });
            let mut data = header(pts, (dts != pts).then_some(dts));
            data.extend(std::iter::repeat_n(0xff, lead));
            data.extend(picture(self.codec, key));
            let first = if mark == Mark::Rai { PACKET - 6 } else { PACKET - 4 };
            let packets = packets.max(1 + data.len().saturating_sub(first).div_ceil(PACKET - 4));
            let (head, mut rest) = data.split_at(first.min(data.len()));
            self.packet(VIDEO, true, mark == Mark::Rai, head);
            for _ in 1..packets {
                let (now, later) = rest.split_at(rest.len().min(PACKET - 4));
                self.packet(VIDEO, false, false, now);
                rest = later;
            }
        }

        fn frame(&mut self, pts: u64, dts: u64, mark: Mark) {
            self.frame_with(pts, dts, mark, 2, 0);
        }

        /// Frames from picture types in display order: `I` keyframe (random
        /// access indicator), `i` keyframe by its elementary stream alone, `P`
        /// a reference, `B` decoded after the next reference. With `pyramid`
        /// the middle B of a run is decoded first. The first frame shows at
        /// `first`; DTS trail PTS by the least delay that keeps them below.
        fn pictures(&mut self, types: &str, first: u64, pyramid: bool, mut extra: impl FnMut(&mut Ts, usize)) {
            let mut order = Vec::new();
            let mut bs = Vec::new();
            for (display, t) in types.chars().enumerate() {
                if t == 'B' {
                    bs.push(display);
                    continue;
                }
                order.push((display, t));
                if pyramid && bs.len() >= 3 {
                    let mid = bs.remove(bs.len() / 2);
                    order.push((mid, 'B'));
                }
                order.extend(bs.drain(..).map(|d| (d, 'B')));
            }
            order.extend(bs.drain(..).map(|d| (d, 'B')));
            let delay = order.iter().enumerate().map(|(i, (d, _))| i.saturating_sub(*d)).max().unwrap_or(0) as u64;
            for (i, (display, t)) in order.into_iter().enumerate() {
                let pts = first + display as u64 * FRAME;
                let dts = first + i as u64 * FRAME - delay * FRAME;
                let mark = match t {
                    'I' => Mark::Rai,
                    'i' => Mark::Es,
                    _ => Mark::Not,
                };
                self.frame(pts, dts, mark);
                extra(self, i);
            }
        }
    }

    /// A stream's display-order picture types: GOPs of `gop` frames, `b` B
    /// frames between references.
    fn types(frames: usize, gop: usize, b: usize) -> String {
        (0..frames)
            .map(|i| {
                if i % gop == 0 {
                    'I'
                } else if i % (b + 1) == 0 {
                    'P'
                } else {
                    'B'
                }
            })
            .collect()
    }

    /// A plain stream: tables every 10 frames, an audio packet after each.
    fn plain(types: &str, pyramid: bool) -> Ts {
        let mut ts = Ts::new(Codec::H264);
        ts.tables();
        ts.pictures(types, T, pyramid, |ts, i| {
            ts.audio();
            if i % 10 == 9 {
                ts.tables();
            }
        });
        ts
    }

    fn cut(bytes: &[u8], piece: u64, step: usize) -> Vec<Piece> {
        cut_stream(piece, bytes.chunks(step)).unwrap()
    }

    /// Video PES starts in `bytes` (whole packets): (offset, PTS).
    fn video_starts(bytes: &[u8]) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        for (i, p) in bytes.chunks_exact(PACKET).enumerate() {
            if mpegts::pid(p) == VIDEO
                && p[1] & 0x40 != 0
                && let Some(at) = mpegts::payload_start(p)
                && let PesHeader::Stamped { pts, .. } = pes_header(&p[at..])
            {
                out.push((i * PACKET, pts));
            }
        }
        out
    }

    /// What a decoder would make of the pieces, against the stream they came
    /// from: every frame from the first keyframe on lies in exactly one piece's
    /// range, is in that piece's bytes in full, and decodes there (the bytes
    /// after the PAT and PMT start with a keyframe at or before it, which
    /// precedes it in decode order). Pieces are contiguous, in order, each with
    /// a frame. Returns the frames' PTS per piece.
    fn check(ts: &Ts, pieces: &[Piece]) -> Vec<Vec<u64>> {
        let first = ts.frames.iter().position(|f| f.key).expect("a keyframe");
        let t0 = ts.frames[first].pts;
        let due: Vec<u64> = {
            let mut v: Vec<u64> = ts.frames[first..].iter().map(|f| f.pts).filter(|&p| p >= t0).collect();
            v.sort_unstable();
            v
        };
        let by_pts: BTreeMap<u64, Frame> = ts.frames.iter().map(|f| (f.pts, *f)).collect();
        let mut seen: Vec<u64> = Vec::new();
        let mut per_piece = Vec::new();
        assert_eq!(pieces.first().map(|p| p.start), Some(t0), "piece 0 starts at the first keyframe");
        for (j, piece) in pieces.iter().enumerate() {
            assert_eq!(piece.index, j as u32);
            assert_eq!(piece.origin, t0);
            assert_eq!(piece.bytes.len() % PACKET, 0);
            let (tables, body) = piece.bytes.split_at(2 * PACKET);
            assert_eq!(mpegts::pid(&tables[..PACKET]), 0, "piece {j}: the PAT first");
            assert_eq!(mpegts::pid(&tables[PACKET..]), PMT_PID, "piece {j}: then the PMT");
            match pieces.get(j + 1) {
                Some(next) => assert_eq!(piece.end, Some(next.start), "piece {j} ends where {} starts", j + 1),
                None => assert_eq!(piece.end, None, "the last piece is open"),
            }
            // Where the body lies in the stream: its first packet starts a keyframe.
            let starts: Vec<(usize, u64)> =
                video_starts(body).into_iter().map(|(at, p)| (at, ts.unwrapped(p))).collect();
            let (0, key_pts) = starts[0] else { panic!("piece {j} starts with a video PES") };
            let key = by_pts[&key_pts];
            assert!(key.key, "piece {j} starts with a keyframe");
            assert_eq!(&ts.bytes[key.offset..key.offset + body.len()], body, "piece {j} is the stream's bytes");
            let after = key.offset + body.len();
            assert!(
                after == ts.bytes.len() || ts.frames.iter().any(|f| f.offset == after),
                "piece {j} ends where a video PES starts"
            );
            // The prefix: the stream's latest PAT and PMT before the body.
            let latest = |pid: u16| {
                let packets = &ts.bytes[key.offset % PACKET..key.offset];
                packets.chunks_exact(PACKET).rev().find(|p| mpegts::pid(p) == pid).map(<[u8]>::to_vec)
            };
            assert_eq!(Some(tables[..PACKET].to_vec()), latest(0), "piece {j}: the latest PAT");
            assert_eq!(Some(tables[PACKET..].to_vec()), latest(PMT_PID), "piece {j}: the latest PMT");
            let end = piece.end.unwrap_or(u64::MAX);
            let mine: Vec<u64> = starts.iter().map(|s| s.1).filter(|&p| p >= piece.start && p < end).collect();
            assert!(!mine.is_empty(), "piece {j} holds a frame");
            for &p in &mine {
                // Decodes from the keyframe: shown at or after it (open GOPs'
                // leading pictures show before their keyframe).
                assert!(p >= key.pts, "piece {j}: frame {p} shows before its keyframe {}", key.pts);
            }
            let mut sorted = mine.clone();
            sorted.sort_unstable();
            assert_eq!(sorted.first(), Some(&piece.start), "piece {j} starts with its first frame");
            seen.extend(&sorted);
            per_piece.push(sorted);
        }
        assert_eq!(seen, due, "every frame from the first keyframe on, exactly once");
        per_piece
    }

    /// The rules, restated over the whole stream at once (the cutter sees it
    /// as it comes): each piece's range and its bytes' span in the stream.
    fn model(ts: &Ts, piece: u64) -> Vec<(u64, Option<u64>, usize, usize)> {
        let frames = &ts.frames[ts.frames.iter().position(|f| f.key).unwrap()..];
        let t0 = frames[0].pts;
        let (mut start, mut line, mut limit) = (t0, t0 + piece, 0);
        let mut out = Vec::new();
        loop {
            let fits = |i: &usize| frames[*i].key && frames[*i].pts <= start;
            let near_wrap = |i: &usize| frames[*i].dts < WRAP && frames[*i].dts >= WRAP - WRAP_MARGIN;
            let last = (0..=limit).rev().find(fits).unwrap();
            let key = (0..=limit).rev().filter(fits).find(|i| !near_wrap(i)).unwrap_or(last);
            let from = frames[key].offset;
            let end = frames.iter().map(|f| f.pts).filter(|&p| p >= line).min();
            let Some((end, cut)) = end.and_then(|e| Some((e, frames.iter().position(|f| f.dts >= e)?))) else {
                out.push((start, None, from, ts.bytes.len()));
                return out;
            };
            out.push((start, Some(end), from, frames[cut].offset));
            start = end;
            line = t0 + ((end - t0) / piece + 1) * piece;
            limit = cut;
        }
    }

    fn spans(pieces: &[Piece], ts: &Ts) -> Vec<(u64, Option<u64>, usize, usize)> {
        pieces
            .iter()
            .map(|p| {
                let body = &p.bytes[2 * PACKET..];
                let pts = ts.unwrapped(video_starts(body)[0].1);
                let from = ts.frames.iter().find(|f| f.pts == pts).unwrap().offset;
                (p.start, p.end, from, from + body.len())
            })
            .collect()
    }

    #[test]
    fn pieces_partition_the_frames() {
        // 10 s at 25 fps, GOPs of 12 frames (not a divisor of a piece), no B frames.
        let ts = plain(&types(250, 12, 0), false);
        let pieces = cut(&ts.bytes, TICKS, 1000);
        let frames = check(&ts, &pieces);
        assert_eq!(pieces.len(), 10);
        assert!(frames.iter().all(|f| f.len() == 25), "{:?}", frames.iter().map(Vec::len).collect::<Vec<_>>());
        for (j, p) in pieces.iter().enumerate() {
            assert_eq!(p.start, T + j as u64 * TICKS);
        }
        assert_eq!(spans(&pieces, &ts), model(&ts, TICKS));
    }

    #[test]
    fn b_frames_end_a_piece_at_the_right_pes() {
        // A B pyramid: display I0 B1 B2 B3 P4 B5 B6 B7 P8 …, decode order
        // I0 P4 B2 B1 B3 P8 B6 B5 B7 …, DTS two frames behind.
        let mut ts = Ts::new(Codec::H264);
        ts.tables();
        ts.pictures("IBBBPBBBPBBBPBBBI", T, true, |ts, _| ts.audio());
        let at = |frame: u64| ts.frames.iter().find(|f| f.pts == T + frame * FRAME).unwrap().offset;
        let mut c = Cutter::new(2 * FRAME);
        // P4 makes 4 the candidate end of piece 0 and B2 lowers it to 2; but B1,
        // which shows before 2, is still to come (a cut before B2 would lose it).
        assert_eq!(c.feed(&ts.bytes[..at(3)]).unwrap(), []);
        // B3's DTS is 2 frames: every frame before 2 has come.
        let pieces = c.feed(&ts.bytes[at(3)..at(3) + PACKET]).unwrap();
        assert_eq!(pieces.len(), 1);
        assert_eq!((pieces[0].start, pieces[0].end), (T, Some(T + 2 * FRAME)));
        assert!(pieces[0].bytes[2 * PACKET..] == ts.bytes[at(0)..at(3)], "piece 0 ends before B3");
        // Piece 1, [2, 4): P8 comes, then B6, whose DTS 4 ends it.
        let mut all = pieces;
        all.extend(c.feed(&ts.bytes[at(3) + PACKET..at(6) + PACKET]).unwrap());
        assert_eq!(all.len(), 2);
        assert_eq!((all[1].start, all[1].end), (T + 2 * FRAME, Some(T + 4 * FRAME)));
        assert!(all[1].bytes[2 * PACKET..] == ts.bytes[at(0)..at(6)], "piece 1 starts at I0, ends before B6");
        all.extend(c.feed(&ts.bytes[at(6) + PACKET..]).unwrap());
        all.extend(c.finish());
        // No PES comes after I16 to show that 16 is final: the tail holds 14, 15, 16.
        let frames = check(&ts, &all);
        assert_eq!(frames.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2, 2, 2, 2, 2, 3]);
        assert_eq!(spans(&all, &ts), model(&ts, 2 * FRAME));
    }

    #[test]
    fn a_piece_starts_at_the_last_keyframe_at_or_before_its_first_frame() {
        // Open GOPs: display … P9 B10 B11 I12 …; I12 is decoded before B10 and
        // B11, which show before it. A piece whose first frame is 10 starts at
        // I0 (I12 shows later); one whose first frame is 12 starts at I12.
        let mut ts = Ts::new(Codec::H264);
        ts.tables();
        ts.pictures("IBBPBBPBBPBBIBBPBBPBBPBBIBBPBB", T, false, |ts, _| ts.audio());
        for (piece, firsts_and_keys) in [
            (5, vec![(0, 0), (5, 0), (10, 0), (15, 12), (20, 12), (25, 24)]),
            (6, vec![(0, 0), (6, 0), (12, 12), (18, 12), (24, 24)]),
        ] {
            let pieces = cut(&ts.bytes, piece * FRAME, 333);
            check(&ts, &pieces);
            let got: Vec<(u64, u64)> = pieces
                .iter()
                .map(|p| ((p.start - T) / FRAME, (video_starts(&p.bytes[2 * PACKET..])[0].1 - T) / FRAME))
                .collect();
            assert_eq!(got, firsts_and_keys, "pieces of {piece} frames");
            assert_eq!(spans(&pieces, &ts), model(&ts, piece * FRAME));
        }
    }

    #[test]
    fn a_stream_that_starts_mid_packet_and_mid_gop() {
        let mut ts = Ts::new(Codec::H264);
        // The tail of a packet, then frames of a GOP whose keyframe was missed.
        ts.bytes.extend([0x47, 0x13, 0x00, 0x47, 0x55, 0x47, 0xaa].repeat(20));
        ts.tables();
        ts.pictures("BPBBPBBIBBPBBPBBIBBPBBPBBIBBPB", T, false, |ts, _| ts.audio());
        let pieces = cut(&ts.bytes, 4 * FRAME, 1000);
        let frames = check(&ts, &pieces);
        let t0 = T + 7 * FRAME;
        assert_eq!(pieces[0].origin, t0);
        // The two B frames after I7 show before it: never in a piece.
        assert!(frames.iter().flatten().all(|&p| p >= t0));
        assert_eq!(frames.concat().len(), 30 - 7);
        let mut c = Cutter::new(4 * FRAME);
        c.feed(&ts.bytes).unwrap();
        assert_eq!(c.origin(), Some(t0));
    }

    #[test]
    fn any_split_of_the_input_gives_the_same_pieces() {
        let mut ts = Ts::new(Codec::Mpeg12);
        ts.bytes.extend([0x55; 100]);
        ts.tables();
        ts.pictures(&types(120, 15, 2), T, false, |ts, i| {
            ts.audio();
            if i % 7 == 0 {
                ts.tables();
            }
        });
        let whole = cut(&ts.bytes, TICKS / 2, ts.bytes.len());
        check(&ts, &whole);
        for step in [1, 7, 188, 189, 1000] {
            assert!(cut(&ts.bytes, TICKS / 2, step) == whole, "fed {step} bytes at a time");
        }
    }

    #[test]
    fn finish_gives_the_tail() {
        let ts = plain(&types(60, 12, 2), false);
        let mut c = Cutter::new(TICKS);
        let mut pieces = c.feed(&ts.bytes).unwrap();
        assert_eq!(pieces.len(), 2, "the third piece has no end yet");
        let last = c.finish().unwrap();
        assert_eq!((last.index, last.start, last.end), (2, T + 2 * TICKS, None));
        pieces.push(last);
        assert_eq!(check(&ts, &pieces)[2].len(), 10);
        assert_eq!(c.finish(), None, "only once");
        assert_eq!(c.feed(&ts.bytes), Err(CutError::Finished));
        // Before the first keyframe there is nothing to give.
        let mut c = Cutter::new(TICKS);
        c.feed(&ts.bytes[..ts.frames[0].offset + PACKET]).unwrap();
        assert_eq!(c.origin(), Some(T));
        let mut c = Cutter::new(TICKS);
        c.feed(&ts.bytes[..ts.frames[0].offset]).unwrap();
        assert_eq!((c.origin(), c.finish()), (None, None));
    }

    #[test]
    fn what_no_piece_needs_is_dropped() {
        // 2 minutes in 2 s GOPs with B frames, cut in 1 s pieces.
        let ts = plain(&types(3000, 50, 2), false);
        let gop = ts.frames.iter().filter(|f| f.key).nth(1).unwrap().offset;
        let mut c = Cutter::new(TICKS);
        let mut pieces = Vec::new();
        let mut most = 0;
        for slice in ts.bytes.chunks(4096) {
            pieces.extend(c.feed(slice).unwrap());
            most = most.max(c.held());
        }
        pieces.extend(c.finish());
        assert_eq!(pieces.len(), 120);
        check(&ts, &pieces);
        // A GOP, the reordering delay and a slice at the most, however long the stream.
        assert!(most < gop + 3 * 1000 + 4096, "held {most} bytes; a GOP is {gop}");
    }

    #[test]
    fn no_video_stream_is_an_error_after_a_bound() {
        let mut ts = Ts::new(Codec::H264);
        // A radio programme: PAT, a PMT with audio only, audio.
        let pmt = pmt_payload(&[(0x0f, AUDIO), (0x06, 0x103)]);
        let mut c = Cutter::new(TICKS);
        let mut fed = 0;
        let err = loop {
            ts.bytes.clear();
            ts.packet(0, true, false, &pat_payload());
            ts.packet(PMT_PID, true, false, &pmt);
            for _ in 0..500 {
                ts.audio();
            }
            fed += ts.bytes.len() as u64;
            if let Err(e) = c.feed(&ts.bytes) {
                break e;
            }
            assert!(fed < 2 * PSI_LIMIT, "no error after {fed} bytes");
        };
        let CutError::NoVideo { bytes, types } = &err else { panic!("{err:?}") };
        assert!(*bytes >= PSI_LIMIT && *bytes < PSI_LIMIT + 600 * PACKET as u64, "{bytes}");
        assert_eq!(types, &[0x0f, 0x06]);
        assert_eq!(c.feed(&[0x47]), Err(err), "an error is final");

        // Packets without any PAT.
        let mut c = Cutter::new(TICKS);
        let audio = ts.bytes[2 * PACKET..].to_vec();
        let err = loop {
            if let Err(e) = c.feed(&audio) {
                break e;
            }
        };
        assert!(matches!(err, CutError::NoProgram { .. }), "{err:?}");

        // Not MPEG-TS at all.
        let mut c = Cutter::new(TICKS);
        let html = b"<html><body>404 Not Found</body></html>\n".repeat(2000);
        assert!(matches!(c.feed(&html), Err(CutError::NoSync { bytes }) if bytes > SYNC_LIMIT));
    }

    #[test]
    fn a_table_spanning_packets_is_waited_out() {
        // A PMT section longer than a packet (many streams with descriptors),
        // then, later, one that fits.
        let mut ts = Ts::new(Codec::H264);
        ts.packet(0, true, false, &pat_payload());
        let long: Vec<(u8, u16)> = (0..40).map(|i| (0x06, 0x200 + i)).chain([(0x1b, VIDEO)]).collect();
        let long = pmt_payload(&long);
        ts.packet(PMT_PID, true, false, &long[..PACKET - 4]);
        ts.packet(PMT_PID, false, false, &long[PACKET - 4..]);
        ts.frame(T, T, Mark::Rai);
        let skipped = ts.frames.len();
        ts.tables();
        for i in 0..60 {
            ts.frame(T + (i + 1) * FRAME, T + (i + 1) * FRAME, if i % 25 == 0 { Mark::Rai } else { Mark::Not });
        }
        let pieces = cut(&ts.bytes, TICKS, 100);
        ts.frames.drain(..skipped);
        check(&ts, &pieces);
        assert_eq!(pieces[0].start, T + FRAME, "the first keyframe after a PMT that fits");
    }

    #[test]
    fn keyframes_from_the_elementary_stream() {
        for codec in [Codec::H264, Codec::Hevc, Codec::Mpeg12, Codec::Mpeg4] {
            for key in [true, false] {
                let es = [vec![0xff; 3], picture(codec, key)].concat();
                // Whole, and arriving a byte at a time.
                assert_eq!(codec.keyframe(&es, &mut 0), Some(key), "{codec:?}");
                let mut from = 0;
                let got = (1..=es.len()).find_map(|n| codec.keyframe(&es[..n], &mut from));
                assert_eq!(got, Some(key), "{codec:?} in pieces");
            }
            // Parameter sets, SEI and user data decide nothing.
            let headers: &[u8] = match codec {
                Codec::H264 => &[0, 0, 1, 0x67, 0x64, 0, 0, 1, 0x68, 0, 0, 1, 0x06, 5],
                Codec::Hevc => &[0, 0, 1, 0x40, 1, 0, 0, 1, 0x42, 1, 0, 0, 1, 0x4e, 1],
                Codec::Mpeg12 => &[0, 0, 1, 0xb3, 0, 0, 0, 0, 1, 0xb8, 0, 0, 0, 0, 1, 0xb2, 0],
                Codec::Mpeg4 => &[0, 0, 1, 0xb0, 1, 0, 0, 1, 0xb5, 9, 0, 0, 1, 0x20, 0],
            };
            assert_eq!(codec.keyframe(headers, &mut 0), None, "{codec:?}");
        }
        // A whole stream whose keyframes are marked only in the elementary
        // stream, x264's first IDR behind a long SEI (four packets in).
        for codec in [Codec::H264, Codec::Hevc, Codec::Mpeg12, Codec::Mpeg4] {
            let mut ts = Ts::new(codec);
            ts.tables();
            ts.frame(T - FRAME, T - FRAME, Mark::Not);
            ts.frame_with(T, T, Mark::Es, 5, 700);
            for i in 1..100 {
                ts.frame(T + i * FRAME, T + i * FRAME, if i % 30 == 0 { Mark::Es } else { Mark::Not });
                ts.audio();
            }
            let pieces = cut(&ts.bytes, TICKS, 1000);
            check(&ts, &pieces);
            assert_eq!(pieces[0].origin, T, "{codec:?}");
            assert_eq!(pieces.len(), 4, "{codec:?}");
        }
    }

    #[test]
    fn a_gap_makes_no_empty_piece() {
        // Frames 0..30, nothing for 3.2 s, frames again: no piece without a frame.
        let mut ts = Ts::new(Codec::H264);
        ts.tables();
        for i in (0..30).chain(110..160) {
            ts.frame(T + i * FRAME, T + i * FRAME, if i % 12 == 0 || i == 110 { Mark::Rai } else { Mark::Not });
            ts.audio();
        }
        let pieces = cut(&ts.bytes, TICKS, 1000);
        let frames = check(&ts, &pieces);
        let starts: Vec<u64> = pieces.iter().map(|p| (p.start - T) / FRAME).collect();
        // Grid lines at 0, 25, 50 (empty), 75 (empty), 100 (first frame 110), 125, 150.
        assert_eq!(starts, [0, 25, 110, 125, 150]);
        assert_eq!(frames[1].len(), 5);
        assert_eq!(spans(&pieces, &ts), model(&ts, TICKS));
    }

    #[test]
    fn a_video_pes_without_pts_is_an_error() {
        let mut ts = Ts::new(Codec::H264);
        ts.tables();
        ts.frame(T, T, Mark::Rai);
        let at = ts.bytes.len();
        let mut pes = vec![0, 0, 1, 0xe0, 0, 0, 0x80, 0, 0];
        pes.extend(picture(Codec::H264, false));
        ts.packet(VIDEO, true, false, &pes);
        assert_eq!(Cutter::new(TICKS).feed(&ts.bytes), Err(CutError::NoPts { offset: at as u64 }));
    }

    #[test]
    fn timestamps_that_jump_back_are_an_error() {
        // A clock that restarts 50 s back (not a wrap: it stays above the
        // wrap reference, 60 s before the stream's first timestamp).
        let mut ts = Ts::new(Codec::H264);
        ts.tables();
        let top = T + 100 * TICKS;
        for (i, t) in [top, top + FRAME, top - 50 * TICKS, top - 50 * TICKS + FRAME].into_iter().enumerate() {
            ts.frame(t, t, if i == 0 { Mark::Rai } else { Mark::Not });
        }
        let err = cut_stream(TICKS, [&ts.bytes[..]]).unwrap_err();
        let at = ts.frames[2].offset as u64;
        assert_eq!(err, CutError::Backwards { offset: at, from: top + FRAME, to: top - 50 * TICKS });
        // A DTS a little below the one before is tolerated.
        let mut ts = Ts::new(Codec::H264);
        ts.tables();
        for (i, t) in [0, 1, 2, 1, 3, 4, 5].into_iter().enumerate() {
            ts.frame(T + t * FRAME, T + t * FRAME, if i == 0 { Mark::Rai } else { Mark::Not });
        }
        assert!(cut_stream(TICKS, [&ts.bytes[..]]).is_ok());
    }

    /// The raw PTS and DTS (the PTS when none is written) of the video PES
    /// starts in `bytes`.
    fn video_stamps(bytes: &[u8]) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for p in bytes.chunks_exact(PACKET) {
            if mpegts::pid(p) == VIDEO
                && p[1] & 0x40 != 0
                && let Some(at) = mpegts::payload_start(p)
                && let PesHeader::Stamped { pts, dts, .. } = pes_header(&p[at..])
            {
                out.push((pts, dts.unwrap_or(pts)));
            }
        }
        out
    }

    /// A timestamp as a node's demuxer gives it (ffmpeg's `correct_ts_overflow`
    /// when `correct`): with `first` the DTS of the first packet it returns,
    /// and `r` that less 60 s, a piece whose first packet is within 60 s of a
    /// wrap has every timestamp from `r` on moved back by 2^33; any other, every
    /// timestamp below `r` moved on.
    fn demuxed(first: u64, correct: bool, t: u64) -> i128 {
        let (t, r, wrap) = (i128::from(t), i128::from(first) - i128::from(WRAP_REFERENCE), i128::from(WRAP));
        match (correct, first >= WRAP - WRAP_REFERENCE) {
            (false, _) => t,
            (true, true) if t >= r => t - wrap,
            (true, false) if t < r => t + wrap,
            _ => t,
        }
    }

    /// Each piece's clock puts every timestamp in its bytes where the stream's
    /// unwrapped timeline has it, and a piece whose video crosses the wrap
    /// starts [`WRAP_MARGIN`] or more before it (unless the stream starts
    /// closer). Returns how many pieces cross a wrap.
    fn check_clocks(ts: &Ts, pieces: &[Piece]) -> usize {
        // Whether the stream has a keyframe clear of the margin before the wrap.
        let clear = ts.frames.iter().any(|f| f.key && f.dts < WRAP - WRAP_MARGIN);
        let mut crossing = 0;
        for (j, piece) in pieces.iter().enumerate() {
            let body = &piece.bytes[2 * PACKET..];
            let stamps = video_stamps(body);
            // The test streams' other packets carry no PES: the keyframe comes out first.
            let first = stamps[0].1;
            let correct = piece.clock.correct != Some(false);
            for &(pts, dts) in &stamps {
                let f = ts.frames.iter().find(|f| f.pts % WRAP == pts).unwrap();
                for (raw, unwrapped) in [(pts, f.pts), (dts, f.dts)] {
                    let placed = demuxed(first, correct, raw) + i128::from(piece.clock.offset);
                    assert_eq!(placed, i128::from(unwrapped), "piece {j} ({:?}): timestamp {raw}", piece.clock);
                }
            }
            let key = ts.frames.iter().find(|f| f.pts % WRAP == stamps[0].0).unwrap();
            if key.dts < WRAP && stamps.iter().any(|&(p, _)| ts.unwrapped(p) >= WRAP) {
                crossing += 1;
                assert_eq!(piece.clock, PieceClock { offset: WRAP, correct: Some(true) }, "piece {j}");
                assert!(WRAP - key.dts >= WRAP_MARGIN || !clear, "piece {j} starts {} before the wrap", WRAP - key.dts);
            }
        }
        crossing
    }

    #[test]
    fn a_wrap_of_the_clock_leaves_the_pieces_on_one_timeline() {
        // 14 s from 7.5 s before the wrap, GOPs of 12 frames, 1 s pieces.
        let first = WRAP - 7 * TICKS - TICKS / 2;
        let mut ts = Ts::new(Codec::H264);
        ts.tables();
        ts.pictures(&types(350, 12, 0), first, false, |ts, i| {
            ts.audio();
            if i % 10 == 9 {
                ts.tables();
            }
        });
        let pieces = cut(&ts.bytes, TICKS, 1000);
        let frames = check(&ts, &pieces);
        assert_eq!(pieces.len(), 14);
        assert!(frames.iter().all(|f| f.len() == 25));
        for (j, p) in pieces.iter().enumerate() {
            assert_eq!(p.start, first + j as u64 * TICKS, "piece {j} on the unwrapped timeline");
        }
        assert_eq!(spans(&pieces, &ts), model(&ts, TICKS));
        assert_eq!(check_clocks(&ts, &pieces), 1);
        let clocks: Vec<PieceClock> = pieces.iter().map(|p| p.clock).collect();
        let before = PieceClock { offset: 0, correct: Some(false) };
        let across = PieceClock { offset: WRAP, correct: Some(true) };
        let after = PieceClock { offset: WRAP, correct: None };
        assert_eq!(clocks, [[before; 7].as_slice(), &[across], &[after; 6]].concat());
        // Piece 7 holds frames 175..200, the wrap between 187 and 188. Its
        // keyframe (frame 168) is 0.78 s before the wrap, and so are all from
        // frame 72 on: its bytes start at frame 60, 5.1 s before it, as do
        // those of the pieces from 3 on whose keyframes are that close.
        for j in 0..9 {
            let key = ts.unwrapped(video_starts(&pieces[j].bytes[2 * PACKET..])[0].1);
            let want = [0, 24, 48, 60, 60, 60, 60, 60, 192][j];
            assert_eq!(key, first + want * FRAME, "piece {j} starts at frame {}", (key - first) / FRAME);
        }
        assert_eq!(across.args(), ["-correct_ts_overflow", "1", "-itsoffset", "95443.717689"]);
        assert_eq!(before.args(), ["-correct_ts_overflow", "0"]);
        assert_eq!(after.args(), ["-itsoffset", "95443.717689"]);
        assert!(PieceClock::default().args().is_empty());
        // ffmpeg reads the offset in microseconds, then in ticks: exactly 2^33.
        assert_eq!((95_443_717_689u128 * 9 + 50) / 100, u128::from(WRAP));
    }

    #[test]
    fn streams_that_wrap_at_random_points() {
        let mut r = rng(0x2_0000_0000);
        let mut crossing = 0;
        for round in 0..300 {
            let frames = 20 + r(300) as usize;
            let gop = 1 + r(60) as usize;
            let b = r(4) as usize;
            let pyramid = r(2) == 0;
            let codec = [Codec::H264, Codec::Hevc, Codec::Mpeg12, Codec::Mpeg4][r(4) as usize];
            let piece = [FRAME, 2 * FRAME + 1, 7 * FRAME, TICKS, 3 * TICKS][r(5) as usize];
            // The wrap at a random point of the stream (or just after it), or
            // the stream about where the zones before a wrap begin.
            let len = frames as u64 * FRAME;
            let lead = match r(4) {
                0 => WRAP_ZONE + r(2 * len) - len,
                1 => WRAP_REFERENCE + r(2 * len) - len,
                _ => 1 + r(len + WRAP_MARGIN),
            };
            let first = WRAP - lead;
            let t: String =
                types(frames, gop, b).chars().map(|c| if c == 'I' && r(3) == 0 { 'i' } else { c }).collect();
            let mut ts = Ts::new(codec);
            ts.tables();
            let mut r2 = rng(round);
            ts.pictures(&t, first, pyramid, |ts, _| {
                for _ in 0..r2(3) {
                    ts.audio();
                }
                if r2(8) == 0 {
                    ts.tables();
                }
            });
            let step = 1 + r(3000) as usize;
            let pieces = cut(&ts.bytes, piece, step);
            let what = format!("round {round}: {t} from 2^33 - {lead} piece {piece} {codec:?} pyramid {pyramid}");
            check(&ts, &pieces);
            assert_eq!(spans(&pieces, &ts), model(&ts, piece), "{what}");
            crossing += check_clocks(&ts, &pieces);
        }
        assert!(crossing > 100, "{crossing} pieces crossed a wrap");
    }

    #[test]
    fn damaged_packets_are_kept_but_not_read() {
        // A packet flagged with transport_error_indicator that would start a
        // frame with a wild PTS: it must not end a piece.
        let ts = plain(&types(100, 25, 0), false);
        let mut bytes = ts.bytes.clone();
        let f = ts.frames[40].offset;
        let mut wild = ts_packet(VIDEO, 0, true, false, &header(T + 1000 * TICKS, None));
        wild[1] |= 0x80;
        bytes.splice(f..f, wild);
        let pieces = cut(&bytes, TICKS, 1000);
        let starts: Vec<u64> = pieces.iter().map(|p| p.start).collect();
        assert_eq!(starts, [T, T + TICKS, T + 2 * TICKS, T + 3 * TICKS]);
        assert!(pieces[1].bytes.windows(PACKET).any(|w| w[1] & 0x80 != 0), "the damaged packet is passed on");
    }

    /// xorshift64: the same streams every run.
    fn rng(seed: u64) -> impl FnMut(u64) -> u64 {
        let mut s = seed | 1;
        move |n| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s % n
        }
    }

    #[test]
    fn random_streams_match_the_rules() {
        let mut r = rng(0x5eed);
        for round in 0..200 {
            let frames = 20 + r(200) as usize;
            let gop = 1 + r(40) as usize;
            let b = r(4) as usize;
            let pyramid = r(2) == 0;
            let codec = [Codec::H264, Codec::Hevc, Codec::Mpeg12, Codec::Mpeg4][r(4) as usize];
            // Down to pieces shorter than the reordering delay, which one PES ends several of.
            let piece = [1, FRAME / 2, FRAME, 2 * FRAME + 1, 7 * FRAME, TICKS, 3 * TICKS][r(7) as usize];
            let lead = r(10) as usize;
            let mut t: String = "PB".chars().cycle().take(lead).collect();
            t.push_str(&types(frames, gop, b));
            let t: String = t.chars().map(|c| if c == 'I' && r(3) == 0 { 'i' } else { c }).collect();
            let mut ts = Ts::new(codec);
            ts.tables();
            let mut r2 = rng(round);
            ts.pictures(&t, T, pyramid, |ts, _| {
                for _ in 0..r2(3) {
                    ts.audio();
                }
                if r2(8) == 0 {
                    ts.tables();
                }
            });
            let step = 1 + r(3000) as usize;
            let pieces = cut(&ts.bytes, piece, step);
            let what = format!("round {round}: {t} piece {piece} {codec:?} pyramid {pyramid} step {step}");
            if ts.frames.iter().any(|f| f.key) {
                check(&ts, &pieces);
                assert_eq!(spans(&pieces, &ts), model(&ts, piece), "{what}");
            } else {
                assert!(pieces.is_empty(), "{what}");
            }
        }
    }
}
