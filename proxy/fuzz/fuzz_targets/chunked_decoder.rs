//! The chunked-body decoder on arbitrary bytes: never panics, chunking the
//! input never changes the result, it never yields more payload than it was
//! given, and any body encoded in chunks of any size decodes back to itself.
//! Input: byte 0 is how the stream is cut into reads, byte 1 the chunk size
//! used to encode the rest for the round trip.
//! Run: `.ci/fuzz` (every target), or `cd proxy/fuzz && cargo fuzz run chunked_decoder`.
#![no_main]

use std::io::Write;

use cutover_proxy::longlived::events::ChunkedDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [read, chunk, body @ ..] = data else { return };
    let read = usize::from(*read).max(1);
    let chunk = usize::from(*chunk).max(1);

    // Arbitrary bytes as a body: whole or in pieces, the same outcome.
    let (mut whole, mut pieces) = (ChunkedDecoder::new(), ChunkedDecoder::new());
    let (mut out_whole, mut out_pieces) = (Vec::new(), Vec::new());
    let ok_whole = whole.decode(body, &mut out_whole).is_ok();
    // Strict sizes: a size line the decoder took is bare hex (no sign, no
    // padding, no 0x), at most 16 digits (request smuggling starts there).
    if let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let line = &body[..line_end];
        let digits = line.split(|b| *b == b';').next().unwrap_or(b"");
        let digits = if line.contains(&b';') { digits.trim_ascii_end() } else { digits };
        if cutover_proxy::longlived::events::parse_size(line).is_ok() {
            assert!(
                !digits.is_empty() && digits.len() <= 16 && digits.iter().all(u8::is_ascii_hexdigit),
                "size line {line:?} accepted"
            );
        }
    }
    let ok_pieces = body.chunks(read).all(|p| pieces.decode(p, &mut out_pieces).is_ok());
    assert_eq!(ok_whole, ok_pieces);
    if ok_whole {
        assert_eq!(out_whole, out_pieces);
        assert_eq!(whole.is_done(), pieces.is_done());
        assert!(out_whole.len() <= body.len());
    }

    // The body encoded as a backend would send it decodes back to itself.
    let mut encoded = Vec::new();
    for piece in body.chunks(chunk) {
        write!(encoded, "{:x}\r\n", piece.len()).unwrap();
        encoded.extend_from_slice(piece);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(b"0\r\n\r\n");
    let mut decoder = ChunkedDecoder::new();
    let mut out = Vec::new();
    for piece in encoded.chunks(read) {
        decoder.decode(piece, &mut out).expect("a well-formed chunked body decodes");
    }
    assert!(decoder.is_done(), "the last chunk ends the body");
    assert_eq!(out, body);
});
