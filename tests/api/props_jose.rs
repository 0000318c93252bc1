//! Property tests of base64url as JWS uses it (RFC 7515 section 2: no padding; RFC 4648
//! section 3.5: canonical encoding), `crypto::b64url_decode`, and of the JWS compact parser
//! built on it.
//!
//! * Total: any text decodes to bytes or to an error, never a panic.
//! * Strict: text decodes only if it is exactly the canonical unpadded encoding of what it
//!   decodes to (no padding, no stray low bits, nothing outside the alphabet), so two
//!   different texts never decode to the same bytes; and every byte string round-trips.
//! * In a JWS, a header or payload part that is not canonical is refused by name.

use agent_sts::crypto::{b64url_decode, b64url_encode, CompactError, CompactJws};
use proptest::prelude::*;

const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn config() -> ProptestConfig {
    ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() }
}

/// The canonical encoding of `bytes` made non-canonical: stray low bits in the last
/// character, padding, or a character from outside the alphabet (standard base64's, a space,
/// a newline, non-ASCII).
fn spoil(bytes: &[u8], how: u8, at: usize) -> Option<String> {
    let good = b64url_encode(bytes);
    let mut s = good.clone();
    match how % 4 {
        0 => {
            // 1 or 2 trailing bytes leave 4 or 2 unused bits in the last character.
            let unused = match bytes.len() % 3 {
                1 => 4,
                2 => 2,
                _ => return None,
            };
            let last = s.pop()?;
            let i = ALPHABET.find(last)?;
            let bit = 1 << (at % unused);
            s.push(ALPHABET.as_bytes()[i ^ bit] as char);
        }
        1 => s.push_str(&"=".repeat(1 + at % 2)),
        2 => {
            let outside = ['+', '/', ' ', '\n', '.', 'é'][at % 6];
            s.insert(at % (s.len() + 1), outside);
        }
        _ => {
            // A length no encoding has (4k + 1).
            if s.len() % 4 == 1 {
                return None;
            }
            while s.len() % 4 != 1 {
                s.push('A');
            }
        }
    }
    (s != good).then_some(s)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn decoding_is_total_and_only_canonical_text_decodes(text in "[A-Za-z0-9_=+/ .-]{0,24}|\\PC{0,8}") {
        if let Ok(bytes) = b64url_decode(&text) {
            prop_assert_eq!(b64url_encode(&bytes), text);
        }
    }

    #[test]
    fn every_byte_string_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(b64url_decode(&b64url_encode(&bytes)).expect("decodes"), bytes);
    }

    #[test]
    fn non_canonical_text_is_refused(bytes in proptest::collection::vec(any::<u8>(), 1..48), how in any::<u8>(), at in any::<usize>()) {
        if let Some(s) = spoil(&bytes, how, at) {
            prop_assert!(b64url_decode(&s).is_err(), "{:?} decoded", s);
        }
    }

    /// RFC 7515 section 7.1 with section 2's base64url: a spoiled header or payload part.
    #[test]
    fn a_jws_with_a_non_canonical_part_is_refused(how in any::<u8>(), at in any::<usize>(), payload_part in any::<bool>(), pad in 0usize..3) {
        let header = format!(r#"{{"alg":"ES256","typ":"JWT"{}}}"#, " ".repeat(pad));
        let payload = format!(r#"{{"iss":"bot"{}}}"#, " ".repeat(pad));
        let (h, p) = (b64url_encode(header.as_bytes()), b64url_encode(payload.as_bytes()));
        let spoiled = spoil(if payload_part { payload.as_bytes() } else { header.as_bytes() }, how, at);
        if let Some(s) = spoiled {
            if s.contains('.') {
                return Ok(());
            }
            let token = if payload_part { format!("{h}.{s}.c2ln") } else { format!("{s}.{p}.c2ln") };
            let e = CompactJws::parse(&token, 8192).expect_err(&token);
            prop_assert_eq!(e, CompactError::Base64(if payload_part { "payload" } else { "header" }));
        }
    }
}
