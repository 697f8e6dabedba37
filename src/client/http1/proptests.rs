//! The response-head parser fed what a broken or hostile server could send: arbitrary bytes,
//! heads cut anywhere, Content-Length repeated or conflicting. It must never panic, never
//! claim more bytes than it was given, and never accept a length other than the one announced.

use super::parse_head;
use proptest::prelude::*;

/// A response head with the given Content-Length values (each one header line), some filler
/// headers, and a few body bytes after it.
fn head(lengths: &[u64], filler: &[(String, String)]) -> Vec<u8> {
    let mut out = b"HTTP/1.1 206 Partial Content\r\n".to_vec();
    for (name, value) in filler {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    for length in lengths {
        out.extend_from_slice(format!("Content-Length: {length}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\nbody bytes");
    out
}

fn filler() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(("X-[A-Za-z]{1,8}", "[ -~]{0,20}"), 0..4)
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_nor_overrun(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(Some((_, length))) = parse_head(&bytes) {
            prop_assert!(length <= bytes.len());
        }
    }

    #[test]
    fn arbitrary_text_after_a_status_line_never_panics(rest in "[ -~\r\n]{0,300}") {
        let bytes = format!("HTTP/1.1 200 OK\r\n{rest}");
        if let Ok(Some((_, length))) = parse_head(bytes.as_bytes()) {
            prop_assert!(length <= bytes.len());
        }
    }

    #[test]
    fn the_length_announced_is_the_length_taken(length in any::<u64>(), filler in filler()) {
        let message = head(&[length], &filler);
        let (parsed, end) = parse_head(&message).unwrap().unwrap();
        prop_assert_eq!(parsed.content_length, Some(length));
        prop_assert_eq!(&message[end..], b"body bytes");
    }

    #[test]
    fn a_head_cut_anywhere_is_never_complete(length in any::<u64>(), filler in filler(), cut in any::<prop::sample::Index>()) {
        let message = head(&[length], &filler);
        let end = message.len() - b"body bytes".len();
        let cut = cut.index(end);
        // Short of its blank line, a head is incomplete (or malformed), never a response.
        prop_assert!(!matches!(parse_head(&message[..cut]), Ok(Some(_))));
    }

    #[test]
    fn repeated_lengths_must_agree(lengths in prop::collection::vec(0u64..1_000, 2..5), filler in filler()) {
        let message = head(&lengths, &filler);
        let agree = lengths.iter().all(|&l| l == lengths[0]);
        match parse_head(&message) {
            Ok(Some((parsed, _))) => {
                prop_assert!(agree, "conflicting lengths {:?} accepted", lengths);
                prop_assert_eq!(parsed.content_length, Some(lengths[0]));
            }
            Ok(None) => prop_assert!(false, "a complete head reported as partial"),
            Err(_) => prop_assert!(!agree, "agreeing lengths {:?} refused", lengths),
        }
    }
}
