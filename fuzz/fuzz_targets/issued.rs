//! A trusted issuer's token (a CI platform's OIDC token, a user's token, an ID-JAG) through
//! `client_auth::verify_issued`: the checklist with the issuer's inline keys, then the
//! single-use spend (memory store, fixed clock). Invariants:
//! * no panic; every refusal's `error_description` is within the RFC 6749 section 5.2 set;
//! * nothing is accepted unless its signature verifies (independently, jsonwebtoken) under
//!   a key of the trusted issuer its `iss` names, byte for byte; a token the harness signed
//!   is accepted only with that issuer's key;
//! * what is accepted says, read leniently: `aud` exactly the issuer's audience, `exp` not
//!   past (skew 60 s), `nbf`/`iat` not ahead (skew 5 s), `iat` within the issuer's maximum
//!   age, `typ` one of the accepted set for the use;
//! * a single-use issuer's token (and every ID-JAG) is refused as replayed the second time.
//!
//! Input: `[use][JwtInput]`; use selects the typ rule: a platform or user token
//! (`ISSUED_TOKEN`), an ID token (`ID_TOKEN`), an ID-JAG (`ID_JAG`).
#![no_main]

use agent_sts::client_auth::{verify_issued, AuthError, IssuedRules, Presented, Role, Skew, TypRule};
use agent_sts_fuzz::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&purpose, rest)) = data.split_first() else { return };
    let Some(input) = JwtInput::decode(rest) else { return };
    let (token, signed_by) = input.token();
    let (typ, accepted_typ): (TypRule, &[&str]) = match purpose % 3 {
        0 => (TypRule::ISSUED_TOKEN, &["", "jwt", "at+jwt"]),
        1 => (TypRule::ID_TOKEN, &["", "jwt"]),
        _ => (TypRule::ID_JAG, &["oauth-id-jag+jwt"]),
    };
    let id_jag = typ == TypRule::ID_JAG;
    let f = fixture();
    let rules =
        IssuedRules { typ, default_audience: ISSUER, skew: Skew { past_secs: 60, future_secs: 5 }, id_jag };
    let store = fresh_store();
    let issued =
        match block_on(verify_issued(Presented::parse(&token), &f.policy, &f.issuers, &rules, &store, NOW)) {
            Ok(t) => t,
            Err(e) => {
                trace(format_args!("refused: {e}"));
                for role in [Role::Grant, Role::SubjectToken] {
                    assert_description_charset(&e.to_oauth(role));
                }
                return;
            }
        };
    let iss = issued.config.issuer.as_str();
    trace(format_args!("accepted: {iss}"));
    let keys = keys_trusted_for(iss);
    assert!(
        keys.iter().any(|k| signature_verifies(&token, k)),
        "accepted without a valid signature of {iss}"
    );
    if let (Some(k), JwtInput::Signed { damage: None, .. }) = (signed_by, &input) {
        assert_eq!(k.trusted_for(), Some(iss), "accepted with the key of {}", k.key().name);
    }

    let (header, claims) = lenient_parts(&token).expect("an accepted token is readable JSON");
    assert_eq!(claims.get("iss").and_then(|v| v.as_str()), Some(iss));
    let audience = if id_jag { ISSUER } else { issued.config.audience.as_deref().unwrap_or(ISSUER) };
    assert!(aud_is_exactly(&claims, audience), "aud {:?}", claims.get("aud"));
    let exp = numeric(&claims, "exp").expect("exp");
    assert!(exp >= NOW - 60, "exp {exp}");
    for name in ["nbf", "iat"] {
        if let Some(t) = numeric(&claims, name) {
            assert!(t <= NOW + 5, "{name} {t} in the future");
        }
    }
    if let Some(age) = issued.config.max_token_age_secs {
        let iat = numeric(&claims, "iat").expect("iat, which the maximum age needs");
        assert!(NOW - iat <= age as i64 + 60, "iat {iat} too old");
    }
    let typ_seen = header.get("typ").map(|t| t.as_str().expect("typ is a string").to_ascii_lowercase());
    let bare = typ_seen.as_deref().map(|t| t.strip_prefix("application/").unwrap_or(t)).unwrap_or("");
    assert!(accepted_typ.contains(&bare), "typ {typ_seen:?} accepted for {typ:?}");
    if id_jag {
        let jti = claims.get("jti").and_then(|v| v.as_str()).expect("an ID-JAG has a jti");
        assert!(!jti.is_empty() && jti.len() <= 256);
    }

    let again = block_on(verify_issued(Presented::parse(&token), &f.policy, &f.issuers, &rules, &store, NOW));
    if issued.config.single_use || id_jag {
        assert!(matches!(again, Err(AuthError::Replayed)), "a single-use token twice: {again:?}");
    } else {
        assert!(again.is_ok(), "a reusable token refused the second time: {again:?}");
    }
});
