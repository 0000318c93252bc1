//! Verifying keys (from public JWKs: agents' keys in the policy, our own published keys)
//! and signing keys (from PEM files, or generated).

use super::ecdsa::{EcdsaSigner, EcdsaVerifier};
use super::{b64url_encode, Alg};
use josekit::jwk::{alg::ed::EdCurve, Jwk, KeyPair};
use josekit::jws::{JwsSigner, JwsVerifier};
use serde_json::{Map, Value};
use std::fmt;

pub type JsonObject = Map<String, Value>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    #[error("the key is not a JSON object with a string `kty`")]
    NoKeyType,
    #[error("key type {0:?} is not accepted (EC P-256/P-384, OKP Ed25519/Ed448, RSA ≥ 2048 bits)")]
    UnsupportedKeyType(String),
    #[error("the public key contains private key material (member {0:?}); publish only the public half")]
    PrivateMaterial(&'static str),
    #[error("{0}")]
    Alg(#[from] super::UnsupportedAlg),
    #[error("`alg` {alg} needs a key of type {needs}, not {kty}")]
    AlgKeyMismatch { alg: Alg, needs: &'static str, kty: String },
    #[error("an RSA key must say its `alg` (RS256 or PS256): the broker never guesses between them")]
    RsaNeedsAlg,
    #[error("curve {0:?} does not fit any accepted algorithm")]
    UnsupportedCurve(String),
    #[error("`use` is {0:?}; a signature key must have `use` \"sig\" or none")]
    NotForSignatures(String),
    #[error("an RSA key must be at least 2048 bits")]
    RsaTooShort,
    #[error("member {0:?} must be a string")]
    NotAString(&'static str),
    #[error("the key does not parse as {alg}: {reason}")]
    Invalid { alg: Alg, reason: String },
    #[error("signing failed")]
    Sign,
}

const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// A public key fixed to exactly one algorithm at load time (RFC 8725 §3.1): the algorithm
/// comes from the registered key, never from a token header.
pub struct VerifyingKey {
    alg: Alg,
    kid: String,
    thumbprint: String,
    verifier: Verifier,
}

/// ES256/ES384 on OpenSSL's ECDSA primitives (the hot path, see crypto/ecdsa.rs); the other
/// algorithms through josekit.
enum Verifier {
    Ecdsa(EcdsaVerifier),
    Jose(Box<dyn JwsVerifier>),
}

enum Signer {
    Ecdsa(EcdsaSigner),
    Jose(Box<dyn JwsSigner>),
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey").field("alg", &self.alg).field("kid", &self.kid).finish()
    }
}

impl VerifyingKey {
    /// Build from a public JWK. The algorithm is the JWK's `alg` or, without one, the only
    /// algorithm its curve allows; RSA keys must name theirs. Without `kid` the RFC 7638
    /// thumbprint stands in, so every key has an id to be chosen by.
    pub fn from_jwk(jwk: &JsonObject) -> Result<Self, KeyError> {
        let kty = match jwk.get("kty") {
            Some(Value::String(k)) => k.as_str(),
            _ => return Err(KeyError::NoKeyType),
        };
        if let Some(m) = PRIVATE_MEMBERS.iter().find(|m| jwk.contains_key(**m)) {
            return Err(KeyError::PrivateMaterial(m));
        }
        if !matches!(kty, "EC" | "OKP" | "RSA") {
            return Err(KeyError::UnsupportedKeyType(kty.chars().take(16).collect()));
        }
        match jwk.get("use") {
            None => {}
            Some(Value::String(u)) if u == "sig" => {}
            Some(other) => return Err(KeyError::NotForSignatures(other.to_string())),
        }
        let alg = match jwk.get("alg") {
            Some(Value::String(a)) => a.parse::<Alg>()?,
            Some(_) => return Err(KeyError::NotAString("alg")),
            None => infer_alg(kty, jwk)?,
        };
        if alg.key_type() != kty {
            return Err(KeyError::AlgKeyMismatch { alg, needs: alg.key_type(), kty: kty.into() });
        }
        if kty == "RSA" {
            let n = string_member(jwk, "n")?;
            // base64url of 256 bytes is 342 characters; a leading zero octet is not allowed
            // (RFC 7518 §6.3.1.1), so the length tells the size.
            if n.len() < 342 {
                return Err(KeyError::RsaTooShort);
            }
        }
        let thumbprint = thumbprint(jwk)?;
        let kid = match jwk.get("kid") {
            Some(Value::String(k)) => k.clone(),
            Some(_) => return Err(KeyError::NotAString("kid")),
            None => thumbprint.clone(),
        };
        // josekit validates every key's shape, whichever code verifies with it.
        let parsed = Jwk::from_map(jwk.clone()).map_err(|e| invalid(alg, e))?;
        let jose = verifier_from_jwk(alg, &parsed).map_err(|e| invalid(alg, e))?;
        let verifier = match alg {
            Alg::ES256 | Alg::ES384 => {
                let coord = |m: &'static str| -> Result<Vec<u8>, KeyError> {
                    super::b64url_decode(string_member(jwk, m)?)
                        .map_err(|_| KeyError::Invalid { alg, reason: format!("`{m}` is not base64url") })
                };
                let fast = EcdsaVerifier::from_coordinates(alg, &coord("x")?, &coord("y")?)
                    .map_err(|reason| KeyError::Invalid { alg, reason })?;
                Verifier::Ecdsa(fast)
            }
            _ => Verifier::Jose(jose),
        };
        Ok(VerifyingKey { alg, kid, thumbprint, verifier })
    }

    pub fn alg(&self) -> Alg {
        self.alg
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The RFC 7638 thumbprint: the key's identity whatever its `kid`.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// True when `signature` is this key's signature over `signing_input`.
    pub fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        match &self.verifier {
            Verifier::Ecdsa(v) => v.verify(signing_input, signature),
            Verifier::Jose(v) => v.verify(signing_input, signature).is_ok(),
        }
    }
}

fn infer_alg(kty: &str, jwk: &JsonObject) -> Result<Alg, KeyError> {
    let crv = || string_member(jwk, "crv");
    match kty {
        "EC" => match crv()? {
            "P-256" => Ok(Alg::ES256),
            "P-384" => Ok(Alg::ES384),
            other => Err(KeyError::UnsupportedCurve(other.chars().take(16).collect())),
        },
        "OKP" => match crv()? {
            "Ed25519" | "Ed448" => Ok(Alg::EdDSA),
            other => Err(KeyError::UnsupportedCurve(other.chars().take(16).collect())),
        },
        _ => Err(KeyError::RsaNeedsAlg),
    }
}

fn string_member<'a>(jwk: &'a JsonObject, name: &'static str) -> Result<&'a str, KeyError> {
    match jwk.get(name) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(KeyError::NotAString(name)),
    }
}

fn invalid(alg: Alg, e: josekit::JoseError) -> KeyError {
    // josekit's messages describe the key's shape, never its material.
    let reason = e.to_string();
    let reason = reason.split(": ").last().unwrap_or("invalid key").to_string();
    KeyError::Invalid { alg, reason }
}

fn verifier_from_jwk(alg: Alg, jwk: &Jwk) -> Result<Box<dyn JwsVerifier>, josekit::JoseError> {
    use josekit::jws;
    Ok(match alg {
        Alg::ES256 => Box::new(jws::ES256.verifier_from_jwk(jwk)?),
        Alg::ES384 => Box::new(jws::ES384.verifier_from_jwk(jwk)?),
        Alg::EdDSA => Box::new(jws::EdDSA.verifier_from_jwk(jwk)?),
        Alg::RS256 => Box::new(jws::RS256.verifier_from_jwk(jwk)?),
        Alg::PS256 => Box::new(jws::PS256.verifier_from_jwk(jwk)?),
    })
}

fn key_pair_from_pem(alg: Alg, pem: &[u8]) -> Result<Box<dyn KeyPair>, josekit::JoseError> {
    use josekit::jws;
    Ok(match alg {
        Alg::ES256 => Box::new(jws::ES256.key_pair_from_pem(pem)?),
        Alg::ES384 => Box::new(jws::ES384.key_pair_from_pem(pem)?),
        Alg::EdDSA => Box::new(jws::EdDSA.key_pair_from_pem(pem)?),
        // An RSA key serves PS256 too; its public JWK is the same either way.
        Alg::RS256 | Alg::PS256 => Box::new(jws::RS256.key_pair_from_pem(pem)?),
    })
}

/// ES256/ES384 on OpenSSL's ECDSA primitives; the rest through josekit. The key's shape has
/// already been checked by [`public_jwk_from_pem`].
fn signer_from_pem(alg: Alg, pem: &[u8]) -> Result<Signer, KeyError> {
    use josekit::jws;
    let jose = |e| invalid(alg, e);
    Ok(match alg {
        Alg::ES256 | Alg::ES384 => Signer::Ecdsa(
            EcdsaSigner::from_pem(alg, pem).map_err(|reason| KeyError::Invalid { alg, reason })?,
        ),
        Alg::EdDSA => Signer::Jose(Box::new(jws::EdDSA.signer_from_pem(pem).map_err(jose)?)),
        Alg::RS256 => Signer::Jose(Box::new(jws::RS256.signer_from_pem(pem).map_err(jose)?)),
        Alg::PS256 => Signer::Jose(match jws::PS256.signer_from_pem(pem) {
            Ok(signer) => Box::new(signer),
            // josekit reads only RSA-PSS PEM for PS256; a plain RSA key goes through its JWK.
            Err(_) => {
                let mut private: JsonObject =
                    jws::RS256.key_pair_from_pem(pem).map_err(jose)?.to_jwk_private_key().into();
                private.remove("alg");
                let jwk = Jwk::from_map(private).map_err(jose)?;
                Box::new(jws::PS256.signer_from_jwk(&jwk).map_err(jose)?)
            }
        }),
    })
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url) over the required members in
/// lexicographic order.
pub fn thumbprint(jwk: &JsonObject) -> Result<String, KeyError> {
    use sha2::{Digest, Sha256};
    let kty = string_member(jwk, "kty").map_err(|_| KeyError::NoKeyType)?;
    let members: &[&'static str] = match kty {
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        "RSA" => &["e", "kty", "n"],
        other => return Err(KeyError::UnsupportedKeyType(other.chars().take(16).collect())),
    };
    let mut canonical = Map::new();
    for m in members {
        canonical.insert((*m).to_string(), Value::String(string_member(jwk, m)?.to_string()));
    }
    // serde_json's Map is ordered by key (no `preserve_order`), and writes no whitespace.
    let json = serde_json::to_vec(&canonical).map_err(|_| KeyError::NoKeyType)?;
    Ok(b64url_encode(&Sha256::digest(json)))
}

/// The public JWK of a PEM private key, with `alg`, `use: sig` and a `kid` (the given one
/// or the RFC 7638 thumbprint).
pub fn public_jwk_from_pem(alg: Alg, pem: &[u8], kid: Option<&str>) -> Result<JsonObject, KeyError> {
    let pair = key_pair_from_pem(alg, pem).map_err(|e| invalid(alg, e))?;
    finish_public_jwk(alg, pair.to_jwk_public_key().into(), kid)
}

fn finish_public_jwk(alg: Alg, mut jwk: JsonObject, kid: Option<&str>) -> Result<JsonObject, KeyError> {
    let kid = match kid {
        Some(k) => k.to_string(),
        None => thumbprint(&jwk)?,
    };
    jwk.insert("alg".into(), Value::String(alg.as_str().into()));
    jwk.insert("use".into(), Value::String("sig".into()));
    jwk.insert("kid".into(), Value::String(kid));
    Ok(jwk)
}

/// The algorithm a PEM private key fits: EC P-256 ▶ ES256, P-384 ▶ ES384, Ed25519/Ed448 ▶
/// EdDSA, RSA ▶ RS256 (PS256 must be asked for).
pub fn detect_alg(pem: &[u8]) -> Option<Alg> {
    [Alg::ES256, Alg::ES384, Alg::EdDSA, Alg::RS256]
        .into_iter()
        .find(|alg| key_pair_from_pem(*alg, pem).is_ok())
}

/// Private key text. Its `Debug` never shows the material.
#[derive(Clone)]
pub struct SecretPem(pub String);

impl fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

pub struct GeneratedKeyPair {
    pub private_pem: SecretPem,
    pub public_jwk: JsonObject,
}

/// A fresh key pair for `alg` (RSA: 2048 bits; EdDSA: Ed25519), as PKCS#8 PEM plus the
/// public JWK.
pub fn generate_key_pair(alg: Alg, kid: Option<&str>) -> Result<GeneratedKeyPair, KeyError> {
    use josekit::jws;
    let gen = |e| invalid(alg, e);
    let pair: Box<dyn KeyPair> = match alg {
        Alg::ES256 => Box::new(jws::ES256.generate_key_pair().map_err(gen)?),
        Alg::ES384 => Box::new(jws::ES384.generate_key_pair().map_err(gen)?),
        Alg::EdDSA => Box::new(jws::EdDSA.generate_key_pair(EdCurve::Ed25519).map_err(gen)?),
        // Plain RSA PKCS#8 for both RSA algorithms: the key serves either; the JWK's `alg`
        // pins the one it is registered for.
        Alg::RS256 | Alg::PS256 => Box::new(jws::RS256.generate_key_pair(2048).map_err(gen)?),
    };
    let private_pem = String::from_utf8(pair.to_pem_private_key()).map_err(|_| KeyError::Sign)?;
    let public_jwk = finish_public_jwk(alg, pair.to_jwk_public_key().into(), kid)?;
    Ok(GeneratedKeyPair { private_pem: SecretPem(private_pem), public_jwk })
}

/// A private key that signs JWS, with its public JWK for the JWKS.
pub struct SigningKey {
    alg: Alg,
    kid: String,
    signer: Signer,
    public_jwk: JsonObject,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("private_key", &"[redacted]")
            .finish()
    }
}

impl SigningKey {
    pub fn from_pem(alg: Alg, pem: &[u8], kid: Option<&str>) -> Result<Self, KeyError> {
        let public_jwk = public_jwk_from_pem(alg, pem, kid)?;
        let signer = signer_from_pem(alg, pem)?;
        let kid = match public_jwk.get("kid") {
            Some(Value::String(k)) => k.clone(),
            _ => return Err(KeyError::NotAString("kid")),
        };
        Ok(SigningKey { alg, kid, signer, public_jwk })
    }

    /// An ephemeral key for dev mode: it lives as long as the process.
    pub fn generate(alg: Alg) -> Result<Self, KeyError> {
        let pair = generate_key_pair(alg, None)?;
        Self::from_pem(alg, pair.private_pem.0.as_bytes(), None)
    }

    pub fn alg(&self) -> Alg {
        self.alg
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_jwk(&self) -> &JsonObject {
        &self.public_jwk
    }

    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        VerifyingKey::from_jwk(&self.public_jwk)
    }

    /// The base64url protected header `{"alg","typ","kid"}`; computed once per token type,
    /// not per token.
    pub fn encoded_header(&self, typ: &str, with_kid: bool) -> String {
        let mut h = Map::new();
        h.insert("alg".into(), Value::String(self.alg.as_str().into()));
        h.insert("typ".into(), Value::String(typ.into()));
        if with_kid {
            h.insert("kid".into(), Value::String(self.kid.clone()));
        }
        b64url_encode(Value::Object(h).to_string().as_bytes())
    }

    /// Sign `payload` under an already-encoded header: `header.payload.signature`.
    pub fn sign_compact(&self, encoded_header: &str, payload: &[u8]) -> Result<String, KeyError> {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut out = String::with_capacity(encoded_header.len() + payload.len() * 4 / 3 + 200);
        out.push_str(encoded_header);
        out.push('.');
        engine.encode_string(payload, &mut out);
        let sig = match &self.signer {
            Signer::Ecdsa(s) => s.sign(out.as_bytes()).ok_or(KeyError::Sign)?,
            Signer::Jose(s) => s.sign(out.as_bytes()).map_err(|_| KeyError::Sign)?,
        };
        out.push('.');
        engine.encode_string(sig, &mut out);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alg_signs_and_verifies_its_own_key_only() {
        for alg in Alg::ALL {
            let key = SigningKey::generate(alg).expect("generate");
            let vk = key.verifying_key().expect("verifying key");
            assert_eq!(vk.alg(), alg);
            let header = key.encoded_header("JWT", true);
            let jws = key.sign_compact(&header, br#"{"a":1}"#).expect("sign");
            let (input, sig) = jws.rsplit_once('.').expect("three parts");
            let sig = crate::crypto::b64url_decode(sig).expect("b64");
            assert!(vk.verify(input.as_bytes(), &sig), "{alg} verifies");
            assert!(!vk.verify(b"other", &sig), "{alg} refuses another message");
        }
    }

    /// RFC 7638 §3.1 example thumbprint.
    #[test]
    fn rfc7638_example_thumbprint() {
        let jwk: JsonObject = serde_json::from_str(r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#).expect("json");
        assert_eq!(thumbprint(&jwk).expect("thumbprint"), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn refuses_private_material_and_symmetric_keys() {
        let pair = generate_key_pair(Alg::ES256, None).expect("gen");
        let mut with_d = pair.public_jwk.clone();
        with_d.insert("d".into(), Value::String("AAAA".into()));
        assert!(matches!(VerifyingKey::from_jwk(&with_d), Err(KeyError::PrivateMaterial("d"))));
        let oct: JsonObject = serde_json::from_str(r#"{"kty":"oct","k":"c2VjcmV0"}"#).expect("json");
        assert!(VerifyingKey::from_jwk(&oct).is_err());
    }

    /// RFC 8725 §3.1: the key pins its algorithm; a mismatched `alg` in the JWK is refused.
    #[test]
    fn refuses_alg_that_does_not_fit_the_key_type() {
        let pair = generate_key_pair(Alg::ES256, None).expect("gen");
        let mut jwk = pair.public_jwk.clone();
        jwk.insert("alg".into(), Value::String("RS256".into()));
        assert!(matches!(VerifyingKey::from_jwk(&jwk), Err(KeyError::AlgKeyMismatch { .. })));
        jwk.insert("alg".into(), Value::String("HS256".into()));
        assert!(matches!(VerifyingKey::from_jwk(&jwk), Err(KeyError::Alg(_))));
        jwk.insert("alg".into(), Value::String("ES384".into()));
        assert!(matches!(VerifyingKey::from_jwk(&jwk), Err(KeyError::Invalid { .. })));
    }

    #[test]
    fn rsa_keys_must_name_their_alg() {
        let pair = generate_key_pair(Alg::RS256, None).expect("gen");
        let mut jwk = pair.public_jwk.clone();
        jwk.remove("alg");
        assert!(matches!(VerifyingKey::from_jwk(&jwk), Err(KeyError::RsaNeedsAlg)));
    }

    #[test]
    fn debug_never_prints_private_material() {
        let key = SigningKey::generate(Alg::ES256).expect("gen");
        assert!(format!("{key:?}").contains("[redacted]"));
        let pair = generate_key_pair(Alg::ES256, None).expect("gen");
        assert_eq!(format!("{:?}", pair.private_pem), "[redacted]");
    }
}
