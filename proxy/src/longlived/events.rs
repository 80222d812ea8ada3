//! Server-Sent Events boundaries, and the chunked decoding needed to see
//! them in an HTTP/1.1 body.

/// Tracks where SSE events end in a `text/event-stream` body: after a
/// blank line, whatever the line endings (`\n\n`, `\r\n\r\n`, `\r\r`).
#[derive(Debug, Clone)]
pub struct EventTracker {
    /// The last byte ended a line (the next terminator makes a blank line).
    line_start: bool,
    /// The last byte was `\r` (a following `\n` belongs to it).
    after_cr: bool,
    /// Between events.
    boundary: bool,
    events: u64,
}

impl Default for EventTracker {
    fn default() -> Self {
        Self {
            line_start: true,
            after_cr: false,
            boundary: true,
            events: 0,
        }
    }
}

impl EventTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// True between events (and before the first one).
    pub fn at_boundary(&self) -> bool {
        self.boundary
    }

    /// Events completed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Advances over all of `data`.
    pub fn feed(&mut self, data: &[u8]) {
        for &b in data {
            self.step(b);
        }
    }

    /// Advances over `data` up to the end of the first event that ends in
    /// it (or not at all if already at a boundary). Returns the bytes
    /// consumed; `data[..n]` ends between two events when
    /// [`EventTracker::at_boundary`] is true afterwards.
    pub fn feed_to_boundary(&mut self, data: &[u8]) -> usize {
        if self.boundary {
            return 0;
        }
        for (i, &b) in data.iter().enumerate() {
            self.step(b);
            if self.boundary {
                // A `\r\n` terminator stays whole.
                let crlf = self.after_cr && data.get(i + 1) == Some(&b'\n');
                if crlf {
                    self.step(b'\n');
                    return i + 2;
                }
                return i + 1;
            }
        }
        data.len()
    }

    fn step(&mut self, b: u8) {
        match b {
            b'\n' if self.after_cr => self.after_cr = false, // the rest of `\r\n`
            b'\n' | b'\r' => {
                if self.line_start && !self.boundary {
                    self.boundary = true;
                    self.events += 1;
                }
                self.line_start = true;
                self.after_cr = b == b'\r';
            }
            _ => {
                self.line_start = false;
                self.after_cr = false;
                self.boundary = false;
            }
        }
    }
}

/// An incremental decoder of HTTP/1.1 chunked transfer coding.
#[derive(Debug, Clone, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// The size line being read.
    line: Vec<u8>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk, until an empty one.
    Trailers,
    Done,
}

/// A malformed chunked body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body from the backend")]
pub struct ChunkError;

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// True once the last chunk and its trailers were read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes `input`, appending payload bytes to `out`.
    pub fn decode(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), ChunkError> {
        while !input.is_empty() {
            match self.state {
                ChunkState::Done => return Ok(()),
                ChunkState::Data(left) => {
                    let take = left.min(input.len() as u64) as usize;
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    self.state = match left - take as u64 {
                        0 => ChunkState::DataEnd,
                        left => ChunkState::Data(left),
                    };
                }
                ChunkState::DataEnd => {
                    // Exactly CRLF after the chunk's data.
                    match input[0] {
                        b'\r' if self.line.is_empty() => self.line.push(b'\r'),
                        b'\n' if self.line == b"\r" => {
                            self.line.clear();
                            self.state = ChunkState::Size;
                        }
                        _ => return Err(ChunkError),
                    }
                    input = &input[1..];
                }
                ChunkState::Size | ChunkState::Trailers => {
                    let Some(end) = input.iter().position(|b| *b == b'\n') else {
                        self.push_line(input)?;
                        return Ok(());
                    };
                    self.push_line(&input[..end])?;
                    input = &input[end + 1..];
                    let line = std::mem::take(&mut self.line);
                    // Lines end in CRLF; a bare LF is a framing error.
                    let line = line.strip_suffix(b"\r").ok_or(ChunkError)?;
                    self.state = match self.state {
                        ChunkState::Trailers if line.is_empty() => ChunkState::Done,
                        ChunkState::Trailers => ChunkState::Trailers,
                        _ => match parse_size(line)? {
                            0 => ChunkState::Trailers,
                            n => ChunkState::Data(n),
                        },
                    };
                }
            }
        }
        Ok(())
    }

    fn push_line(&mut self, bytes: &[u8]) -> Result<(), ChunkError> {
        if self.line.len() + bytes.len() > 4096 {
            return Err(ChunkError);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }
}

/// A chunk-size line: `1*HEXDIG [ BWS ";" chunk-ext ]` (RFC 9112 §7.1).
/// No sign, no `0x`, no whitespace around the digits except the BWS
/// before an extension, at most 16 digits: anything else is how request
/// smuggling starts, so it is an error rather than a guess.
pub fn parse_size(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = match line.iter().position(|b| *b == b';') {
        Some(semi) => {
            let before = &line[..semi];
            let end = before
                .iter()
                .rposition(|b| !matches!(b, b' ' | b'\t'))
                .map_or(0, |i| i + 1);
            &before[..end]
        }
        None => line,
    };
    if digits.is_empty() || digits.len() > 16 {
        return Err(ChunkError);
    }
    digits.iter().try_fold(0u64, |size, &b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return Err(ChunkError),
        };
        size.checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(digit)))
            .ok_or(ChunkError)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_end_at_blank_lines_with_any_line_ending() {
        for (stream, events) in [
            (&b"data: a\n\ndata: b\n\n"[..], 2),
            (b"data: a\r\n\r\ndata: b\r\n\r\n", 2),
            (b"data: a\r\rdata: b\r\r", 2),
            (b"event: x\ndata: a\ndata: b\n\n: comment\n\n", 2),
            (b"data: a\ndata: b\n", 0),
        ] {
            for chunk in 1..=stream.len() {
                let mut t = EventTracker::new();
                for piece in stream.chunks(chunk) {
                    t.feed(piece);
                }
                assert_eq!(
                    t.events(),
                    events,
                    "{:?} in chunks of {chunk}",
                    String::from_utf8_lossy(stream)
                );
                assert_eq!(t.at_boundary(), events > 0 || stream.is_empty());
            }
        }
    }

    #[test]
    fn stops_after_the_event_in_flight_keeping_crlf_whole() {
        let mut t = EventTracker::new();
        t.feed(b"data: one");
        assert!(!t.at_boundary());
        let rest = b"\r\n\r\ndata: two\r\n\r\n";
        let n = t.feed_to_boundary(rest);
        assert_eq!(&rest[..n], b"\r\n\r\n");
        assert!(t.at_boundary());
        assert_eq!(t.feed_to_boundary(b"data: three"), 0, "already between events");
    }

    #[test]
    fn chunked_bodies_decode_in_any_split() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n";
        for split in 1..wire.len() {
            let mut d = ChunkedDecoder::new();
            let mut out = Vec::new();
            for piece in wire.chunks(split) {
                d.decode(piece, &mut out).unwrap();
            }
            assert_eq!(out, b"hello, world", "split {split}");
            assert!(d.is_done());
        }
    }

    #[test]
    fn malformed_chunks_are_errors() {
        let mut out = Vec::new();
        assert!(ChunkedDecoder::new().decode(b"zz\r\n", &mut out).is_err());
        assert!(ChunkedDecoder::new().decode(b"2\r\nabXY", &mut out).is_err());
    }

    #[test]
    fn chunk_sizes_are_bare_hex_digits() {
        for good in [&b"5"[..], b"0005", b"aB", b"5;ext=1", b"5 ;ext", b"ffffffffffffffff"] {
            assert!(parse_size(good).is_ok(), "{:?}", String::from_utf8_lossy(good));
        }
        assert_eq!(parse_size(b"1f;x"), Ok(31));
        for bad in [
            &b""[..],
            b"+5",
            b"-5",
            b" 5",
            b"5 ",
            b"\t5",
            b"0x5",
            b"5 5",
            b";ext",
            b"00000000000000005", // 17 digits
            b"10000000000000000",
            b"5\r",
        ] {
            assert_eq!(parse_size(bad), Err(ChunkError), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn signed_or_padded_sizes_and_bare_lf_break_the_body() {
        for wire in [
            &b"+5\r\nhello\r\n0\r\n\r\n"[..],
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\n",
        ] {
            let mut out = Vec::new();
            assert!(
                ChunkedDecoder::new().decode(wire, &mut out).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }
}
