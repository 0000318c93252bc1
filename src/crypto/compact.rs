//! JWS compact serialization (RFC 7515 section 7.1), parsed strictly: the one place that
//! decides what a JOSE header may say, for every JWT this broker reads (agent assertions,
//! platform and user tokens, ID-JAGs, our own access tokens).
//!
//! The rules, in the order they are applied:
//! 1. at most `max_len` bytes, exactly three non-empty parts, strict base64url (no padding,
//!    no stray bits) in each;
//! 2. header and payload: UTF-8, one JSON object each, no duplicate member names at any depth
//!    ([`super::json`]);
//! 3. header: `alg` a string on the allow-list ([`Alg`]: never `none`, never HMAC); every
//!    registered header parameter that is present is not `null` (absent and `null` are not the
//!    same: RFC 7515 section 4.1 defines no `null` value) and has its type; `crit` is refused
//!    (we implement no extensions, RFC 7515 section 4.1.11), as are `b64` (RFC 7797), `zip`
//!    (a JWE parameter) and `enc` (whose presence makes a header a JWE's, RFC 7516 section 9:
//!    three parts with `enc` are neither a JWS nor a JWE); `cty` is refused (it announces a nested JWT or other content, RFC 7519
//!    section 5.2; we never process nested JWTs); `jku`, `jwk`, `x5u` and `x5c` are refused
//!    (keys come only from the policy or a trusted issuer's JWKS, RFC 8725 section 3.10);
//!    `x5t`/`x5t#S256` are hints that never select a key, and are tolerated as strings;
//! 4. `typ` is kept normalised per RFC 7515 section 4.1.9 ([`Typ`]); which values a JWT may
//!    carry is the caller's rule (an assertion is not an access token is not an ID-JAG).

use super::json::{parse_object, JsonError, JsonObject};
use super::Alg;
use serde_json::Value;

/// A `typ` header value, compared as a media type: case-insensitively, with the
/// `application/` prefix optional (RFC 7515 section 4.1.9, RFC 2045 section 5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typ {
    /// As sent (for messages).
    pub raw: String,
    /// Lower case, without a leading `application/`; `None` when the value names a type outside
    /// `application/` or carries parameters, which then matches nothing.
    normalised: Option<String>,
}

impl Typ {
    pub fn new(raw: &str) -> Typ {
        let lower = raw.to_ascii_lowercase();
        let bare = lower.strip_prefix("application/").unwrap_or(&lower);
        let normalised =
            (!bare.is_empty() && !bare.contains(['/', ';', ' ', '\t'])).then(|| bare.to_string());
        Typ { raw: raw.to_string(), normalised }
    }

    /// Whether this is the media type `application/<bare>` (`bare` in lower case, e.g. `jwt`,
    /// `at+jwt`).
    pub fn is(&self, bare: &str) -> bool {
        self.normalised.as_deref() == Some(bare)
    }
}

/// The header members this broker acts on; everything else in a header was checked by
/// [`CompactJws::parse`] and is otherwise ignored.
#[derive(Debug, Clone)]
pub struct JoseHeader {
    pub alg: Alg,
    pub kid: Option<String>,
    pub typ: Option<Typ>,
}

/// A JWS split and decoded, not yet verified.
#[derive(Debug)]
pub struct CompactJws<'a> {
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`: what the signature covers.
    pub signing_input: &'a str,
    pub header: JoseHeader,
    /// The payload as a strict JSON object (a JWT claims set).
    pub payload: JsonObject,
    pub signature: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    #[error("the JWT is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the JWT is not three base64url parts separated by dots (JWS compact serialization)")]
    NotCompact,
    #[error("the JWT {0} is not valid base64url")]
    Base64(&'static str),
    #[error("the JWT {0} {1}")]
    Json(&'static str, JsonError),
    #[error("the JWT header has no alg")]
    NoAlg,
    #[error("alg '{0}' is not accepted (allowed: ES256, ES384, EdDSA, RS256, PS256)")]
    Alg(String),
    #[error(
        "the JWT header parameter '{0}' is null; a registered parameter is either absent or has a value"
    )]
    NullHeader(&'static str),
    #[error("the JWT header parameter '{0}' must be {1}")]
    HeaderType(&'static str, &'static str),
    #[error("the JWT header carries '{0}'; keys come only from the policy or a trusted issuer (RFC 8725 section 3.10)")]
    KeyReference(&'static str),
    #[error("the JWT header names critical extensions (crit); none are supported (RFC 7515 section 4.1.11)")]
    Crit,
    #[error("the JWT header carries '{0}', which this broker does not support")]
    Unsupported(&'static str),
    #[error("the JWT header carries cty '{0}': nested JWTs and other content types are not accepted (RFC 7519 section 5.2)")]
    Cty(String),
}

/// Registered JWS header parameters (RFC 7515 section 4.1, RFC 7797 section 3, RFC 7516
/// section 4.1.3) with the JSON type each must have.
#[derive(Clone, Copy)]
enum Kind {
    String,
    Object,
    Array,
    Any,
}

const REGISTERED: [(&str, Kind); 14] = [
    ("alg", Kind::String),
    ("jku", Kind::String),
    ("jwk", Kind::Object),
    ("kid", Kind::String),
    ("x5u", Kind::String),
    ("x5c", Kind::Array),
    ("x5t", Kind::String),
    ("x5t#S256", Kind::String),
    ("typ", Kind::String),
    ("cty", Kind::String),
    ("crit", Kind::Array),
    ("b64", Kind::Any),
    ("zip", Kind::String),
    ("enc", Kind::String),
];

impl<'a> CompactJws<'a> {
    /// Split, size-check, decode and check the header (rules 1-3 above). `max_len` is
    /// checked before any decoding work.
    pub fn parse(input: &'a str, max_len: usize) -> Result<Self, CompactError> {
        if input.len() > max_len {
            return Err(CompactError::TooLarge(max_len));
        }
        let mut parts = input.splitn(4, '.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CompactError::NotCompact);
        };
        if h.is_empty() || p.is_empty() || s.is_empty() {
            return Err(CompactError::NotCompact);
        }
        let header_bytes = super::b64url_decode(h).map_err(|_| CompactError::Base64("header"))?;
        let header = parse_object(&header_bytes).map_err(|e| CompactError::Json("header", e))?;
        let header = check_header(&header)?;
        let payload_bytes = super::b64url_decode(p).map_err(|_| CompactError::Base64("payload"))?;
        let payload = parse_object(&payload_bytes).map_err(|e| CompactError::Json("payload", e))?;
        let signature = super::b64url_decode(s).map_err(|_| CompactError::Base64("signature"))?;
        Ok(CompactJws { signing_input: &input[..h.len() + 1 + p.len()], header, payload, signature })
    }
}

fn check_header(h: &JsonObject) -> Result<JoseHeader, CompactError> {
    for (name, kind) in REGISTERED {
        let Some(v) = h.get(name) else { continue };
        let fits = match (kind, v) {
            (_, Value::Null) => return Err(CompactError::NullHeader(name)),
            (Kind::String, Value::String(_)) | (Kind::Object, Value::Object(_)) => true,
            (Kind::Array, Value::Array(_)) | (Kind::Any, _) => true,
            _ => false,
        };
        if !fits {
            let expected = match kind {
                Kind::String => "a string",
                Kind::Object => "a JSON object",
                Kind::Array => "an array",
                Kind::Any => "a value",
            };
            return Err(CompactError::HeaderType(name, expected));
        }
    }
    if h.contains_key("crit") {
        return Err(CompactError::Crit);
    }
    for name in ["b64", "zip", "enc"] {
        if h.contains_key(name) {
            return Err(CompactError::Unsupported(name));
        }
    }
    if let Some(Value::String(cty)) = h.get("cty") {
        return Err(CompactError::Cty(cty.clone()));
    }
    for name in ["jku", "jwk", "x5u", "x5c"] {
        if h.contains_key(name) {
            return Err(CompactError::KeyReference(name));
        }
    }
    let alg = match h.get("alg") {
        Some(Value::String(a)) => a.parse::<Alg>().map_err(|_| CompactError::Alg(a.clone()))?,
        _ => return Err(CompactError::NoAlg),
    };
    let string = |name: &str| match h.get(name) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    Ok(JoseHeader { alg, kid: string("kid"), typ: string("typ").map(|t| Typ::new(&t)) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::b64url_encode;

    fn jws(header: &str, payload: &str) -> String {
        jws_bytes(header.as_bytes(), payload.as_bytes())
    }

    fn jws_bytes(header: &[u8], payload: &[u8]) -> String {
        format!("{}.{}.{}", b64url_encode(header), b64url_encode(payload), b64url_encode(b"sig"))
    }

    fn header_err(header: &str) -> CompactError {
        CompactJws::parse(&jws(header, "{}"), 8192).expect_err(header)
    }

    #[test]
    fn splits_and_decodes() {
        let t = jws(r#"{"alg":"ES256","kid":"k1","typ":"JWT","x5t":"abc"}"#, r#"{"iss":"a"}"#);
        let c = CompactJws::parse(&t, 8192).expect("parses");
        assert_eq!(c.header.alg, Alg::ES256);
        assert_eq!(c.header.kid.as_deref(), Some("k1"));
        assert!(c.header.typ.expect("typ").is("jwt"));
        assert_eq!(c.payload["iss"], "a");
        assert_eq!(c.signature, b"sig");
        assert!(t.starts_with(c.signing_input));
        assert_eq!(c.signing_input.matches('.').count(), 1);
    }

    #[test]
    fn refuses_wrong_shapes() {
        assert_eq!(CompactJws::parse("a.b", 100).unwrap_err(), CompactError::NotCompact);
        assert_eq!(CompactJws::parse("a.b.c.d", 100).unwrap_err(), CompactError::NotCompact);
        assert_eq!(CompactJws::parse("a..c", 100).unwrap_err(), CompactError::NotCompact);
        assert_eq!(CompactJws::parse("abcdef", 3).unwrap_err(), CompactError::TooLarge(3));
        // The limit itself is allowed: exactly max_len bytes reach the shape check.
        assert_eq!(CompactJws::parse("abcd", 4).unwrap_err(), CompactError::NotCompact);
        assert_eq!(CompactJws::parse("abcde", 4).unwrap_err(), CompactError::TooLarge(4));
        let padded = format!("{}=.e30.c2ln", b64url_encode(br#"{"alg":"ES256"}"#));
        assert_eq!(CompactJws::parse(&padded, 100).unwrap_err(), CompactError::Base64("header"));
    }

    /// RFC 7515 section 4: duplicate header member names are refused rather than guessed at.
    #[test]
    fn refuses_duplicate_members() {
        assert_eq!(
            header_err(r#"{"alg":"ES256","alg":"none"}"#),
            CompactError::Json("header", JsonError::Duplicate("alg".into()))
        );
        let t = jws(r#"{"alg":"ES256"}"#, r#"{"sub":"a","sub":"b"}"#);
        assert_eq!(
            CompactJws::parse(&t, 8192).unwrap_err(),
            CompactError::Json("payload", JsonError::Duplicate("sub".into()))
        );
    }

    /// RFC 7515 section 5.2 step 3: the decoded header and payload are UTF-8.
    #[test]
    fn refuses_invalid_utf8_in_header_and_payload() {
        let t = jws_bytes(b"{\"alg\":\"ES256\",\"x\":\"\xc0\xaf\"}", b"{}");
        assert_eq!(CompactJws::parse(&t, 8192).unwrap_err(), CompactError::Json("header", JsonError::Utf8));
        let t = jws_bytes(br#"{"alg":"ES256"}"#, b"{\"name\":\"\xed\xa0\x80\"}");
        assert_eq!(CompactJws::parse(&t, 8192).unwrap_err(), CompactError::Json("payload", JsonError::Utf8));
    }

    /// RFC 7515 section 4.1: a registered parameter present as null is refused, by name.
    #[test]
    fn null_is_not_absence() {
        for name in ["kid", "typ", "crit", "jku", "jwk", "x5u", "x5c", "cty", "x5t", "b64", "zip", "enc"] {
            let h = format!(r#"{{"alg":"ES256","{name}":null}}"#);
            assert_eq!(header_err(&h), CompactError::NullHeader(name), "{name}");
        }
        assert_eq!(header_err(r#"{"alg":null}"#), CompactError::NullHeader("alg"));
        // An unregistered private parameter may be null.
        assert!(CompactJws::parse(&jws(r#"{"alg":"ES256","mine":null}"#, "{}"), 8192).is_ok());
    }

    #[test]
    fn registered_parameters_have_their_types() {
        assert_eq!(header_err(r#"{"alg":"ES256","kid":7}"#), CompactError::HeaderType("kid", "a string"));
        assert_eq!(
            header_err(r#"{"alg":"ES256","typ":["JWT"]}"#),
            CompactError::HeaderType("typ", "a string")
        );
        assert_eq!(header_err(r#"{"alg":256}"#), CompactError::HeaderType("alg", "a string"));
        assert_eq!(header_err(r#"{"kid":"k"}"#), CompactError::NoAlg);
    }

    #[test]
    fn refuses_crit_cty_b64_zip_and_key_references() {
        assert_eq!(header_err(r#"{"alg":"ES256","crit":[]}"#), CompactError::Crit);
        assert_eq!(header_err(r#"{"alg":"ES256","crit":["exp"],"exp":1}"#), CompactError::Crit);
        assert_eq!(header_err(r#"{"alg":"ES256","b64":false}"#), CompactError::Unsupported("b64"));
        assert_eq!(header_err(r#"{"alg":"ES256","zip":"DEF"}"#), CompactError::Unsupported("zip"));
        // RFC 7516 section 9: a header with `enc` is a JWE's; found by the differential fuzz
        // target (jsonwebtoken accepts it too, as a JWS).
        assert_eq!(header_err(r#"{"alg":"ES256","enc":"A128GCM"}"#), CompactError::Unsupported("enc"));
        assert_eq!(header_err(r#"{"alg":"ES256","enc":1}"#), CompactError::HeaderType("enc", "a string"));
        assert_eq!(header_err(r#"{"alg":"ES256","cty":"JWT"}"#), CompactError::Cty("JWT".into()));
        assert_eq!(header_err(r#"{"alg":"ES256","cty":"json"}"#), CompactError::Cty("json".into()));
        for m in ["jku\":\"https://evil.example/jwks", "x5u\":\"https://evil.example/c"] {
            assert!(matches!(
                header_err(&format!(r#"{{"alg":"ES256","{m}"}}"#)),
                CompactError::KeyReference(_)
            ));
        }
        assert_eq!(header_err(r#"{"alg":"ES256","jwk":{"kty":"EC"}}"#), CompactError::KeyReference("jwk"));
        assert_eq!(header_err(r#"{"alg":"ES256","x5c":["MII"]}"#), CompactError::KeyReference("x5c"));
    }

    /// RFC 8725 section 2.1 and 3.1: none and HMAC are never accepted, whatever the key.
    #[test]
    fn refuses_algorithms_off_the_allow_list() {
        for alg in ["none", "None", "HS256", "es256", "RS1", ""] {
            assert_eq!(header_err(&format!(r#"{{"alg":"{alg}"}}"#)), CompactError::Alg(alg.into()));
        }
    }

    /// RFC 7515 section 4.1.9: typ compares as a media type, `application/` optional.
    #[test]
    fn typ_compares_as_a_media_type() {
        for (raw, bare, yes) in [
            ("JWT", "jwt", true),
            ("jwt", "jwt", true),
            ("application/jwt", "jwt", true),
            ("APPLICATION/JWT", "jwt", true),
            ("application/client-authentication+jwt", "client-authentication+jwt", true),
            ("Client-Authentication+JWT", "client-authentication+jwt", true),
            ("at+jwt", "at+jwt", true),
            ("application/at+JWT", "at+jwt", true),
            ("text/jwt", "jwt", false),
            ("application/jwt; charset=utf-8", "jwt", false),
            ("application/", "", false),
            ("jwt ", "jwt", false),
            ("at+jwt", "jwt", false),
        ] {
            assert_eq!(Typ::new(raw).is(bare), yes, "{raw} as {bare}");
        }
    }
}
