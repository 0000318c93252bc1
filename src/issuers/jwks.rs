//! A JWK Set (RFC 7517 section 5) ▶ a [`KeySet`] of verifying keys, each pinned to one
//! algorithm the issuer is trusted with.
//!
//! Strict overall, lenient per key: the document must be a JSON object with a `keys` array,
//! but a key the broker can't or mustn't use is skipped (and reported) rather than failing
//! the whole set, because issuers publish encryption keys and algorithms we don't accept
//! beside the ones we need. A set with no usable key is a failed fetch.

use crate::crypto::{Alg, VerifyingKey};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

type JsonObject = serde_json::Map<String, Value>;

/// Why no key of an issuer verifies a JWS with a given header. No variant does I/O.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The issuer's keys have never been fetched (fail closed: 503 temporarily_unavailable).
    #[error("the issuer's keys are not available yet")]
    NotLoaded,
    #[error("no key of the issuer has this kid")]
    UnknownKid,
    #[error("the issuer's key with this kid is for {registered}, not {header}")]
    AlgMismatch { registered: Alg, header: Alg },
    #[error("no key of the issuer is for {0}")]
    NoKeyForAlg(Alg),
    #[error("the issuer has more than one key for {0}; the token must name its kid")]
    Ambiguous(Alg),
}

/// An issuer's usable keys: by `kid` (a key without one is known by its RFC 7638
/// thumbprint), and in document order for a lookup without `kid`.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Arc<VerifyingKey>>,
    by_kid: HashMap<String, usize>,
}

/// Two sets are equal when they hold the same public keys under the same kids and algorithms.
impl PartialEq for KeySet {
    fn eq(&self, other: &Self) -> bool {
        let ids = |s: &KeySet| {
            let mut v: Vec<(String, Alg, String)> =
                s.keys.iter().map(|k| (k.kid().to_string(), k.alg(), k.thumbprint().to_string())).collect();
            v.sort_by(|a, b| (&a.0, a.1.as_str(), &a.2).cmp(&(&b.0, b.1.as_str(), &b.2)));
            v
        };
        ids(self) == ids(other)
    }
}

impl KeySet {
    /// Every key, and no two with one kid (`Err` names the kid).
    pub fn from_keys(keys: Vec<VerifyingKey>) -> Result<KeySet, String> {
        let mut set = KeySet::default();
        for key in keys {
            if set.by_kid.contains_key(key.kid()) {
                return Err(key.kid().to_string());
            }
            set.by_kid.insert(key.kid().to_string(), set.keys.len());
            set.keys.push(Arc::new(key));
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &Arc<VerifyingKey>> {
        self.keys.iter()
    }

    /// The key that must verify a JWS: by `kid` (its algorithm must equal the header's), or
    /// without `kid` the only key for the header's algorithm.
    pub fn lookup(&self, kid: Option<&str>, alg: Alg) -> Result<Arc<VerifyingKey>, LookupError> {
        match kid {
            Some(kid) => {
                let key = self.by_kid.get(kid).map(|&i| &self.keys[i]).ok_or(LookupError::UnknownKid)?;
                if key.alg() != alg {
                    return Err(LookupError::AlgMismatch { registered: key.alg(), header: alg });
                }
                Ok(key.clone())
            }
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.alg() == alg);
                match (fitting.next(), fitting.next()) {
                    (Some(k), None) => Ok(k.clone()),
                    (None, _) => Err(LookupError::NoKeyForAlg(alg)),
                    (Some(_), Some(_)) => Err(LookupError::Ambiguous(alg)),
                }
            }
        }
    }
}

/// A fetched JWKS: its usable keys, and one line per key that was skipped.
#[derive(Debug)]
pub struct ParsedJwks {
    pub keys: KeySet,
    pub skipped: Vec<String>,
}

/// Parse a fetched JWK Set. `Err` when the document is not a JWK Set or has no usable key.
///
/// A kid that two different keys claim is ambiguous: neither is kept (the same key listed
/// twice is kept once).
pub fn parse_jwks(body: &[u8], algorithms: &[Alg]) -> Result<ParsedJwks, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let list = match doc.get("keys") {
        Some(Value::Array(list)) => list,
        _ => return Err("not a JWK Set: no `keys` array (RFC 7517 section 5)".into()),
    };
    let mut skipped = Vec::new();
    let mut accepted: Vec<VerifyingKey> = Vec::with_capacity(list.len());
    for (n, item) in list.iter().enumerate() {
        let Value::Object(jwk) = item else {
            skipped.push(format!("key #{}: not a JSON object", n + 1));
            continue;
        };
        match parse_jwk(jwk, algorithms) {
            Ok(key) => accepted.push(key),
            Err(why) => skipped.push(format!("key #{} {}: {why}", n + 1, shown_kid(jwk))),
        }
    }
    // One kid, one key: drop every key of a kid that names two different keys.
    let mut conflicting: Vec<String> = Vec::new();
    let mut unique: Vec<VerifyingKey> = Vec::with_capacity(accepted.len());
    for key in accepted {
        match unique.iter().find(|k| k.kid() == key.kid()) {
            Some(k) if k.thumbprint() == key.thumbprint() && k.alg() == key.alg() => {}
            Some(_) => {
                if !conflicting.iter().any(|c| c == key.kid()) {
                    conflicting.push(key.kid().to_string());
                }
            }
            None => unique.push(key),
        }
    }
    for kid in &conflicting {
        unique.retain(|k| k.kid() != kid);
        skipped.push(format!("kid {}: names two different keys; neither is used", sanitize(kid)));
    }
    if unique.is_empty() {
        let why = if skipped.is_empty() { "the set is empty".to_string() } else { skipped.join("; ") };
        return Err(format!("no usable key: {why}"));
    }
    let keys = KeySet::from_keys(unique).map_err(|kid| format!("kid {} twice", sanitize(&kid)))?;
    Ok(ParsedJwks { keys, skipped })
}

/// One public JWK ▶ a verifying key pinned to an algorithm of `algorithms`, or why not.
///
/// `use` must be absent or "sig", `key_ops` (if any) must include "verify", no private
/// members, a supported key type and curve. The algorithm is the key's `alg`; without one,
/// the only algorithm its curve allows, and for RSA the issuer's RSA algorithm when
/// `algorithms` names exactly one (RS256 and PS256 share keys; the broker never guesses).
pub fn parse_jwk(jwk: &JsonObject, algorithms: &[Alg]) -> Result<VerifyingKey, String> {
    match jwk.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(Value::String(u)) => return Err(format!("use is {} (not sig)", sanitize(u))),
        Some(_) => return Err("use is not a string".into()),
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verify = ops.as_array().is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !verify {
            return Err("key_ops does not include verify".into());
        }
    }
    let mut pinned: Option<JsonObject> = None;
    match jwk.get("alg") {
        Some(Value::String(a)) => {
            let alg: Alg = a.parse().map_err(|_| format!("alg {} is not accepted", sanitize(a)))?;
            if !algorithms.contains(&alg) {
                return Err(format!("alg {alg} is not among this issuer's algorithms"));
            }
        }
        Some(_) => return Err("alg is not a string".into()),
        None if jwk.get("kty").and_then(Value::as_str) == Some("RSA") => {
            let mut rsa = algorithms.iter().filter(|a| a.key_type() == "RSA");
            match (rsa.next(), rsa.next()) {
                (Some(alg), None) => {
                    let mut copy = jwk.clone();
                    copy.insert("alg".into(), Value::String(alg.as_str().into()));
                    pinned = Some(copy);
                }
                _ => {
                    return Err("an RSA key without alg is used only when the issuer's algorithms name exactly one RSA algorithm".into())
                }
            }
        }
        None => {}
    }
    let key = VerifyingKey::from_jwk(pinned.as_ref().unwrap_or(jwk)).map_err(|e| e.to_string())?;
    if !algorithms.contains(&key.alg()) {
        return Err(format!("alg {} is not among this issuer's algorithms", key.alg()));
    }
    Ok(key)
}

fn shown_kid(jwk: &JsonObject) -> String {
    match jwk.get("kid") {
        Some(Value::String(k)) => format!("(kid {})", sanitize(k)),
        _ => "(no kid)".into(),
    }
}

/// A remote string fit for a log line: at most 64 printable ASCII characters.
pub(crate) fn sanitize(s: &str) -> String {
    s.chars().take(64).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::generate_key_pair;
    use serde_json::json;

    fn jwk(alg: Alg, kid: &str) -> JsonObject {
        generate_key_pair(alg, Some(kid)).expect("gen").public_jwk
    }

    fn set(keys: Vec<JsonObject>) -> Vec<u8> {
        json!({ "keys": keys }).to_string().into_bytes()
    }

    #[test]
    fn lookup_by_kid_and_by_alg() {
        let body = set(vec![jwk(Alg::ES256, "e1"), jwk(Alg::RS256, "r1"), jwk(Alg::RS256, "r2")]);
        let p = parse_jwks(&body, &[Alg::ES256, Alg::RS256]).expect("parse");
        assert!(p.skipped.is_empty());
        let k = p.keys;
        assert_eq!(k.lookup(Some("e1"), Alg::ES256).expect("e1").kid(), "e1");
        assert_eq!(
            k.lookup(Some("e1"), Alg::RS256).unwrap_err(),
            LookupError::AlgMismatch { registered: Alg::ES256, header: Alg::RS256 }
        );
        assert_eq!(k.lookup(Some("nope"), Alg::ES256).unwrap_err(), LookupError::UnknownKid);
        assert_eq!(k.lookup(None, Alg::ES256).expect("only ES256").kid(), "e1");
        assert_eq!(k.lookup(None, Alg::RS256).unwrap_err(), LookupError::Ambiguous(Alg::RS256));
        assert_eq!(k.lookup(None, Alg::PS256).unwrap_err(), LookupError::NoKeyForAlg(Alg::PS256));
    }

    #[test]
    fn keys_not_for_signatures_or_with_private_members_are_skipped() {
        let mut enc = jwk(Alg::ES256, "enc");
        enc.insert("use".into(), json!("enc"));
        let mut private = jwk(Alg::ES256, "priv");
        private.insert("d".into(), json!("AAAA"));
        let mut wrap = jwk(Alg::ES256, "wrap");
        wrap.insert("key_ops".into(), json!(["wrapKey"]));
        let oct = json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}).as_object().cloned().expect("obj");
        let mut hs = jwk(Alg::ES256, "hs");
        hs.insert("alg".into(), json!("HS256"));
        let body = set(vec![enc, private, wrap, oct, hs, jwk(Alg::ES256, "good")]);
        let p = parse_jwks(&body, &[Alg::ES256]).expect("parse");
        assert_eq!(p.keys.len(), 1);
        assert_eq!(p.skipped.len(), 5, "{:?}", p.skipped);
        assert!(p.keys.lookup(Some("good"), Alg::ES256).is_ok());
        for kid in ["enc", "priv", "wrap", "hmac", "hs"] {
            assert_eq!(p.keys.lookup(Some(kid), Alg::ES256).unwrap_err(), LookupError::UnknownKid);
        }
        // No key material in the reasons.
        assert!(!p.skipped.join(" ").contains("AAAA"));
    }

    #[test]
    fn algorithms_outside_the_issuer_list_are_skipped() {
        let body = set(vec![jwk(Alg::ES384, "e384"), jwk(Alg::EdDSA, "ed"), jwk(Alg::ES256, "e256")]);
        let p = parse_jwks(&body, &[Alg::ES256]).expect("parse");
        assert_eq!(p.keys.len(), 1);
        assert_eq!(p.skipped.len(), 2);
    }

    /// RS256 and PS256 share RSA keys: without `alg`, only an issuer trusted with exactly one
    /// RSA algorithm gets that one (RFC 8725 section 3.1: one key, one algorithm).
    #[test]
    fn rsa_key_without_alg() {
        let mut bare = jwk(Alg::RS256, "r");
        bare.remove("alg");
        let body = set(vec![bare, jwk(Alg::ES256, "e")]);
        let p = parse_jwks(&body, &[Alg::PS256, Alg::ES256]).expect("parse");
        assert_eq!(p.keys.lookup(Some("r"), Alg::PS256).expect("pinned").alg(), Alg::PS256);
        assert!(p.keys.lookup(Some("r"), Alg::RS256).is_err());
        let p = parse_jwks(&body, &[Alg::RS256, Alg::PS256, Alg::ES256]).expect("parse");
        assert_eq!(p.keys.lookup(Some("r"), Alg::RS256).unwrap_err(), LookupError::UnknownKid);
        assert_eq!(p.skipped.len(), 1);
        // Only the RSA key, and it is unusable: the fetch fails.
        let mut bare = jwk(Alg::RS256, "r");
        bare.remove("alg");
        assert!(parse_jwks(&set(vec![bare]), &[Alg::RS256, Alg::PS256]).is_err());
    }

    #[test]
    fn conflicting_kids_are_dropped_identical_ones_kept_once() {
        let same = jwk(Alg::ES256, "same");
        let body = set(vec![
            same.clone(),
            same,
            jwk(Alg::ES256, "dup"),
            jwk(Alg::ES256, "dup"),
            jwk(Alg::ES256, "x"),
        ]);
        let p = parse_jwks(&body, &[Alg::ES256]).expect("parse");
        assert_eq!(p.keys.len(), 2);
        assert!(p.keys.lookup(Some("same"), Alg::ES256).is_ok());
        assert_eq!(p.keys.lookup(Some("dup"), Alg::ES256).unwrap_err(), LookupError::UnknownKid);
    }

    #[test]
    fn not_a_jwk_set_or_nothing_usable_fails() {
        assert!(parse_jwks(b"<html>", &[Alg::ES256]).is_err());
        assert!(parse_jwks(b"[]", &[Alg::ES256]).is_err());
        assert!(parse_jwks(br#"{"keys": {}}"#, &[Alg::ES256]).is_err());
        assert!(parse_jwks(br#"{"keys": []}"#, &[Alg::ES256]).is_err());
        assert!(parse_jwks(br#"{"keys": [1, "x"]}"#, &[Alg::ES256]).is_err());
        let body = set(vec![jwk(Alg::ES384, "e384")]);
        assert!(parse_jwks(&body, &[Alg::ES256]).is_err());
    }

    #[test]
    fn a_key_without_kid_is_known_by_its_thumbprint() {
        let mut k = jwk(Alg::ES256, "x");
        k.remove("kid");
        let tp = crate::crypto::thumbprint(&k).expect("tp");
        let p = parse_jwks(&set(vec![k]), &[Alg::ES256]).expect("parse");
        assert!(p.keys.lookup(Some(&tp), Alg::ES256).is_ok());
        assert!(p.keys.lookup(None, Alg::ES256).is_ok());
    }
}
