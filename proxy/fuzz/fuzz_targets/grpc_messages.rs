//! The gRPC message tracker on arbitrary backend bytes in arbitrary
//! chunks: never panics, and stopping at message boundaries agrees with
//! feeding straight through. Run: `cd proxy/fuzz && cargo fuzz run
//! grpc_messages`.
#![no_main]

use cutover_proxy::grpc::messages::MessageTracker;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);

    let mut straight = MessageTracker::new();
    for piece in stream.chunks(chunk) {
        straight.feed(piece);
    }

    let mut stepping = MessageTracker::new();
    for piece in stream.chunks(chunk) {
        let mut piece = piece;
        while !piece.is_empty() {
            match stepping.to_boundary(piece) {
                // At a boundary: one byte of the next message.
                0 => {
                    stepping.feed(&piece[..1]);
                    piece = &piece[1..];
                }
                n => {
                    assert!(n <= piece.len());
                    assert!(stepping.at_boundary() || n == piece.len(), "stopped inside a message");
                    piece = &piece[n..];
                }
            }
        }
    }
    assert_eq!(stepping.messages(), straight.messages());
    assert_eq!(stepping.at_boundary(), straight.at_boundary());
});
