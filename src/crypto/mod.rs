//! The only module that touches josekit (and OpenSSL): algorithms, verifying keys, signing
//! keys, JWKS, and the JWS compact serialization (RFC 7515 §7.1) that assertions and tokens
//! share. ES256/ES384 signatures go through OpenSSL's ECDSA primitives directly
//! (`ecdsa.rs`), EdDSA/RS256/PS256 verification through OpenSSL's `EVP_DigestVerify`;
//! josekit reads PEM private keys, generates keys and signs EdDSA and RSA.
//!
//! Public keys are decoded and validated once, at load time, and kept as raw material; the
//! OpenSSL object that verifies is built on first use and cached. Nothing on the request
//! path parses PEM or JWK.

mod claims;
mod compact;
mod ecdsa;
pub mod json;
mod keys;

pub use claims::{ClaimError, Claims};
pub use compact::{CompactError, CompactJws, JoseHeader, Typ};
pub use keys::{
    detect_alg, generate_key_pair, public_jwk_from_pem, thumbprint, GeneratedKeyPair, KeyError, SecretPem,
    SigningKey, VerifyingKey,
};

use std::fmt;
use std::str::FromStr;

/// The JWS algorithms this broker accepts for assertions and uses for its tokens
/// (RFC 7518 §3.1). There is deliberately no `none` and no HMAC: a shared-secret algorithm
/// would let anyone who knows a public key forge a signature with it (RFC 8725 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    ES256,
    ES384,
    EdDSA,
    RS256,
    PS256,
}

impl Alg {
    pub const ALL: [Alg; 5] = [Alg::ES256, Alg::ES384, Alg::EdDSA, Alg::RS256, Alg::PS256];

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
            Alg::RS256 => "RS256",
            Alg::PS256 => "PS256",
        }
    }

    /// The JWK key type (`kty`) an algorithm's key must have (RFC 7518 §6.1, RFC 8037 §2).
    pub fn key_type(self) -> &'static str {
        match self {
            Alg::ES256 | Alg::ES384 => "EC",
            Alg::EdDSA => "OKP",
            Alg::RS256 | Alg::PS256 => "RSA",
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An algorithm name that is not on the allow-list.
///
/// ```
/// use agent_sts::crypto::Alg;
/// assert_eq!("EdDSA".parse::<Alg>().unwrap(), Alg::EdDSA);
/// assert!("none".parse::<Alg>().is_err());
/// assert!("HS256".parse::<Alg>().is_err());
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[error("algorithm {0:?} is not accepted (allowed: ES256, ES384, EdDSA, RS256, PS256)")]
pub struct UnsupportedAlg(pub String);

impl FromStr for Alg {
    type Err = UnsupportedAlg;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Alg::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnsupportedAlg(s.chars().take(32).collect()))
    }
}

impl<'de> serde::Deserialize<'de> for Alg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Alg {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// base64url without padding (RFC 7515 §2), strict: padding and non-canonical trailing
/// bits are refused.
pub fn b64url_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64url_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text)
}

/// 128 random bits, base64url: the `jti` of every token this broker issues.
pub fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    b64url_encode(&bytes)
}

/// SHA-256, hex: used to namespace replay keys without storing the raw `jti`.
pub fn sha256_hex(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}
