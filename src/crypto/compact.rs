//! JWS compact serialization (RFC 7515 §7.1): `header.payload.signature`, each base64url.

use serde::Deserialize;

/// The protected header members this broker reads. Any other member is ignored, except
/// that `crit` (RFC 7515 §4.1.11) must name nothing: we implement no extensions.
#[derive(Debug, Deserialize)]
pub struct JoseHeader {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub typ: Option<String>,
    #[serde(default)]
    pub crit: Option<serde_json::Value>,
    #[serde(default)]
    pub b64: Option<serde_json::Value>,
    #[serde(default)]
    pub jku: Option<serde_json::Value>,
    #[serde(default)]
    pub x5u: Option<serde_json::Value>,
    #[serde(default)]
    pub jwk: Option<serde_json::Value>,
    #[serde(default)]
    pub x5c: Option<serde_json::Value>,
}

impl JoseHeader {
    /// The name of the first header member that would point at a key from outside the
    /// policy (RFC 8725 §3.10): these are never used, and their presence refuses the JWS.
    pub fn key_reference_member(&self) -> Option<&'static str> {
        [("jku", &self.jku), ("x5u", &self.x5u), ("jwk", &self.jwk), ("x5c", &self.x5c)]
            .into_iter()
            .find(|(_, v)| v.is_some())
            .map(|(name, _)| name)
    }
}

/// A JWS split and decoded, not yet verified.
#[derive(Debug)]
pub struct CompactJws<'a> {
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`: what the signature covers.
    pub signing_input: &'a str,
    pub header: JoseHeader,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    #[error("the JWT is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the JWT is not three base64url parts separated by dots")]
    NotCompact,
    #[error("the JWT {0} is not valid base64url")]
    Base64(&'static str),
    #[error("the JWT {0} is not a JSON object: {1}")]
    Json(&'static str, String),
}

impl<'a> CompactJws<'a> {
    /// Split, size-check and decode. `max_len` is checked before any decoding work.
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
        let header: JoseHeader =
            serde_json::from_slice(&header_bytes).map_err(|e| CompactError::Json("header", short(&e)))?;
        let payload = super::b64url_decode(p).map_err(|_| CompactError::Base64("payload"))?;
        let signature = super::b64url_decode(s).map_err(|_| CompactError::Base64("signature"))?;
        Ok(CompactJws { signing_input: &input[..h.len() + 1 + p.len()], header, payload, signature })
    }
}

/// A serde error's category and position, never the offending input.
fn short(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected member type or duplicate member",
        serde_json::error::Category::Eof => "truncated",
    };
    format!("{what} at column {}", e.column())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::b64url_encode;

    fn jws(header: &str, payload: &str) -> String {
        format!(
            "{}.{}.{}",
            b64url_encode(header.as_bytes()),
            b64url_encode(payload.as_bytes()),
            b64url_encode(b"sig")
        )
    }

    #[test]
    fn splits_and_decodes() {
        let t = jws(r#"{"alg":"ES256","kid":"k1"}"#, r#"{"iss":"a"}"#);
        let c = CompactJws::parse(&t, 8192).expect("parses");
        assert_eq!(c.header.alg, "ES256");
        assert_eq!(c.header.kid.as_deref(), Some("k1"));
        assert_eq!(c.payload, br#"{"iss":"a"}"#);
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
        let padded = format!("{}=.e30.c2ln", b64url_encode(br#"{"alg":"ES256"}"#));
        assert_eq!(CompactJws::parse(&padded, 100).unwrap_err(), CompactError::Base64("header"));
    }

    /// RFC 7515 §4: duplicate header member names are refused rather than guessed at.
    #[test]
    fn refuses_duplicate_header_members() {
        let t = jws(r#"{"alg":"ES256","alg":"none"}"#, "{}");
        assert!(matches!(CompactJws::parse(&t, 8192), Err(CompactError::Json("header", _))));
    }

    #[test]
    fn reports_key_reference_members() {
        let t = jws(r#"{"alg":"ES256","jku":"https://evil.example/jwks"}"#, "{}");
        let c = CompactJws::parse(&t, 8192).expect("parses");
        assert_eq!(c.header.key_reference_member(), Some("jku"));
    }
}
