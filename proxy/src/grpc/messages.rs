//! gRPC message boundaries in a byte stream (the "Length-Prefixed-Message"
//! framing of the gRPC HTTP/2 protocol: a 1-byte compressed flag, a 4-byte
//! big-endian length, then that many bytes), so a call is only ever ended
//! between two messages: a client never sees half a message followed by
//! the proxy's status.
//!
//! The tracker reads prefixes only and counts payload bytes; it copies
//! nothing and allocates nothing, whatever the chunking.

/// The length prefix: compressed flag + 32-bit length.
const PREFIX: usize = 5;

/// Where a stream of messages is.
#[derive(Debug, Clone, Default)]
pub struct MessageTracker {
    /// Bytes of the current prefix seen so far (0 at a boundary).
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// Payload bytes of the current message still to come.
    remaining: u64,
    /// Complete messages seen.
    messages: u64,
}

impl MessageTracker {
    /// A tracker at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// True between two messages (nothing of a next one seen yet).
    pub fn at_boundary(&self) -> bool {
        self.prefix_len == 0 && self.remaining == 0
    }

    /// Complete messages seen so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Follows `data` through the framing.
    pub fn feed(&mut self, data: &[u8]) {
        let mut at = 0;
        while at < data.len() {
            at += self.step(&data[at..]);
        }
    }

    /// How many bytes of `data` belong to the message in flight: all of
    /// `data` when no message ends in it, else up to and including the
    /// end of the message in flight (0 at a boundary). The tracker follows
    /// only those bytes.
    pub fn to_boundary(&mut self, data: &[u8]) -> usize {
        let mut at = 0;
        while at < data.len() && !self.at_boundary() {
            at += self.step(&data[at..]);
        }
        at
    }

    /// Consumes the prefix or payload bytes at the start of `data`; how
    /// many (at least one when `data` is not empty).
    fn step(&mut self, data: &[u8]) -> usize {
        if self.remaining > 0 {
            let take = usize::try_from(self.remaining).map_or(data.len(), |r| r.min(data.len()));
            self.remaining -= take as u64;
            if self.remaining == 0 {
                self.messages += 1;
            }
            return take;
        }
        let take = (PREFIX - self.prefix_len).min(data.len());
        self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
        self.prefix_len += take;
        if self.prefix_len == PREFIX {
            self.prefix_len = 0;
            let len = u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]);
            self.remaining = u64::from(len);
            if self.remaining == 0 {
                self.messages += 1;
            }
        }
        take
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &[u8]) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        m.extend_from_slice(payload);
        m
    }

    #[test]
    fn boundaries_survive_any_chunking() {
        let mut stream = message(b"hello");
        stream.extend(message(b""));
        stream.extend(message(&[7; 300]));
        for chunk in 1..stream.len() {
            let mut t = MessageTracker::new();
            let mut boundaries = 0;
            for piece in stream.chunks(chunk) {
                t.feed(piece);
                boundaries += usize::from(t.at_boundary());
            }
            assert!(t.at_boundary(), "chunk size {chunk}");
            assert_eq!(t.messages(), 3, "chunk size {chunk}");
            assert!(boundaries >= 1);
        }
    }

    #[test]
    fn to_boundary_stops_after_the_message_in_flight() {
        let mut stream = message(b"abc");
        let first = stream.len();
        stream.extend(message(b"defg"));
        let mut t = MessageTracker::new();
        t.feed(&stream[..2]);
        assert!(!t.at_boundary());
        let n = t.to_boundary(&stream[2..]);
        assert_eq!(2 + n, first);
        assert!(t.at_boundary());
        assert_eq!(t.to_boundary(&stream[first..]), 0, "at a boundary nothing more belongs");
    }

    #[test]
    fn a_huge_length_is_only_counted() {
        let mut t = MessageTracker::new();
        t.feed(&[1, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
        assert!(!t.at_boundary());
        assert_eq!(t.to_boundary(&[0; 16]), 16);
        assert_eq!(t.messages(), 0);
    }
}
