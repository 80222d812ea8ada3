//! The SSE event tracker and chunked decoder on arbitrary bytes: never
//! panic, and chunking never changes the result.
//! Run: `cd proxy/fuzz && cargo fuzz run event_tracker`.
#![no_main]

use cutover_proxy::longlived::events::{ChunkedDecoder, EventTracker};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);

    let mut whole = EventTracker::new();
    whole.feed(stream);
    let mut pieces = EventTracker::new();
    for piece in stream.chunks(chunk) {
        pieces.feed(piece);
    }
    assert_eq!(whole.events(), pieces.events());
    assert_eq!(whole.at_boundary(), pieces.at_boundary());

    let (mut a, mut b) = (ChunkedDecoder::new(), ChunkedDecoder::new());
    let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
    let ok_a = a.decode(stream, &mut out_a).is_ok();
    let ok_b = stream.chunks(chunk).all(|p| b.decode(p, &mut out_b).is_ok());
    assert_eq!(ok_a, ok_b);
    if ok_a {
        assert_eq!(out_a, out_b);
    }
});
