//! The WebSocket frame tracker on arbitrary bytes in arbitrary chunks:
//! never panics, and stopping at boundaries agrees with feeding straight
//! through. Run: `cd proxy/fuzz && cargo fuzz run frame_tracker`.
#![no_main]

use cutover_proxy::longlived::frames::FrameTracker;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);

    let mut straight = FrameTracker::new();
    let straight_ok = stream.chunks(chunk).all(|piece| straight.feed(piece).is_ok());

    let mut stepping = FrameTracker::new();
    let mut ok = true;
    'outer: for piece in stream.chunks(chunk) {
        let mut piece = piece;
        while !piece.is_empty() {
            match stepping.feed_to_boundary(piece) {
                Ok(0) => match stepping.feed(&piece[..1]) {
                    Ok(()) => piece = &piece[1..],
                    Err(_) => {
                        ok = false;
                        break 'outer;
                    }
                },
                Ok(n) => piece = &piece[n..],
                Err(_) => {
                    ok = false;
                    break 'outer;
                }
            }
        }
    }
    assert_eq!(ok, straight_ok);
    if ok {
        assert_eq!(stepping.frames(), straight.frames());
        assert_eq!(stepping.at_boundary(), straight.at_boundary());
        assert_eq!(stepping.close_seen(), straight.close_seen());
    }
});
