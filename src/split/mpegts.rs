//! Just enough MPEG-TS to join chunks: where each keyframe starts (a chunk can
//! be handed over to another attempt of the same chunk only there), and
//! continuity counters that run on across chunk boundaries (each chunk's muxer
//! starts them at 0, which the finisher's demuxer would report as packet loss
//! and flag the frame before the boundary as corrupt).

/// Size of one transport packet.
pub const PACKET: usize = 188;
/// The first byte of every packet.
pub const SYNC: u8 = 0x47;
const NULL_PID: u16 = 0x1fff;

/// The packet identifier of a packet.
pub fn pid(p: &[u8]) -> u16 {
    (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])
}

/// Where a packet's payload starts, when it has one that fits.
pub fn payload_start(p: &[u8]) -> Option<usize> {
    match (p[3] >> 4) & 3 {
        1 => Some(4),
        3 => Some(5 + usize::from(p[4])).filter(|&at| at < PACKET),
        _ => None,
    }
}

/// Whether a packet's adaptation field sets the random access indicator.
pub fn random_access(p: &[u8]) -> bool {
    (p[3] >> 4) & 2 != 0 && p[4] > 0 && p[5] & 0x40 != 0
}

/// A PES timestamp (PTS or DTS, 90 kHz) from its five bytes.
pub fn timestamp(t: &[u8]) -> u64 {
    (u64::from(t[0] >> 1) & 7) << 30
        | u64::from(t[1]) << 22
        | (u64::from(t[2]) >> 1) << 15
        | u64::from(t[3]) << 7
        | u64::from(t[4]) >> 1
}

/// A packet that starts a keyframe's PES packet (payload unit start with the
/// random access indicator set, as ffmpeg's muxer marks keyframes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyframe {
    /// Byte offset of the packet in the stream.
    pub offset: usize,
    /// Presentation timestamp in 90 kHz units.
    pub pts: u64,
}

/// Keyframes among the whole packets of `bytes` at or after `from` (a packet
/// boundary).
pub fn keyframes(bytes: &[u8], from: usize) -> Vec<Keyframe> {
    let mut out = Vec::new();
    let mut at = from;
    while at + PACKET <= bytes.len() {
        if let Some(pts) = keyframe_pts(&bytes[at..at + PACKET]) {
            out.push(Keyframe { offset: at, pts });
        }
        at += PACKET;
    }
    out
}

fn keyframe_pts(p: &[u8]) -> Option<u64> {
    if p[0] != SYNC || p[1] & 0x40 == 0 || !random_access(p) {
        return None;
    }
    let pes = p.get(payload_start(p)?..)?;
    if pes.len() < 14 || pes[..3] != [0, 0, 1] || pes[7] & 0x80 == 0 {
        return None;
    }
    Some(timestamp(&pes[9..14]))
}

/// Rewrites continuity counters so that they run on across joined streams.
#[derive(Debug, Default)]
pub struct Continuity {
    last: std::collections::HashMap<u16, u8>,
}

impl Continuity {
    /// Fixes whole packets in place; `bytes.len()` must be a multiple of [`PACKET`].
    pub fn fix(&mut self, bytes: &mut [u8]) {
        for p in bytes.chunks_exact_mut(PACKET) {
            if p[0] != SYNC {
                continue;
            }
            let pid = pid(p);
            if pid == NULL_PID {
                continue;
            }
            let has_payload = (p[3] >> 4) & 1 == 1;
            let cc = match (self.last.get(&pid), has_payload) {
                (Some(l), true) => (l + 1) & 0x0f,
                (Some(l), false) => *l,
                (None, _) => p[3] & 0x0f,
            };
            p[3] = (p[3] & 0xf0) | cc;
            self.last.insert(pid, cc);
        }
    }
}

/// What is wrong with a chunk's stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("no sync byte at offset {offset}")]
    Sync { offset: u64 },
    #[error("packets of PID {pid} are missing before offset {offset} (continuity {expected}, got {got})")]
    Continuity { pid: u16, offset: u64, expected: u8, got: u8 },
    #[error("it ends {bytes} bytes into a packet")]
    Partial { bytes: usize },
    #[error("it holds {got} video frames where {expected} were due")]
    Frames { expected: u64, got: u64 },
}

/// Checks a chunk's MPEG-TS as it arrives, before any of it is passed on: every
/// packet starts with the sync byte, no packet of a PID is missing (its
/// continuity counter runs on), and the video frames (one PES each, as ffmpeg's
/// muxer writes them) are counted, for [`Verifier::finish`] to compare with what
/// the chunk should hold. What a broken node or a damaged transfer would get
/// wrong; a valid stream of wrong pictures is out of its reach.
#[derive(Debug, Default)]
pub struct Verifier {
    /// The start of a packet that has not fully arrived.
    carry: Vec<u8>,
    offset: u64,
    continuity: std::collections::HashMap<u16, u8>,
    video_frames: u64,
}

impl Verifier {
    /// Checks the next bytes of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Invalid> {
        if !self.carry.is_empty() {
            let need = (PACKET - self.carry.len()).min(bytes.len());
            self.carry.extend_from_slice(&bytes[..need]);
            bytes = &bytes[need..];
            if self.carry.len() < PACKET {
                return Ok(());
            }
            let packet = std::mem::take(&mut self.carry);
            self.packet(&packet)?;
        }
        let mut packets = bytes.chunks_exact(PACKET);
        for p in &mut packets {
            self.packet(p)?;
        }
        self.carry.extend_from_slice(packets.remainder());
        Ok(())
    }

    /// The stream is over: it must end on a packet boundary and hold `expected`
    /// video frames when that is known.
    pub fn finish(&self, expected: Option<u64>) -> Result<(), Invalid> {
        if !self.carry.is_empty() {
            return Err(Invalid::Partial { bytes: self.carry.len() });
        }
        match expected {
            Some(e) if e != self.video_frames => Err(Invalid::Frames { expected: e, got: self.video_frames }),
            _ => Ok(()),
        }
    }

    pub fn video_frames(&self) -> u64 {
        self.video_frames
    }

    fn packet(&mut self, p: &[u8]) -> Result<(), Invalid> {
        let offset = self.offset;
        self.offset += PACKET as u64;
        if p[0] != SYNC {
            return Err(Invalid::Sync { offset });
        }
        let pid = pid(p);
        if pid == NULL_PID {
            return Ok(());
        }
        let afc = (p[3] >> 4) & 3;
        let cc = p[3] & 0x0f;
        let discontinuity = afc & 2 != 0 && p[4] > 0 && p[5] & 0x80 != 0;
        if afc & 1 != 0 {
            if let Some(last) = self.continuity.get(&pid)
                && !discontinuity
                && cc != (last + 1) & 0x0f
            {
                return Err(Invalid::Continuity { pid, offset, expected: (last + 1) & 0x0f, got: cc });
            }
            self.continuity.insert(pid, cc);
            let start = if afc & 2 != 0 { 5 + usize::from(p[4]) } else { 4 };
            // A video PES starts here: one frame.
            if p[1] & 0x40 != 0
                && let Some(pes) = p.get(start..start + 4)
                && pes[..3] == [0, 0, 1]
                && (0xe0..=0xef).contains(&pes[3])
            {
                self.video_frames += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A packet on `pid` with payload; a keyframe PES start when `pts` is given.
    pub(crate) fn packet(pid: u16, cc: u8, pts: Option<u64>) -> Vec<u8> {
        let header = pts.map(|t| pes_header(t, None)).unwrap_or_default();
        ts_packet(pid, cc, pts.is_some(), pts.is_some(), &header)
    }

    /// A packet on `pid` whose payload begins with `payload` (the rest is 0xff),
    /// starting a payload unit when `start`, with an adaptation field that sets
    /// the random access indicator when `rai`.
    pub(crate) fn ts_packet(pid: u16, cc: u8, start: bool, rai: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0xffu8; PACKET];
        p[0] = SYNC;
        p[1] = ((pid >> 8) as u8 & 0x1f) | if start { 0x40 } else { 0 };
        p[2] = pid as u8;
        let at = if rai {
            p[3] = 0x30 | cc;
            p[4] = 1;
            p[5] = 0x40;
            6
        } else {
            p[3] = 0x10 | cc;
            4
        };
        let n = payload.len().min(PACKET - at);
        p[at..at + n].copy_from_slice(&payload[..n]);
        p
    }

    /// A video PES header with `pts`, and `dts` when given.
    pub(crate) fn pes_header(pts: u64, dts: Option<u64>) -> Vec<u8> {
        let stamp = |prefix: u8, t: u64| {
            [
                (prefix << 4) | (((t >> 30) as u8 & 7) << 1) | 1,
                (t >> 22) as u8,
                (t >> 14) as u8 | 1,
                (t >> 7) as u8,
                (t << 1) as u8 | 1,
            ]
        };
        let mut h = vec![0, 0, 1, 0xe0, 0, 0, 0x80];
        match dts {
            Some(d) => {
                h.extend([0xc0, 10]);
                h.extend(stamp(3, pts));
                h.extend(stamp(1, d));
            }
            None => {
                h.extend([0x80, 5]);
                h.extend(stamp(2, pts));
            }
        }
        h
    }

    /// A valid stream of `frames` video frames, one packet each, whose payload
    /// carries `tag` (to tell attempts apart), as a chunk's encode would be.
    pub(crate) fn stream(frames: u64, tag: &[u8]) -> Vec<u8> {
        (0..frames.max(1))
            .flat_map(|i| {
                let mut p = packet(256, (i % 16) as u8, Some(i * 3600));
                let n = tag.len().min(PACKET - 30);
                p[PACKET - n..].copy_from_slice(&tag[..n]);
                p
            })
            .collect()
    }

    #[test]
    fn verifier_counts_frames_and_catches_damage() {
        let mut s = packet(0, 0, None);
        for (cc, pts) in [(0, Some(0)), (1, None), (2, Some(3600)), (3, Some(7200))] {
            s.extend(packet(256, cc, pts));
        }
        // Whole, in odd pieces.
        let mut v = Verifier::default();
        for piece in s.chunks(100) {
            v.feed(piece).unwrap();
        }
        assert_eq!(v.video_frames(), 3);
        assert_eq!(v.finish(Some(3)), Ok(()));
        assert_eq!(v.finish(Some(4)), Err(Invalid::Frames { expected: 4, got: 3 }));
        // Cut inside a packet.
        let mut v = Verifier::default();
        v.feed(&s[..s.len() - 10]).unwrap();
        assert_eq!(v.finish(None), Err(Invalid::Partial { bytes: PACKET - 10 }));
        // A packet missing.
        let mut gap = s.clone();
        gap.drain(2 * PACKET..3 * PACKET);
        assert_eq!(
            Verifier::default().feed(&gap),
            Err(Invalid::Continuity { pid: 256, offset: 2 * PACKET as u64, expected: 1, got: 2 })
        );
        // A byte flipped where a packet starts.
        let mut flipped = s.clone();
        flipped[3 * PACKET] ^= 0xff;
        assert_eq!(Verifier::default().feed(&flipped), Err(Invalid::Sync { offset: 3 * PACKET as u64 }));
    }

    #[test]
    fn finds_keyframes_and_their_timestamps() {
        let mut s = packet(0, 0, None);
        s.extend(packet(256, 0, Some(126_000)));
        s.extend(packet(256, 1, None));
        s.extend(packet(256, 2, Some(8_589_934_591)));
        s.extend(&[0x47, 0, 0]); // a partial packet is not looked at
        let k = keyframes(&s, 0);
        assert_eq!(k, [Keyframe { offset: 188, pts: 126_000 }, Keyframe { offset: 564, pts: 8_589_934_591 }]);
        assert_eq!(keyframes(&s, 376).len(), 1);
    }

    #[test]
    fn continuity_runs_on_across_joins() {
        let mut c = Continuity::default();
        let mut a: Vec<u8> = [packet(0, 0, None), packet(256, 0, Some(0)), packet(256, 1, None)].concat();
        c.fix(&mut a);
        let mut b: Vec<u8> = [packet(0, 0, None), packet(256, 0, Some(9000))].concat();
        c.fix(&mut b);
        let cc = |p: &[u8]| p[3] & 0x0f;
        assert_eq!((cc(&b[..188]), cc(&b[188..])), (1, 2));
    }
}
