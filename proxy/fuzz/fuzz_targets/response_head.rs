//! The takeover path's response-head parser on arbitrary bytes: never
//! panics; a complete head's length is within the input and at most
//! `MAX_HEAD`; the same bytes with anything appended parse to the same head
//! (the parser looks only at the head); a `Content-Length` it accepts is
//! bare decimal digits, the way `parse_content_length` defines it.
//! Run: `.ci/fuzz` (every target), or `cd proxy/fuzz && cargo fuzz run response_head`.
#![no_main]

use cutover_proxy::longlived::upstream::{parse_content_length, parse_response_head, BodyFraming, MAX_HEAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((head, framing, len))) = parse_response_head(data) else {
        return;
    };
    assert!(len <= data.len() && len <= MAX_HEAD, "head length {len} of {}", data.len());

    let mut longer = data.to_vec();
    longer.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\nmore bytes");
    let (again, framing_again, len_again) = parse_response_head(&longer)
        .expect("appending bytes after a complete head cannot make it an error")
        .expect("a complete head stays complete");
    assert_eq!(len, len_again);
    assert_eq!(framing, framing_again);
    assert_eq!(head.status, again.status);

    if let BodyFraming::Length(n) = framing {
        let lengths: Vec<_> = head
            .headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b',').map(<[u8]>::trim_ascii))
            .collect();
        assert!(!lengths.is_empty());
        for digits in lengths {
            assert!(digits.iter().all(u8::is_ascii_digit), "accepted length {digits:?}");
            assert_eq!(parse_content_length(digits), Some(n));
        }
    }
});
