//! ES256 and ES384 (RFC 7518 §3.4) on OpenSSL's ECDSA primitives, for the hot path.
//!
//! josekit's ECDSA verifier and signer build a fresh `EVP_DigestVerify`/`EVP_DigestSign`
//! context on every call, and OpenSSL 3 looks the algorithm up in its provider store each
//! time (read locks, a hash-table walk): about 5.7 µs per verify + sign pair on the 2-core
//! benchmark machine, 7 % of the whole exchange (benches/README.md). Here the key is an
//! `EC_KEY` built once, the digest is one SHA-2 call, and the signature goes straight to
//! `ECDSA_do_verify`/`ECDSA_do_sign`: the same OpenSSL arithmetic without the per-call setup.
//!
//! Public keys are validated here when a policy is loaded ([`validate_public_point`]) and
//! turned into an `EC_KEY` only when first used ([`EcdsaVerifier::from_public_point`]),
//! so that a policy of 100 000 agents costs 100 000 point checks, not 100 000 `EC_KEY`s
//! (issue 12). josekit still signs and verifies nothing of ECDSA.

use super::Alg;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::{Private, Public};
use std::sync::OnceLock;

/// The curve parameters an ECDSA JWS algorithm fixes.
#[derive(Debug, Clone, Copy)]
struct Curve {
    nid: Nid,
    /// Octets of one coordinate and of each of `R` and `S` in the JWS signature
    /// (RFC 7518 §3.4: the signature is `R || S`, each left-padded to this length).
    len: usize,
}

impl Curve {
    fn of(alg: Alg) -> Option<Curve> {
        match alg {
            Alg::ES256 => Some(Curve { nid: Nid::X9_62_PRIME256V1, len: 32 }),
            Alg::ES384 => Some(Curve { nid: Nid::SECP384R1, len: 48 }),
            _ => None,
        }
    }

    fn digest(self, message: &[u8]) -> Digest {
        if self.len == 32 {
            Digest::Sha256(openssl::sha::sha256(message))
        } else {
            Digest::Sha384(openssl::sha::sha384(message))
        }
    }

    /// The curve's group and field prime, built once per process and shared by every key:
    /// `EC_GROUP_new_by_curve_name` is not free, and nothing here mutates a group.
    fn shared(self) -> Result<&'static SharedCurve, String> {
        static P256: OnceLock<Option<SharedCurve>> = OnceLock::new();
        static P384: OnceLock<Option<SharedCurve>> = OnceLock::new();
        let cell = if self.len == 32 { &P256 } else { &P384 };
        cell.get_or_init(|| SharedCurve::new(self).ok())
            .as_ref()
            .ok_or_else(|| "OpenSSL does not provide this curve".to_string())
    }
}

struct SharedCurve {
    group: EcGroup,
    /// The field prime p, big-endian, the length of a coordinate: each coordinate must be
    /// below it (same-length big-endian octet strings compare as the numbers do).
    p: Vec<u8>,
}

impl SharedCurve {
    fn new(curve: Curve) -> Result<SharedCurve, openssl::error::ErrorStack> {
        let group = EcGroup::from_curve_name(curve.nid)?;
        let (mut p, mut a, mut b) = (BigNum::new()?, BigNum::new()?, BigNum::new()?);
        let mut ctx = BigNumContext::new()?;
        group.components_gfp(&mut p, &mut a, &mut b, &mut ctx)?;
        let p = p.to_vec_padded(curve.len as i32)?;
        Ok(SharedCurve { group, p })
    }
}

thread_local! {
    /// Scratch space for point decoding, one per thread (a policy load decodes 100 000).
    static BN_CTX: std::cell::RefCell<Option<BigNumContext>> = const { std::cell::RefCell::new(None) };
}

enum Digest {
    Sha256([u8; 32]),
    Sha384([u8; 48]),
}

impl AsRef<[u8]> for Digest {
    fn as_ref(&self) -> &[u8] {
        match self {
            Digest::Sha256(d) => d,
            Digest::Sha384(d) => d,
        }
    }
}

/// ECC partial public-key validation (NIST SP 800-56A Rev. 3 section 5.6.2.3.4; SEC 1 v2
/// section 3.2.3.1) of the JWK's `x` and `y`, already base64url-decoded:
///
/// 1. each coordinate is exactly the field size (RFC 7518 §6.2.1.2/3) and below the field
///    prime p, so the point has one encoding;
/// 2. the point satisfies the curve equation;
/// 3. it is not the point at infinity.
///
/// The full validation (section 5.6.2.3.3) adds step 4, n·Q = O, a whole scalar
/// multiplication (what `EC_KEY_check_key` spends most of its time on). P-256 and P-384
/// have cofactor h = 1 (SEC 2 v2 sections 2.4.2 and 2.5.1; FIPS 186-4 appendix D.1.2), so
/// the group of points is of prime order n and every point on the curve other than O has
/// order n: step 4 can never fail after steps 1-3, and is left out.
///
/// Returns the decoded point (on the process-wide group).
fn decode_public_point(alg: Alg, x: &[u8], y: &[u8]) -> Result<EcPoint, String> {
    let curve = Curve::of(alg).ok_or_else(|| format!("{alg} is not an ECDSA algorithm"))?;
    for (name, c) in [("x", x), ("y", y)] {
        if c.len() != curve.len {
            return Err(format!(
                "`{name}` must be {} octets for {alg} (RFC 7518 section 6.2.1), not {}",
                curve.len,
                c.len()
            ));
        }
    }
    let shared = curve.shared()?;
    for (name, c) in [("x", x), ("y", y)] {
        if c >= shared.p.as_slice() {
            return Err(format!("`{name}` is not below the field prime"));
        }
    }
    let mut encoded = [0u8; 1 + 2 * 48];
    encoded[0] = 0x04; // SEC 1 §2.3.3 uncompressed point
    encoded[1..=curve.len].copy_from_slice(x);
    encoded[1 + curve.len..=2 * curve.len].copy_from_slice(y);
    let encoded = &encoded[..=2 * curve.len];
    // EC_POINT_oct2point checks the curve equation (EC_POINT_set_affine_coordinates).
    let point = BN_CTX.with(|cell| {
        let mut ctx = cell.borrow_mut();
        if ctx.is_none() {
            *ctx = BigNumContext::new().ok();
        }
        let ctx = ctx.as_mut().ok_or_else(|| "out of memory".to_string())?;
        EcPoint::from_bytes(&shared.group, encoded, ctx)
            .map_err(|_| "the point is not on the curve".to_string())
    })?;
    if point.is_infinity(&shared.group) {
        return Err("the point is the point at infinity".to_string());
    }
    Ok(point)
}

/// Validate an EC public key for `alg` (see [`decode_public_point`]); keeps nothing.
pub(super) fn validate_public_point(alg: Alg, x: &[u8], y: &[u8]) -> Result<(), String> {
    decode_public_point(alg, x, y).map(|_| ())
}

/// A public EC key pinned to ES256 or ES384.
pub(super) struct EcdsaVerifier {
    curve: Curve,
    key: EcKey<Public>,
}

impl EcdsaVerifier {
    /// From the JWK's `x` and `y` (already base64url-decoded), validated as
    /// [`validate_public_point`] does.
    pub(super) fn from_coordinates(alg: Alg, x: &[u8], y: &[u8]) -> Result<Self, String> {
        let point = decode_public_point(alg, x, y)?;
        let curve = Curve::of(alg).ok_or_else(|| format!("{alg} is not an ECDSA algorithm"))?;
        let key = EcKey::from_public_key(&curve.shared()?.group, &point).map_err(|e| e.to_string())?;
        Ok(EcdsaVerifier { curve, key })
    }

    /// True when `signature` (`R || S`, RFC 7518 §3.4) is this key's signature over
    /// `message`. Any other length is refused before OpenSSL sees it; OpenSSL refuses
    /// `R` or `S` outside `[1, n-1]`.
    pub(super) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let n = self.curve.len;
        if signature.len() != 2 * n {
            return false;
        }
        let (r, s) = signature.split_at(n);
        let (Ok(r), Ok(s)) = (BigNum::from_slice(r), BigNum::from_slice(s)) else {
            return false;
        };
        let Ok(sig) = EcdsaSig::from_private_components(r, s) else {
            return false;
        };
        let digest = self.curve.digest(message);
        sig.verify(digest.as_ref(), &self.key).unwrap_or(false)
    }
}

/// A private EC key pinned to ES256 or ES384.
pub(super) struct EcdsaSigner {
    curve: Curve,
    key: EcKey<Private>,
}

impl EcdsaSigner {
    /// From a PEM private key (PKCS#8 or SEC 1) whose curve must be the algorithm's.
    pub(super) fn from_pem(alg: Alg, pem: &[u8]) -> Result<Self, String> {
        let curve = Curve::of(alg).ok_or_else(|| format!("{alg} is not an ECDSA algorithm"))?;
        let key = openssl::pkey::PKey::private_key_from_pem(pem)
            .and_then(|k| k.ec_key())
            .map_err(|_| "not an EC private key".to_string())?;
        if key.group().curve_name() != Some(curve.nid) {
            return Err(format!("the key's curve does not fit {alg}"));
        }
        key.check_key().map_err(|_| "the private key does not check".to_string())?;
        Ok(EcdsaSigner { curve, key })
    }

    /// `R || S` over `message`, each left-padded to the curve's length (RFC 7518 §3.4).
    pub(super) fn sign(&self, message: &[u8]) -> Option<Vec<u8>> {
        let digest = self.curve.digest(message);
        let sig = EcdsaSig::sign(digest.as_ref(), &self.key).ok()?;
        let n = self.curve.len as i32;
        let mut out = sig.r().to_vec_padded(n).ok()?;
        out.extend_from_slice(&sig.s().to_vec_padded(n).ok()?);
        Some(out)
    }
}

/// The group order of the algorithm's curve, big-endian (tests build out-of-range `S`).
#[cfg(test)]
fn order(alg: Alg) -> Vec<u8> {
    let curve = Curve::of(alg).expect("ecdsa alg");
    let group = EcGroup::from_curve_name(curve.nid).expect("group");
    let mut order = BigNum::new().expect("bn");
    let mut ctx = openssl::bn::BigNumContext::new().expect("ctx");
    group.order(&mut order, &mut ctx).expect("order");
    order.to_vec_padded(curve.len as i32).expect("pad")
}

#[cfg(test)]
mod tests {
    use super::*;
    use josekit::jws::{JwsSigner, JwsVerifier};

    fn pair(alg: Alg) -> (EcdsaSigner, EcdsaVerifier, Box<dyn JwsSigner>, Box<dyn JwsVerifier>) {
        let generated = crate::crypto::generate_key_pair(alg, None).expect("generate");
        let pem = generated.private_pem.0.as_bytes();
        let jwk = &generated.public_jwk;
        let coord = |m: &str| crate::crypto::b64url_decode(jwk[m].as_str().expect("str")).expect("b64");
        let ours_sign = EcdsaSigner::from_pem(alg, pem).expect("signer");
        let ours_verify = EcdsaVerifier::from_coordinates(alg, &coord("x"), &coord("y")).expect("verifier");
        let jose_jwk = josekit::jwk::Jwk::from_map(jwk.clone()).expect("jwk");
        let (js, jv): (Box<dyn JwsSigner>, Box<dyn JwsVerifier>) = match alg {
            Alg::ES256 => (
                Box::new(josekit::jws::ES256.signer_from_pem(pem).expect("js")),
                Box::new(josekit::jws::ES256.verifier_from_jwk(&jose_jwk).expect("jv")),
            ),
            _ => (
                Box::new(josekit::jws::ES384.signer_from_pem(pem).expect("js")),
                Box::new(josekit::jws::ES384.verifier_from_jwk(&jose_jwk).expect("jv")),
            ),
        };
        (ours_sign, ours_verify, js, jv)
    }

    /// Interoperability both ways with josekit's RFC 7518 §3.4 implementation, until each
    /// side has produced a signature whose `R` or `S` starts with a zero octet (about 1 in
    /// 128): the padding case that a careless `R || S` conversion gets wrong.
    #[test]
    fn signatures_interoperate_with_josekit_both_ways() {
        for alg in [Alg::ES256, Alg::ES384] {
            let (ours_sign, ours_verify, js, jv) = pair(alg);
            let n = Curve::of(alg).expect("curve").len;
            let short = |sig: &[u8]| sig[0] == 0 || sig[n] == 0;
            let (mut ours_short, mut theirs_short) = (false, false);
            for i in 0..20_000u32 {
                let msg = format!("eyJhbGciOiJFUzI1NiJ9.{i}");
                let ours = ours_sign.sign(msg.as_bytes()).expect("sign");
                assert_eq!(ours.len(), 2 * n);
                assert!(jv.verify(msg.as_bytes(), &ours).is_ok(), "{alg}: josekit verifies ours");
                let theirs = js.sign(msg.as_bytes()).expect("josekit sign");
                assert!(ours_verify.verify(msg.as_bytes(), &theirs), "{alg}: we verify josekit's");
                assert!(!ours_verify.verify(b"another message", &theirs), "{alg}: bound to the message");
                ours_short |= short(&ours);
                theirs_short |= short(&theirs);
                if ours_short && theirs_short && i >= 100 {
                    break;
                }
            }
            assert!(ours_short && theirs_short, "{alg}: no signature with a short R or S came up");
        }
    }

    /// RFC 7518 §3.4: a signature is exactly `R || S` of the curve's length; DER, truncated,
    /// padded, zero and out-of-range values are all refused.
    #[test]
    fn malformed_signatures_are_refused() {
        for alg in [Alg::ES256, Alg::ES384] {
            let (ours_sign, ours_verify, _, _) = pair(alg);
            let n = Curve::of(alg).expect("curve").len;
            let msg = b"header.payload";
            let good = ours_sign.sign(msg).expect("sign");
            assert!(ours_verify.verify(msg, &good));
            assert!(!ours_verify.verify(msg, &good[..2 * n - 1]), "truncated");
            let mut long = good.clone();
            long.push(0);
            assert!(!ours_verify.verify(msg, &long), "one octet too many");
            let mut padded = vec![0u8];
            padded.extend_from_slice(&good);
            assert!(!ours_verify.verify(msg, &padded), "leading zero octet");
            assert!(!ours_verify.verify(msg, &[]), "empty");
            assert!(!ours_verify.verify(msg, &vec![0u8; 2 * n]), "R = S = 0");
            let mut s_is_order = good[..n].to_vec();
            s_is_order.extend_from_slice(&order(alg));
            assert!(!ours_verify.verify(msg, &s_is_order), "S = n");
            let mut flipped = good.clone();
            flipped[n + 3] ^= 1;
            assert!(!ours_verify.verify(msg, &flipped), "one bit of S");
        }
    }

    #[test]
    fn keys_must_fit_the_algorithm() {
        let p256 = crate::crypto::generate_key_pair(Alg::ES256, None).expect("generate");
        assert!(EcdsaSigner::from_pem(Alg::ES384, p256.private_pem.0.as_bytes()).is_err());
        let ed = crate::crypto::generate_key_pair(Alg::EdDSA, None).expect("generate");
        assert!(EcdsaSigner::from_pem(Alg::ES256, ed.private_pem.0.as_bytes()).is_err());
        // A point off the curve.
        assert!(EcdsaVerifier::from_coordinates(Alg::ES256, &[1u8; 32], &[2u8; 32]).is_err());
        // Coordinates of the wrong length.
        assert!(EcdsaVerifier::from_coordinates(Alg::ES256, &[1u8; 31], &[2u8; 32]).is_err());
    }
}
