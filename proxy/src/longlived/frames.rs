//! An incremental WebSocket frame-boundary tracker (RFC 6455 §5.2) for one
//! direction of a byte stream.
//!
//! It reads only frame headers and skips payloads by count, so it never
//! copies or unmasks data; any chunking of the stream works. It is what lets
//! the proxy put its own close frame between two frames without corrupting
//! the stream. Control frames between the fragments of a message are frame
//! boundaries like any other (RFC 6455 §5.4 allows a close there).

/// Longest possible header: 2 + 8 (64-bit length) + 4 (mask key).
const MAX_HEADER: usize = 14;

/// A frame the peer sent that cannot be valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a 64-bit frame length with its top bit set")]
    LengthOverflow,
    #[error("a control frame longer than 125 bytes or fragmented")]
    BadControlFrame,
}

/// Tracks where frames start and end in one direction.
#[derive(Debug, Clone, Default)]
pub struct FrameTracker {
    header: [u8; MAX_HEADER],
    /// Header bytes collected so far (0 at a boundary).
    have: usize,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// True between a complete header and the end of its payload.
    in_payload: bool,
    /// A close frame has started in this direction.
    close_seen: bool,
    /// Frames completed so far.
    frames: u64,
}

impl FrameTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// True between frames: the next byte starts a new frame.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && !self.in_payload
    }

    /// True once a close frame began in this direction: the peer closes
    /// on its own, so the proxy must not add a close frame of its own.
    pub fn close_seen(&self) -> bool {
        self.close_seen
    }

    /// Frames completed so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Advances over all of `data`.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), FrameError> {
        self.advance(data, false).map(|_| ())
    }

    /// Advances over `data` but stops at the first frame boundary (which
    /// may be right at the start). Returns how many bytes it consumed:
    /// `data[..n]` ends exactly at a boundary when `n < data.len()` or when
    /// [`FrameTracker::at_boundary`] is true afterwards.
    pub fn feed_to_boundary(&mut self, data: &[u8]) -> Result<usize, FrameError> {
        self.advance(data, true)
    }

    fn advance(&mut self, data: &[u8], stop_at_boundary: bool) -> Result<usize, FrameError> {
        let mut at = 0;
        while at < data.len() {
            if stop_at_boundary && self.at_boundary() {
                return Ok(at);
            }
            if self.in_payload {
                let take = self.remaining.min((data.len() - at) as u64) as usize;
                at += take;
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.end_frame();
                }
                continue;
            }
            // Collect header bytes until the header is complete.
            self.header[self.have] = data[at];
            self.have += 1;
            at += 1;
            if let Some(payload) = self.header_complete()? {
                self.have = 0;
                self.remaining = payload;
                self.in_payload = payload > 0;
                if payload == 0 {
                    self.end_frame();
                }
            }
        }
        Ok(at)
    }

    /// `Some(payload length)` once the collected bytes form a whole header.
    fn header_complete(&mut self) -> Result<Option<u64>, FrameError> {
        if self.have < 2 {
            return Ok(None);
        }
        let masked = self.header[1] & 0x80 != 0;
        let len7 = self.header[1] & 0x7f;
        let ext = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let need = 2 + ext + if masked { 4 } else { 0 };
        if self.have < need {
            return Ok(None);
        }
        let payload = match ext {
            0 => u64::from(len7),
            2 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            _ => {
                let mut be = [0u8; 8];
                be.copy_from_slice(&self.header[2..10]);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(FrameError::LengthOverflow);
                }
                len
            }
        };
        let fin = self.header[0] & 0x80 != 0;
        let opcode = self.header[0] & 0x0f;
        if opcode >= 0x8 && (payload > 125 || !fin) {
            return Err(FrameError::BadControlFrame);
        }
        if opcode == 0x8 {
            self.close_seen = true;
        }
        Ok(Some(payload))
    }

    fn end_frame(&mut self) {
        self.in_payload = false;
        self.frames += 1;
    }
}

/// A close frame with `code` and a short `reason`; masked with `mask`
/// (client → server frames must be masked, server → client ones must not).
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason);
    let mut frame = vec![0x88, payload.len() as u8];
    if let Some(key) = mask {
        frame[1] |= 0x80;
        frame.extend_from_slice(&key);
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    frame.extend_from_slice(&payload);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame with `opcode`, `payload`, optional mask, and FIN.
    fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>, fin: bool) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n <= 0xffff => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if let Some(k) = mask {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        } else {
            f.extend_from_slice(payload);
        }
        f
    }

    fn stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend(frame(0x1, b"hello", None, true)); // 7-bit length
        s.extend(frame(0x2, &vec![7u8; 300], Some([1, 2, 3, 4]), true)); // 16-bit, masked
        s.extend(frame(0x1, b"frag-1", None, false)); // fragmented message...
        s.extend(frame(0x9, b"ping", None, true)); // ...with a control frame inside
        s.extend(frame(0x0, b"frag-2", None, true));
        s.extend(frame(0x2, &vec![1u8; 70_000], None, true)); // 64-bit length
        s.extend(frame(0xA, b"", Some([9, 9, 9, 9]), true)); // empty, masked
        s
    }

    #[test]
    fn counts_frames_in_any_chunking() {
        let s = stream();
        for chunk in [1, 2, 3, 7, 13, 1000, s.len()] {
            let mut t = FrameTracker::new();
            for piece in s.chunks(chunk) {
                t.feed(piece).unwrap();
            }
            assert_eq!(t.frames(), 7, "chunk size {chunk}");
            assert!(t.at_boundary(), "chunk size {chunk}");
            assert!(!t.close_seen());
        }
    }

    #[test]
    fn stops_exactly_at_each_boundary() {
        let s = stream();
        let mut t = FrameTracker::new();
        let mut offsets = Vec::new();
        let mut at = 0;
        // Start mid-frame: feed 3 bytes, then ask for the boundary.
        t.feed(&s[..3]).unwrap();
        at += 3;
        while at < s.len() {
            let n = t.feed_to_boundary(&s[at..]).unwrap();
            at += n;
            offsets.push(at);
            if at < s.len() {
                assert!(t.at_boundary());
                t.feed(&s[at..at + 1]).unwrap(); // step into the next frame
                at += 1;
            }
        }
        let first = frame(0x1, b"hello", None, true).len();
        assert_eq!(offsets[0], first, "the first stop is the end of the first frame");
        assert_eq!(*offsets.last().unwrap(), s.len());
        assert_eq!(t.frames(), 7);
    }

    #[test]
    fn at_a_boundary_consumes_nothing() {
        let mut t = FrameTracker::new();
        assert_eq!(t.feed_to_boundary(b"\x81\x01a").unwrap(), 0);
    }

    #[test]
    fn sees_a_close_from_the_peer() {
        let mut t = FrameTracker::new();
        t.feed(&frame(0x1, b"x", None, true)).unwrap();
        assert!(!t.close_seen());
        t.feed(&close_frame(1000, "bye", None)[..2]).unwrap();
        assert!(t.close_seen(), "as soon as the close header is seen");
    }

    #[test]
    fn close_frames_are_well_formed() {
        let f = close_frame(1012, "service restart", None);
        assert_eq!(&f[..4], &[0x88, 17, 0x03, 0xF4]);
        assert_eq!(&f[4..], b"service restart");
        let masked = close_frame(1001, "going away", Some([1, 2, 3, 4]));
        assert_eq!(masked[1], 0x80 | 12);
        let unmasked: Vec<u8> = masked[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4])
            .collect();
        assert_eq!(&unmasked[..2], &1001u16.to_be_bytes());
        let mut t = FrameTracker::new();
        t.feed(&masked).unwrap();
        assert!(t.at_boundary() && t.close_seen());
    }

    #[test]
    fn invalid_frames_are_errors() {
        let mut t = FrameTracker::new();
        let mut f = vec![0x82, 127];
        f.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(t.feed(&f), Err(FrameError::LengthOverflow));
        let mut t = FrameTracker::new();
        assert_eq!(
            t.feed(&[0x09, 0x01, 0x00]),
            Err(FrameError::BadControlFrame),
            "fragmented ping"
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// One frame: opcode, payload length, masked, final.
    fn frame_strategy() -> impl Strategy<Value = (u8, usize, bool, bool)> {
        prop_oneof![
            // Data frames of every length class.
            (
                prop_oneof![Just(0x0u8), Just(0x1), Just(0x2)],
                prop_oneof![0..126usize, 126..1000usize, 65_536..70_000usize],
                any::<bool>(),
                any::<bool>()
            ),
            // Control frames: short, final.
            (
                prop_oneof![Just(0x8u8), Just(0x9), Just(0xA)],
                0..126usize,
                any::<bool>(),
                Just(true)
            ),
        ]
    }

    fn encode(opcode: u8, len: usize, masked: bool, fin: bool) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let m = if masked { 0x80 } else { 0 };
        if len < 126 {
            f.push(m | len as u8);
        } else if len <= 0xffff {
            f.push(m | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(m | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        if masked {
            f.extend_from_slice(&[0xA, 0xB, 0xC, 0xD]);
        }
        f.extend(std::iter::repeat_n(0x5A, len));
        f
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random frame sequences cut into random chunks: stopping at every
        /// boundary finds exactly the offsets where frames end.
        #[test]
        fn boundaries_are_exactly_the_frame_ends(
            frames in prop::collection::vec(frame_strategy(), 1..12),
            cuts in prop::collection::vec(1usize..5000, 1..20),
        ) {
            let mut stream = Vec::new();
            let mut ends = Vec::new();
            let mut closes = 0;
            for (opcode, len, masked, fin) in &frames {
                stream.extend(encode(*opcode, *len, *masked, *fin));
                ends.push(stream.len());
                if *opcode == 0x8 { closes += 1; }
            }
            // Feed in random chunk sizes, stopping at each boundary.
            let mut tracker = FrameTracker::new();
            let mut found = Vec::new();
            let mut at = 0;
            let mut cut = cuts.iter().cycle();
            while at < stream.len() {
                let end = (at + cut.next().unwrap()).min(stream.len());
                let mut piece = &stream[at..end];
                while !piece.is_empty() {
                    if tracker.at_boundary() && at > 0 && found.last() != Some(&at) {
                        found.push(at);
                    }
                    let n = tracker.feed_to_boundary(piece).unwrap();
                    let n = if n == 0 {
                        // At a boundary: step into the next frame by one byte.
                        tracker.feed(&piece[..1]).unwrap();
                        1
                    } else { n };
                    at += n;
                    piece = &piece[n..];
                }
            }
            if tracker.at_boundary() { found.push(at); }
            prop_assert_eq!(found, ends);
            prop_assert_eq!(tracker.frames(), frames.len() as u64);
            prop_assert_eq!(tracker.close_seen(), closes > 0);
        }
    }
}
