//! Verifying keys (from public JWKs: agents' keys in the policy, our own published keys)
//! and signing keys (from PEM files, or generated).

use super::ecdsa::{EcdsaSigner, EcdsaVerifier};
use super::{b64url_encode, Alg};
use josekit::jwk::{alg::ed::EdCurve, Jwk, KeyPair};
use josekit::jws::JwsSigner;
use openssl::pkey::{PKey, Public};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::OnceLock;

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

/// The largest RSA modulus OpenSSL verifies with (`OPENSSL_RSA_MAX_MODULUS_BITS`).
const RSA_MAX_BITS: usize = 16384;

/// A public key fixed to exactly one algorithm at load time (RFC 8725 §3.1): the algorithm
/// comes from the registered key, never from a token header.
///
/// Loading validates the key fully (see [`VerifyingKey::from_jwk`]) but keeps only its raw
/// public material: 64 or 96 octets for EC, 32 or 57 for EdDSA, `n` and `e` for RSA. The
/// OpenSSL object that verifies is built on first use and kept ([`OnceLock`]), so a policy
/// of 100 000 agents costs a few hundred bytes a key, and only the keys that sign something
/// ever become an `EC_KEY` or an `EVP_PKEY` (issue 12). The RFC 7638 thumbprint is computed
/// when asked for, or at load when it stands in for a missing `kid`.
pub struct VerifyingKey {
    alg: Alg,
    kid: String,
    public: PublicKey,
    thumbprint: OnceLock<String>,
    verifier: OnceLock<Verifier>,
}

/// Validated public key material, big-endian octets as in the JWK.
#[derive(PartialEq, Eq)]
enum PublicKey {
    /// `x || y`, each the curve's field size (RFC 7518 §6.2.1).
    Ec(Box<[u8]>),
    /// The raw public key: 32 octets (Ed25519) or 57 (Ed448), RFC 8037 §2.
    Okp(Box<[u8]>),
    /// Modulus and exponent (RFC 7518 §6.3.1).
    Rsa { n: Box<[u8]>, e: Box<[u8]> },
}

/// ES256/ES384 on OpenSSL's ECDSA primitives (the hot path, see crypto/ecdsa.rs); EdDSA,
/// RS256 and PS256 through an `EVP_PKEY` and OpenSSL's one-shot `EVP_DigestVerify`, which is
/// what josekit did for them.
enum Verifier {
    Ecdsa(EcdsaVerifier),
    Pkey(PKey<Public>),
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
    ///
    /// Refused: private members, `use` other than `sig`, `key_ops` without `verify`
    /// (RFC 7517 §4.2, §4.3), an algorithm off the allow-list or not fitting the key type
    /// or curve; EC points of the wrong length, off the curve, with a coordinate not below
    /// the field prime, or at infinity (crypto/ecdsa.rs); OKP keys of the wrong length; RSA
    /// moduli under 2048 bits (RFC 7518 §3.3) or over 16384, even moduli, exponents that
    /// are even or below 3.
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
        match jwk.get("key_ops") {
            None => {}
            Some(Value::Array(ops)) if ops.iter().any(|o| o.as_str() == Some("verify")) => {}
            Some(_) => {
                return Err(invalid(alg, "`key_ops` does not include \"verify\" (RFC 7517 section 4.3)"))
            }
        }
        let kid = match jwk.get("kid") {
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err(KeyError::NotAString("kid")),
            None => None,
        };
        let public = PublicKey::from_jwk(alg, jwk)?;
        let key = VerifyingKey {
            alg,
            kid: String::new(),
            public,
            thumbprint: OnceLock::new(),
            verifier: OnceLock::new(),
        };
        let kid = match kid {
            Some(kid) => kid,
            None => key.thumbprint().to_string(),
        };
        Ok(VerifyingKey { kid, ..key })
    }

    pub fn alg(&self) -> Alg {
        self.alg
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The RFC 7638 thumbprint: the key's identity whatever its `kid`.
    pub fn thumbprint(&self) -> &str {
        self.thumbprint.get_or_init(|| self.public.thumbprint(self.alg))
    }

    /// True when both are the same public key (whatever their `kid` or algorithm): what
    /// equal RFC 7638 thumbprints say, without hashing.
    pub fn same_public_key(&self, other: &VerifyingKey) -> bool {
        self.public == other.public
    }

    /// True when `signature` is this key's signature over `signing_input`.
    pub fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        match self.verifier() {
            Some(Verifier::Ecdsa(v)) => v.verify(signing_input, signature),
            Some(Verifier::Pkey(k)) => pkey_verify(self.alg, k, signing_input, signature),
            // The material was validated at load; OpenSSL refusing it now (out of memory)
            // refuses the signature.
            None => false,
        }
    }

    /// The verifier, built on first use from the validated material.
    fn verifier(&self) -> Option<&Verifier> {
        if let Some(v) = self.verifier.get() {
            return Some(v);
        }
        let built = self.public.verifier(self.alg).ok()?;
        Some(self.verifier.get_or_init(|| built))
    }
}

impl PublicKey {
    /// Decode and validate the key members of a JWK whose `kty` fits `alg`.
    fn from_jwk(alg: Alg, jwk: &JsonObject) -> Result<PublicKey, KeyError> {
        let bytes = |m: &'static str| -> Result<Vec<u8>, KeyError> {
            super::b64url_decode(string_member(jwk, m)?)
                .map_err(|_| invalid(alg, format!("`{m}` is not base64url without padding")))
        };
        match alg {
            Alg::ES256 | Alg::ES384 => {
                let crv = string_member(jwk, "crv")?;
                if crv != ec_curve(alg) {
                    return Err(invalid(alg, format!("curve {:?} does not fit {alg}", short(crv))));
                }
                let (x, y) = (bytes("x")?, bytes("y")?);
                super::ecdsa::validate_public_point(alg, &x, &y).map_err(|reason| invalid(alg, reason))?;
                let mut xy = x;
                xy.extend_from_slice(&y);
                Ok(PublicKey::Ec(xy.into_boxed_slice()))
            }
            Alg::EdDSA => {
                let crv = string_member(jwk, "crv")?;
                let len = match crv {
                    "Ed25519" => 32,
                    "Ed448" => 57,
                    other => return Err(KeyError::UnsupportedCurve(short(other))),
                };
                let x = bytes("x")?;
                if x.len() != len {
                    return Err(invalid(
                        alg,
                        format!("`x` must be {len} octets for {crv} (RFC 8037 section 2), not {}", x.len()),
                    ));
                }
                Ok(PublicKey::Okp(x.into_boxed_slice()))
            }
            Alg::RS256 | Alg::PS256 => {
                let (n, e) = (bytes("n")?, bytes("e")?);
                let bits = bit_length(&n);
                if bits < 2048 {
                    return Err(KeyError::RsaTooShort);
                }
                if bits > RSA_MAX_BITS {
                    return Err(invalid(alg, format!("the modulus is larger than {RSA_MAX_BITS} bits")));
                }
                if n.last().is_some_and(|b| b & 1 == 0) {
                    return Err(invalid(alg, "the modulus is even"));
                }
                if e.last().is_none_or(|b| b & 1 == 0) || bit_length(&e) < 2 || bit_length(&e) > bits {
                    return Err(invalid(alg, "the exponent must be odd, at least 3 and below the modulus"));
                }
                Ok(PublicKey::Rsa { n: n.into_boxed_slice(), e: e.into_boxed_slice() })
            }
        }
    }

    /// RFC 7638 §3.2: the required members in lexicographic order. The strict base64url
    /// decoder accepted only the canonical encoding, so encoding the octets again gives the
    /// JWK's own strings.
    fn thumbprint(&self, alg: Alg) -> String {
        let b64 = super::b64url_encode;
        match self {
            PublicKey::Ec(xy) => {
                let (x, y) = xy.split_at(xy.len() / 2);
                canonical_thumbprint(&[("crv", ec_curve(alg)), ("kty", "EC"), ("x", &b64(x)), ("y", &b64(y))])
            }
            PublicKey::Okp(x) => {
                let crv = if x.len() == 32 { "Ed25519" } else { "Ed448" };
                canonical_thumbprint(&[("crv", crv), ("kty", "OKP"), ("x", &b64(x))])
            }
            PublicKey::Rsa { n, e } => {
                canonical_thumbprint(&[("e", &b64(e)), ("kty", "RSA"), ("n", &b64(n))])
            }
        }
    }

    fn verifier(&self, alg: Alg) -> Result<Verifier, String> {
        use openssl::bn::BigNum;
        use openssl::pkey::Id;
        let e = |e: openssl::error::ErrorStack| e.to_string();
        Ok(match self {
            PublicKey::Ec(xy) => {
                let (x, y) = xy.split_at(xy.len() / 2);
                Verifier::Ecdsa(EcdsaVerifier::from_coordinates(alg, x, y)?)
            }
            PublicKey::Okp(x) => {
                let id = if x.len() == 32 { Id::ED25519 } else { Id::ED448 };
                Verifier::Pkey(PKey::public_key_from_raw_bytes(x, id).map_err(e)?)
            }
            PublicKey::Rsa { n, e: exp } => {
                let rsa = openssl::rsa::Rsa::from_public_components(
                    BigNum::from_slice(n).map_err(e)?,
                    BigNum::from_slice(exp).map_err(e)?,
                )
                .map_err(e)?;
                Verifier::Pkey(PKey::from_rsa(rsa).map_err(e)?)
            }
        })
    }
}

/// EdDSA (RFC 8037 §3.1), RS256 (RFC 7518 §3.3) and PS256 (RFC 7518 §3.5: SHA-256, MGF1
/// with SHA-256, a salt as long as the hash).
fn pkey_verify(alg: Alg, key: &PKey<Public>, input: &[u8], signature: &[u8]) -> bool {
    use openssl::hash::MessageDigest;
    use openssl::rsa::Padding;
    use openssl::sign::{RsaPssSaltlen, Verifier as EvpVerifier};
    let run = || -> Result<bool, openssl::error::ErrorStack> {
        match alg {
            Alg::EdDSA => EvpVerifier::new_without_digest(key)?.verify_oneshot(signature, input),
            Alg::RS256 | Alg::PS256 => {
                let mut v = EvpVerifier::new(MessageDigest::sha256(), key)?;
                if alg == Alg::PS256 {
                    v.set_rsa_padding(Padding::PKCS1_PSS)?;
                    v.set_rsa_mgf1_md(MessageDigest::sha256())?;
                    v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
                }
                v.verify_oneshot(signature, input)
            }
            Alg::ES256 | Alg::ES384 => Ok(false),
        }
    };
    run().unwrap_or(false)
}

/// Bits of a big-endian unsigned integer, leading zero octets ignored.
fn bit_length(octets: &[u8]) -> usize {
    match octets.iter().position(|b| *b != 0) {
        Some(i) => (octets.len() - i) * 8 - octets[i].leading_zeros() as usize,
        None => 0,
    }
}

fn ec_curve(alg: Alg) -> &'static str {
    if alg == Alg::ES384 {
        "P-384"
    } else {
        "P-256"
    }
}

fn short(s: &str) -> String {
    s.chars().take(16).collect()
}

fn infer_alg(kty: &str, jwk: &JsonObject) -> Result<Alg, KeyError> {
    let crv = || string_member(jwk, "crv");
    match kty {
        "EC" => match crv()? {
            "P-256" => Ok(Alg::ES256),
            "P-384" => Ok(Alg::ES384),
            other => Err(KeyError::UnsupportedCurve(short(other))),
        },
        "OKP" => match crv()? {
            "Ed25519" | "Ed448" => Ok(Alg::EdDSA),
            other => Err(KeyError::UnsupportedCurve(short(other))),
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

fn invalid(alg: Alg, reason: impl Into<String>) -> KeyError {
    KeyError::Invalid { alg, reason: reason.into() }
}

fn jose_invalid(alg: Alg, e: josekit::JoseError) -> KeyError {
    // josekit's messages describe the key's shape, never its material.
    let reason = e.to_string();
    let reason = reason.split(": ").last().unwrap_or("invalid key").to_string();
    KeyError::Invalid { alg, reason }
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
    let jose = |e| jose_invalid(alg, e);
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
    let kty = string_member(jwk, "kty").map_err(|_| KeyError::NoKeyType)?;
    let members: &[&'static str] = match kty {
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        "RSA" => &["e", "kty", "n"],
        other => return Err(KeyError::UnsupportedKeyType(short(other))),
    };
    let mut values = Vec::with_capacity(members.len());
    for m in members {
        values.push((*m, string_member(jwk, m)?));
    }
    Ok(canonical_thumbprint(&values))
}

/// SHA-256 over `{"m1":"v1","m2":"v2",...}` (members already in order, no whitespace,
/// values as JSON strings), base64url.
fn canonical_thumbprint(members: &[(&str, &str)]) -> String {
    let mut json = Vec::with_capacity(160);
    json.push(b'{');
    for (i, (name, value)) in members.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut json, name);
        json.push(b':');
        let _ = serde_json::to_writer(&mut json, value);
    }
    json.push(b'}');
    b64url_encode(&openssl::sha::sha256(&json))
}

/// The public JWK of a PEM private key, with `alg`, `use: sig` and a `kid` (the given one
/// or the RFC 7638 thumbprint).
pub fn public_jwk_from_pem(alg: Alg, pem: &[u8], kid: Option<&str>) -> Result<JsonObject, KeyError> {
    let pair = key_pair_from_pem(alg, pem).map_err(|e| jose_invalid(alg, e))?;
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
    let gen = |e| jose_invalid(alg, e);
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

    /// RSA public-key checks: an even modulus or an even, or too small, exponent is no RSA
    /// key; `key_ops` without `verify` is not for verifying (RFC 7517 section 4.3).
    #[test]
    fn refuses_malformed_rsa_keys_and_key_ops_without_verify() {
        let pair = generate_key_pair(Alg::RS256, None).expect("gen");
        let with = |member: &str, value: Value| {
            let mut jwk = pair.public_jwk.clone();
            jwk.insert(member.into(), value);
            VerifyingKey::from_jwk(&jwk)
        };
        let mut n = crate::crypto::b64url_decode(pair.public_jwk["n"].as_str().expect("n")).expect("b64");
        if let Some(last) = n.last_mut() {
            *last &= 0xfe;
        }
        let even = with("n", Value::String(b64url_encode(&n)));
        assert!(
            matches!(even, Err(KeyError::Invalid { ref reason, .. }) if reason.contains("even")),
            "{even:?}"
        );
        for e in ["AQAA", "AQ", "Ag"] {
            let bad = with("e", Value::String(e.into()));
            assert!(
                matches!(bad, Err(KeyError::Invalid { ref reason, .. }) if reason.contains("exponent")),
                "{e}"
            );
        }
        let ops = with("key_ops", serde_json::json!(["encrypt"]));
        assert!(matches!(ops, Err(KeyError::Invalid { ref reason, .. }) if reason.contains("key_ops")));
        assert!(with("key_ops", serde_json::json!(["verify"])).is_ok());
    }

    /// The verifier is built on first use and kept; the thumbprint is the RFC 7638 one
    /// whether computed at load (no `kid`) or later; equal material is the same key.
    #[test]
    fn lazy_parts_agree_with_the_eager_ones() {
        for alg in Alg::ALL {
            let key = SigningKey::generate(alg).expect("generate");
            let vk = key.verifying_key().expect("verifying key");
            assert_eq!(vk.thumbprint(), thumbprint(key.public_jwk()).expect("thumbprint"), "{alg}");
            let mut no_kid = key.public_jwk().clone();
            no_kid.remove("kid");
            let anonymous = VerifyingKey::from_jwk(&no_kid).expect("no kid");
            assert_eq!(anonymous.kid(), vk.thumbprint(), "{alg}: the thumbprint stands in for the kid");
            assert!(anonymous.same_public_key(&vk));
            let jws = key.sign_compact(&key.encoded_header("JWT", true), b"{}").expect("sign");
            let (input, sig) = jws.rsplit_once('.').expect("three parts");
            let sig = crate::crypto::b64url_decode(sig).expect("b64");
            for _ in 0..2 {
                assert!(vk.verify(input.as_bytes(), &sig), "{alg}: first and cached verifier");
            }
            let other = SigningKey::generate(alg).expect("generate").verifying_key().expect("vk");
            assert!(!other.same_public_key(&vk));
            assert!(!other.verify(input.as_bytes(), &sig));
        }
    }

    #[test]
    fn debug_never_prints_private_material() {
        let key = SigningKey::generate(Alg::ES256).expect("gen");
        assert!(format!("{key:?}").contains("[redacted]"));
        let pair = generate_key_pair(Alg::ES256, None).expect("gen");
        assert_eq!(format!("{:?}", pair.private_pem), "[redacted]");
    }
}
