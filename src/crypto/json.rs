//! Strict JSON for JOSE headers and JWT claims sets.
//!
//! RFC 7515 section 5.2 step 3 and RFC 7519 section 7.2 step 8: the decoded header and
//! payload must be UTF-8 (RFC 8259 section 8.1) JSON objects; RFC 7515 section 4 and RFC 7519
//! section 4: duplicate member names are refused (we refuse rather than pick one, as RFC 8725
//! section 3.9 recommends for anything two parsers could read differently). serde_json on its
//! own keeps the last of two duplicate members and, when it skips a member it was not asked
//! for, checks neither its UTF-8 nor its escapes; here every byte of the object is read.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

pub type JsonObject = Map<String, Value>;

/// Why bytes are not a strict JSON object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("is not valid UTF-8 (RFC 8259 section 8.1)")]
    Utf8,
    #[error("is not a JSON object")]
    NotObject,
    #[error("has the member '{0}' twice")]
    Duplicate(String),
    #[error("is not valid JSON ({0})")]
    Syntax(String),
}

/// Parse `bytes` as one JSON object: valid UTF-8 throughout, no duplicate member names at any
/// depth, no lone surrogate escapes, nothing after the closing brace.
pub fn parse_object(bytes: &[u8]) -> Result<JsonObject, JsonError> {
    let text = std::str::from_utf8(bytes).map_err(|_| JsonError::Utf8)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictValue::deserialize(&mut de).map_err(classify)?;
    de.end().map_err(classify)?;
    match value.0 {
        Value::Object(map) => Ok(map),
        _ => Err(JsonError::NotObject),
    }
}

fn classify(e: serde_json::Error) -> JsonError {
    let text = e.to_string();
    if let Some(name) = text.strip_prefix(DUPLICATE_PREFIX) {
        // serde appends " at line L column C"; keep only the member name.
        let name = name.split(DUPLICATE_SUFFIX).next().unwrap_or_default();
        return JsonError::Duplicate(name.to_string());
    }
    let what = match e.classify() {
        serde_json::error::Category::Eof => "truncated",
        _ if text.contains("escape") => "invalid string escape, such as a lone surrogate",
        _ if text.contains("unicode code point") => "invalid unicode code point",
        _ => "syntax error",
    };
    JsonError::Syntax(format!("{what} at column {}", e.column()))
}

const DUPLICATE_PREFIX: &str = "duplicate member \u{1}";
const DUPLICATE_SUFFIX: &str = "\u{1}";

/// A `serde_json::Value` whose deserializer refuses duplicate object members, recursively.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<StrictValue, E> {
        serde_json::Number::from_f64(v)
            .map(|n| StrictValue(Value::Number(n)))
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }
    fn visit_none<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictValue, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(StrictValue(Value::Array(out)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictValue, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let shown: String = key.chars().filter(|c| !c.is_control()).take(64).collect();
                return Err(de::Error::custom(format!("{DUPLICATE_PREFIX}{shown}{DUPLICATE_SUFFIX}")));
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(StrictValue(Value::Object(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_objects_with_nesting() {
        let o = parse_object(br#"{"a":1,"b":{"c":[1,"x",null,true,1.5]},"d":"\u00e9"}"#).expect("valid");
        assert_eq!(o["b"]["c"][1], "x");
        assert_eq!(o["d"], "\u{e9}");
    }

    /// RFC 7515 section 4 / RFC 7519 section 4: duplicate names refused, at any depth.
    #[test]
    fn refuses_duplicates_at_any_depth() {
        assert_eq!(parse_object(br#"{"a":1,"a":2}"#), Err(JsonError::Duplicate("a".into())));
        assert_eq!(parse_object(br#"{"x":{"b":1,"b":1}}"#), Err(JsonError::Duplicate("b".into())));
        assert_eq!(parse_object(br#"{"x":[{"c":1,"c":2}]}"#), Err(JsonError::Duplicate("c".into())));
        // Escaped and unescaped spellings of one name are one name.
        assert_eq!(parse_object(br#"{"iss":1,"\u0069ss":2}"#), Err(JsonError::Duplicate("iss".into())));
    }

    /// RFC 8259 section 8.1 and RFC 7515 section 5.2 step 3: invalid UTF-8 anywhere is refused,
    /// including inside members nobody reads.
    #[test]
    fn refuses_invalid_utf8_everywhere() {
        let cases: [&[u8]; 6] = [
            b"{\"x\":\"\xff\"}",             // not UTF-8 at all
            b"{\"x\":\"\xc0\xaf\"}",         // overlong encoding of '/'
            b"{\"x\":\"\x80\"}",             // lone continuation byte
            b"{\"x\":\"\xed\xa0\x80\"}",     // an encoded surrogate (CESU-8)
            b"{\"x\":\"\xf4\x90\x80\x80\"}", // beyond U+10FFFF
            b"{\"\xe2\x82\":1}",             // truncated sequence in a name
        ];
        for c in cases {
            assert_eq!(parse_object(c), Err(JsonError::Utf8), "{c:?}");
        }
    }

    #[test]
    fn refuses_lone_surrogate_escapes_and_trailing_data() {
        assert!(matches!(parse_object(br#"{"x":"\ud800"}"#), Err(JsonError::Syntax(_))));
        assert!(matches!(parse_object(br#"{"x":"\udc00\ud800"}"#), Err(JsonError::Syntax(_))));
        assert!(parse_object(br#"{"x":"\ud83d\ude00"}"#).is_ok(), "a proper pair is fine");
        assert!(matches!(parse_object(br#"{"x":1} {}"#), Err(JsonError::Syntax(_))));
        assert!(matches!(parse_object(br#"{"x":1"#), Err(JsonError::Syntax(_))));
    }

    #[test]
    fn refuses_non_objects() {
        for c in [&b"[]"[..], b"1", b"\"s\"", b"null"] {
            assert_eq!(parse_object(c), Err(JsonError::NotObject));
        }
    }
}
