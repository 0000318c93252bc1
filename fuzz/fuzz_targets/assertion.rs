//! An agent's client assertion through the whole RFC 7523 checklist and the replay spend
//! (`client_auth::verify`, memory store, fixed clock), on raw token text or on any header
//! and payload bytes signed by one of the fixed keys (registered or not) and then perhaps
//! damaged at one byte. Invariants:
//! * no panic; every refusal's `error_description` is within the RFC 6749 section 5.2 set;
//! * nothing is accepted unless its signature verifies (checked independently, with
//!   jsonwebtoken's RustCrypto verifier) under a key registered for the agent it names, and a
//!   token the harness signed is accepted only when its key is that agent's;
//! * what is accepted says, read leniently: `iss` = `sub` = the agent, `aud` exactly our
//!   issuer, `exp` within the skews and the lifetime cap, a `jti` of 1-256 bytes, `alg` the
//!   key's, none of `crit`, `cty`, `jku`, `jwk`, `x5u`, `x5c`;
//! * the same assertion a second time is refused as replayed.
#![no_main]

use agent_sts::client_auth::{verify, AuthError, Presented, Role};
use agent_sts_fuzz::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let Some(input) = JwtInput::decode(rest) else { return };
    let (token, signed_by) = input.token();
    let f = fixture();
    let store = fresh_store();
    // The form's client_id (RFC 7521 section 4.2): absent, the signer's agent, or another.
    let client_id = match flags % 3 {
        0 => None,
        1 => signed_by.and_then(K::trusted_for),
        _ => Some("agent-b"),
    };
    let verified =
        match block_on(verify(Presented::parse(&token), client_id, &f.policy, &f.rules, &store, NOW)) {
            Ok(v) => v,
            Err(e) => {
                trace(format_args!("refused: {e}"));
                for role in [Role::ClientAuth, Role::Grant, Role::SubjectToken, Role::ActorToken] {
                    assert_description_charset(&e.to_oauth(role));
                }
                return;
            }
        };
    let agent = verified.agent.id.as_str();
    trace(format_args!("accepted: {agent}"));

    // Signed by a key registered for this agent: independently verified.
    let keys = keys_trusted_for(agent);
    assert!(
        keys.iter().any(|k| signature_verifies(&token, k)),
        "accepted without a valid signature of {agent}"
    );
    if let (Some(k), JwtInput::Signed { damage: None, .. }) = (signed_by, &input) {
        assert_eq!(k.trusted_for(), Some(agent), "accepted with the key of {:?}", k.key().name);
    }
    if let Some(c) = client_id {
        assert_eq!(c, agent, "client_id differs from the agent");
    }

    // The claims and header, read leniently, say what the checklist requires.
    let (header, claims) = lenient_parts(&token).expect("an accepted token is readable JSON");
    assert_eq!(claims.get("iss").and_then(|v| v.as_str()), Some(agent));
    assert_eq!(claims.get("sub").and_then(|v| v.as_str()), Some(agent));
    assert!(aud_is_exactly(&claims, ISSUER), "aud {:?}", claims.get("aud"));
    let exp = numeric(&claims, "exp").expect("exp");
    assert!(exp >= NOW - 60 && exp <= NOW + 305, "exp {exp}");
    assert_eq!(exp, verified.exp);
    for name in ["nbf", "iat"] {
        if let Some(t) = numeric(&claims, name) {
            assert!(t <= NOW + 5, "{name} {t} in the future");
        }
    }
    let jti = claims.get("jti").and_then(|v| v.as_str()).expect("jti");
    assert!(!jti.is_empty() && jti.len() <= 256);
    assert_eq!(jti, verified.jti);
    let alg = header.get("alg").and_then(|v| v.as_str()).expect("alg");
    assert!(keys.iter().any(|k| k.alg.as_str() == alg));
    if let Some(typ) = header.get("typ") {
        let t = typ.as_str().expect("typ is a string").to_ascii_lowercase();
        let bare = t.strip_prefix("application/").unwrap_or(&t);
        assert!(bare == "jwt" || bare == "client-authentication+jwt", "typ {t:?}");
    }
    for name in ["crit", "cty", "jku", "jwk", "x5u", "x5c", "b64", "zip"] {
        assert!(header.get(name).is_none(), "accepted a header with {name}");
    }

    // RFC 7523 section 3 item 7: a second use is refused.
    let again = block_on(verify(Presented::parse(&token), client_id, &f.policy, &f.rules, &store, NOW));
    assert!(matches!(again, Err(AuthError::Replayed)), "a replayed assertion: {again:?}");
});
