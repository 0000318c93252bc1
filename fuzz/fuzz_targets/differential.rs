//! Issue 13: whatever bytes come in, our JOSE decision agrees with an independent
//! implementation, `jsonwebtoken` 10 (RustCrypto: p256, p384, ed25519-dalek, rsa; serde_json
//! structs), about whether the signature verifies and whether the token is well-formed.
//!
//! Ours: `CompactJws::parse` (form, base64url, UTF-8, strict JSON, header rules, alg
//! allow-list) + `Claims::from_object` (registered claims typed, not null) + the key's alg
//! equals the header's + `VerifyingKey::verify`: the checklist's steps 1, 3, 4 and 5 with the
//! key given. Theirs: `jsonwebtoken::decode::<Value>` with the key's algorithm only and every
//! time, audience, issuer and required-claim check off (those are policy, compared by the
//! other targets, not JOSE).
//!
//! "Agree" means, exactly:
//! 1. we never accept what jsonwebtoken rejects, except where jsonwebtoken departs from the
//!    RFCs, computed here independently and listed in fuzz/README.md: its `Header` struct
//!    takes every member it does not know into `extras: HashMap<String, String>`, so it
//!    refuses a header whose unregistered member (or `url`, `nonce`) is not a string, while
//!    RFC 7515 section 4 says members that are not understood are ignored, whatever their
//!    value (found by this target);
//! 2. when jsonwebtoken accepts and the input has none of our documented extra strictness
//!    triggers, we accept too. The triggers, each computed here independently of our code
//!    (std's UTF-8 check, serde_json's own `Value` parser, a duplicate-name scan):
//!    - the token is longer than 8192 bytes (our size limit);
//!    - the decoded header or payload is not one JSON text that serde_json's `Value` parser
//!      reads (invalid UTF-8 or a lone surrogate escape inside a member jsonwebtoken skips);
//!    - a member name repeats in an object at any depth (RFC 7515 section 4, RFC 7519 section 4:
//!      jsonwebtoken keeps the last one of names it does not read into its structs);
//!    - the payload is not a JSON object (RFC 7519 section 7.2 step 10);
//!    - a registered header parameter is `null` (`alg`, `kid`, `typ`, `x5t`, `x5t#S256`,
//!      ...), or the header carries `crit`, `cty`, `jku`, `jwk`, `x5u`, `x5c`, `b64`, `zip`
//!      or `enc` (refused by rule: no extensions, no nested JWTs, keys only from the policy,
//!      no JWE);
//!    - a registered claim we read (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti`,
//!      `client_id`, `scope`, `act`, `may_act`, `auth_time`) is `null` or not of its type
//!      (NumericDates: a number within +-10^15 s).
//!
//! Any other disagreement fails the target: it is a bug on one side, to be decided by the
//! RFCs (see fuzz/README.md for what was found).
#![no_main]

use agent_sts::crypto::{b64url_decode, Claims, CompactJws};
use agent_sts_fuzz::*;
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

const MAX_LEN: usize = 8192;

fn ours(token: &str, key: &Key) -> bool {
    let Ok(jws) = CompactJws::parse(token, MAX_LEN) else { return false };
    jws.header.alg == key.alg
        && Claims::from_object(jws.payload).is_ok()
        && key.verifier.verify(jws.signing_input.as_bytes(), &jws.signature)
}

fn theirs(token: &[u8], key: &Key) -> Result<(), String> {
    let mut v = jsonwebtoken::Validation::new(jwt_alg(key.alg));
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    thread_local! {
        static DK: Vec<jsonwebtoken::DecodingKey> = keys().iter().map(decoding_key).collect();
    }
    DK.with(|dk| jsonwebtoken::decode::<Value>(token, &dk[usize::from(key.k.byte())], &v))
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

/// Whether any object in the JSON text repeats a member name (names compared after escapes
/// are decoded). `None`: not JSON serde_json reads.
fn has_duplicate(bytes: &[u8]) -> Option<bool> {
    struct Dup(bool);
    struct V<'a>(&'a mut Dup);
    impl<'de> Visitor<'de> for V<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Seed(&mut *self.0))?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut names = std::collections::HashSet::new();
            while let Some(name) = map.next_key::<String>()? {
                if !names.insert(name) {
                    self.0 .0 = true;
                }
                map.next_value_seed(Seed(&mut *self.0))?;
            }
            Ok(())
        }
    }
    struct Seed<'a>(&'a mut Dup);
    impl<'de> serde::de::DeserializeSeed<'de> for Seed<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(V(self.0))
        }
    }
    let mut dup = Dup(false);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde::de::DeserializeSeed::deserialize(Seed(&mut dup), &mut de).ok()?;
    de.end().ok()?;
    Some(dup.0)
}

/// The header members jsonwebtoken 10 reads into typed fields; any other must be a string
/// for it (`#[serde(flatten)] extras: HashMap<String, String>`).
const JSONWEBTOKEN_HEADER_FIELDS: [&str; 15] = [
    "typ", "alg", "cty", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "crit", "enc", "zip", "url",
    "nonce",
];

/// Whether jsonwebtoken's refusal is its own departure from RFC 7515 section 4: a header
/// member it does not know (or `url`/`nonce`) whose value is not a string.
fn jsonwebtoken_header_quirk(token: &str) -> bool {
    let Some(Ok(h)) = token.split('.').next().map(b64url_decode) else { return false };
    let Ok(Value::Object(header)) = serde_json::from_slice::<Value>(&h) else { return false };
    header.iter().any(|(name, v)| {
        let typed = JSONWEBTOKEN_HEADER_FIELDS.contains(&name.as_str()) && name != "url" && name != "nonce";
        !typed && !v.is_string()
    })
}

const HEADER_REFUSED: [&str; 9] = ["crit", "cty", "jku", "jwk", "x5u", "x5c", "b64", "zip", "enc"];
const HEADER_REGISTERED: [&str; 5] = ["alg", "kid", "typ", "x5t", "x5t#S256"];

fn claim_fits(name: &str, v: &Value) -> bool {
    match name {
        "aud" => v.is_string() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        "exp" | "nbf" | "iat" | "auth_time" => v.as_f64().is_some_and(|f| f.abs() < 1e15),
        "act" | "may_act" => v.is_object(),
        _ => v.is_string(),
    }
}

const CLAIMS: [&str; 12] =
    ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "client_id", "scope", "act", "may_act", "auth_time"];

/// Which of our documented extra strictness rules the token triggers (`None`: none).
fn strictness_trigger(token: &str) -> Option<String> {
    if token.len() > MAX_LEN {
        return Some("longer than 8192 bytes".into());
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p)) = (parts.next(), parts.next()) else { return None };
    let (Ok(h), Ok(p)) = (b64url_decode(h), b64url_decode(p)) else { return None };
    for (what, bytes) in [("header", &h), ("payload", &p)] {
        match has_duplicate(bytes) {
            None => return Some(format!("{what}: not JSON serde_json's Value parser reads")),
            Some(true) => return Some(format!("{what}: a duplicate member name")),
            Some(false) => {}
        }
    }
    let header: Value = serde_json::from_slice(&h).ok()?;
    let payload: Value = serde_json::from_slice(&p).ok()?;
    if let Some(name) = HEADER_REFUSED.iter().find(|n| header.get(**n).is_some()) {
        return Some(format!("header carries {name}"));
    }
    if let Some(name) = HEADER_REGISTERED.iter().find(|n| header.get(**n).is_some_and(Value::is_null)) {
        return Some(format!("header {name} is null"));
    }
    let Some(claims) = payload.as_object() else { return Some("payload is not an object".into()) };
    if let Some(name) = CLAIMS.iter().find(|n| claims.get(**n).is_some_and(|v| !claim_fits(n, v))) {
        return Some(format!("claim {name} is null or not of its type"));
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let key = K::from_byte(which).key();
    let Some(input) = JwtInput::decode(rest) else { return };
    let bytes: Vec<u8> = match &input {
        JwtInput::Raw(t) => t.to_vec(),
        JwtInput::Signed { .. } => input.token().0.into_bytes(),
    };
    let theirs = theirs(&bytes, key);
    let Ok(token) = std::str::from_utf8(&bytes) else {
        assert!(theirs.is_err(), "jsonwebtoken accepts a token that is not UTF-8");
        return;
    };
    let ours = ours(token, key);
    trace(format_args!("ours {ours}, theirs {theirs:?}, trigger {:?}", strictness_trigger(token)));
    if ours {
        if let Err(e) = &theirs {
            assert!(jsonwebtoken_header_quirk(token), "we accept what jsonwebtoken rejects ({e}): {token}");
        }
    } else if theirs.is_ok() {
        let trigger = strictness_trigger(token);
        assert!(
            trigger.is_some(),
            "jsonwebtoken accepts what we refuse, with no strictness rule to explain it: {token}"
        );
    }
});
