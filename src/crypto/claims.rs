//! A JWT claims set (RFC 7519 section 4) checked for the registered claims this broker reads:
//! each, when present, is not `null` and has its type. Every other claim stays available,
//! unchecked, for policy predicates ([`Claims::get`]).

use super::json::JsonObject;
use serde_json::Value;

/// Why a claims set is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("claim '{0}' is null; a registered claim is either absent or has a value")]
    Null(&'static str),
    #[error("claim '{0}' must be {1}")]
    Type(&'static str, &'static str),
}

#[derive(Clone, Copy)]
enum Kind {
    String,
    /// RFC 7519 section 4.1.3: a string or an array of strings.
    Audience,
    /// RFC 7519 section 2: a JSON number of seconds, possibly fractional.
    NumericDate,
    Object,
}

/// The registered claims (RFC 7519 section 4.1, RFC 8693 section 4, RFC 9068 section 2.2)
/// that the broker reads, with their types.
const REGISTERED: [(&str, Kind); 12] = [
    ("iss", Kind::String),
    ("sub", Kind::String),
    ("aud", Kind::Audience),
    ("exp", Kind::NumericDate),
    ("nbf", Kind::NumericDate),
    ("iat", Kind::NumericDate),
    ("jti", Kind::String),
    ("client_id", Kind::String),
    ("scope", Kind::String),
    ("act", Kind::Object),
    ("may_act", Kind::Object),
    ("auth_time", Kind::NumericDate),
];

/// A claims set whose registered claims were checked at construction.
#[derive(Debug, Clone)]
pub struct Claims(JsonObject);

/// RFC 7519 section 2 NumericDate, floored to whole seconds; `None` outside +-10^15 s.
fn numeric_date(v: &Value) -> Option<i64> {
    let Value::Number(n) = v else { return None };
    if let Some(i) = n.as_i64() {
        return (i.unsigned_abs() < 1_000_000_000_000_000).then_some(i);
    }
    n.as_f64().filter(|f| f.is_finite() && f.abs() < 1e15).map(|f| f.floor() as i64)
}

impl Claims {
    pub fn from_object(map: JsonObject) -> Result<Claims, ClaimError> {
        for (name, kind) in REGISTERED {
            let Some(v) = map.get(name) else { continue };
            let (fits, expected) = match kind {
                _ if v.is_null() => return Err(ClaimError::Null(name)),
                Kind::String => (v.is_string(), "a string"),
                Kind::Audience => (
                    v.is_string() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
                    "a string or an array of strings",
                ),
                Kind::NumericDate => (numeric_date(v).is_some(), "a NumericDate (seconds since 1970)"),
                Kind::Object => (v.is_object(), "a JSON object"),
            };
            if !fits {
                return Err(ClaimError::Type(name, expected));
            }
        }
        Ok(Claims(map))
    }

    /// Any claim, as sent (registered ones already type-checked).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    pub fn as_object(&self) -> &JsonObject {
        &self.0
    }

    /// A string claim; `None` when absent or (for unregistered claims) not a string.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    pub fn iss(&self) -> Option<&str> {
        self.str("iss")
    }
    pub fn sub(&self) -> Option<&str> {
        self.str("sub")
    }
    pub fn jti(&self) -> Option<&str> {
        self.str("jti")
    }
    pub fn exp(&self) -> Option<i64> {
        self.0.get("exp").and_then(numeric_date)
    }
    pub fn nbf(&self) -> Option<i64> {
        self.0.get("nbf").and_then(numeric_date)
    }
    pub fn iat(&self) -> Option<i64> {
        self.0.get("iat").and_then(numeric_date)
    }

    /// Whether `aud` names exactly one audience and it is one of `accepted`: a string, or an
    /// array of exactly one string (draft-ietf-oauth-rfc7523bis: an audience value that also
    /// names another party could be replayed to that party, or came from one).
    pub fn aud_is_exactly_one_of(&self, accepted: &[&str]) -> bool {
        let one = match self.0.get("aud") {
            Some(Value::String(a)) => a.as_str(),
            Some(Value::Array(list)) if list.len() == 1 => list[0].as_str().unwrap_or_default(),
            _ => return false,
        };
        accepted.contains(&one)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::json::parse_object;

    fn claims(text: &str) -> Result<Claims, ClaimError> {
        Claims::from_object(parse_object(text.as_bytes()).expect("json"))
    }

    #[test]
    fn reads_registered_claims() {
        let c = claims(r#"{"iss":"a","exp":1700000000.9,"iat":1700000000,"aud":["x"],"repo":"r"}"#)
            .expect("valid");
        assert_eq!(c.iss(), Some("a"));
        assert_eq!(c.exp(), Some(1_700_000_000));
        assert_eq!(c.iat(), Some(1_700_000_000));
        assert!(c.aud_is_exactly_one_of(&["x"]));
        assert_eq!(c.str("repo"), Some("r"));
    }

    /// RFC 7519 section 4.1: a registered claim present as null is refused, by name.
    #[test]
    fn null_is_not_absence() {
        for (name, _) in REGISTERED {
            assert_eq!(claims(&format!(r#"{{"{name}":null}}"#)).unwrap_err(), ClaimError::Null(name));
        }
        assert!(claims(r#"{"repository":null}"#).is_ok(), "unregistered claims may be null");
    }

    #[test]
    fn registered_claims_have_their_types() {
        for (text, name) in [
            (r#"{"exp":"tomorrow"}"#, "exp"),
            (r#"{"nbf":true}"#, "nbf"),
            (r#"{"iat":1e300}"#, "iat"),
            (r#"{"aud":5}"#, "aud"),
            (r#"{"aud":["a",5]}"#, "aud"),
            (r#"{"iss":["a"]}"#, "iss"),
            (r#"{"jti":12}"#, "jti"),
            (r#"{"act":"agent"}"#, "act"),
        ] {
            assert!(matches!(claims(text), Err(ClaimError::Type(n, _)) if n == name), "{text}");
        }
    }

    /// draft-ietf-oauth-rfc7523bis: exactly one audience, as a string or a one-element array.
    #[test]
    fn audience_must_be_exactly_one_accepted_value() {
        let ok =
            |t: &str| claims(t).expect("valid").aud_is_exactly_one_of(&["https://sts", "https://sts/token"]);
        assert!(ok(r#"{"aud":"https://sts"}"#));
        assert!(ok(r#"{"aud":["https://sts"]}"#));
        assert!(ok(r#"{"aud":["https://sts/token"]}"#));
        assert!(!ok(r#"{"aud":["https://sts","https://evil.example"]}"#));
        assert!(!ok(r#"{"aud":["https://sts","https://sts/token"]}"#));
        assert!(!ok(r#"{"aud":[]}"#));
        assert!(!ok(r#"{"aud":"https://sts/"}"#));
        assert!(!ok(r#"{}"#));
    }
}
