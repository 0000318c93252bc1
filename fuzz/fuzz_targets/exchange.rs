//! Token exchange (RFC 8693) and the jwt-bearer grant (RFC 7523 section 2.1) end to end in
//! process: form ▶ `TokenRequest::parse` ▶ `Broker::exchange` (memory replay store, fixed
//! clock, inline issuer keys), with a `subject_token` (or `assertion`) built from the input:
//! one of our access tokens, a CI platform's token, a user's token from the IdP, an ID-JAG,
//! an agent's own assertion, or anything else, signed by any fixed key and perhaps damaged.
//! The client assertion and `actor_token` are valid assertions of registered agents (or
//! absent), chosen by the input. Invariants:
//! * no panic; every refusal's `error_description` is within the RFC 6749 section 5.2 set;
//! * a token is issued only if the subject verifies (independently, jsonwebtoken) under a key
//!   trusted for its `iss` (our key for our tokens, the issuer's keys, the agent's key), and a
//!   subject the harness signed only with such a key;
//! * the issued token verifies as ours and says what the response says; its `sub` is the
//!   subject's `sub`; its scopes are within the requested scope and within its agent's
//!   allowance on its audience;
//! * exchanging one of our tokens never widens or lengthens it (scopes within the subject's,
//!   `exp` not later) and keeps every prior actor (RFC 8693 section 4.1: the subject's `act`
//!   chain is the end of the new one);
//! * the same request a second time is refused (every path spends a single-use credential).
#![no_main]

use agent_sts::mint::Act;
use agent_sts::protocol::{ScopeSet, TokenRequest};
use agent_sts_fuzz::*;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use std::sync::OnceLock;

/// SDK-shaped assertions (no kid, typ JWT, 300 s) of agent-es256 and agent-b, one jti each per
/// use: a client assertion and an actor token are distinct credentials.
fn assertion(agent: K, jti: &str) -> String {
    let id = agent.trusted_for().expect("an agent key");
    let claims = json!({"iss": id, "sub": id, "aud": ISSUER, "iat": NOW, "exp": NOW + 300, "jti": jti});
    sign_json(agent, &json!({"alg": agent.key().alg.as_str(), "typ": "JWT"}), &claims)
}

struct Assertions {
    client: [String; 3],
    actor: [String; 2],
}

fn assertions() -> &'static Assertions {
    static A: OnceLock<Assertions> = OnceLock::new();
    A.get_or_init(|| Assertions {
        client: [
            assertion(K::AgentEs256, "client-1"),
            assertion(K::AgentB, "client-1"),
            assertion(K::AgentEs384, "client-1"),
        ],
        actor: [assertion(K::AgentEs256, "actor-1"), assertion(K::AgentB, "actor-1")],
    })
}

fn pick<'a>(options: &[&'a str], b: u8) -> &'a str {
    options[usize::from(b) % options.len()]
}

fn act_chain(v: Option<&Value>) -> Vec<String> {
    v.and_then(|a| serde_json::from_value::<Act>(a.clone()).ok()).map(|a| a.chain()).unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let [grant, subject_type, client, actor, target, scope, requested, rest @ ..] = data else { return };
    let Some(input) = JwtInput::decode(rest) else { return };
    let (subject, signed_by) = input.token();
    let a = assertions();
    let token_exchange = grant % 4 != 3;

    let mut form: Vec<(&str, &str)> = Vec::new();
    if token_exchange {
        form.push(("grant_type", GRANT_TOKEN_EXCHANGE));
        form.push(("subject_token", &subject));
        let types = [
            TT_ACCESS_TOKEN,
            TT_JWT,
            TT_ID_TOKEN,
            "urn:ietf:params:oauth:token-type:refresh_token",
            "urn:ietf:params:oauth:token-type:saml2",
        ];
        form.push(("subject_token_type", pick(&types, *subject_type)));
        match actor % 4 {
            1 => form.extend([("actor_token", a.actor[0].as_str()), ("actor_token_type", TT_JWT)]),
            2 => form.extend([("actor_token", a.actor[1].as_str()), ("actor_token_type", TT_JWT)]),
            3 => form.extend([("actor_token", a.actor[0].as_str()), ("actor_token_type", TT_ACCESS_TOKEN)]),
            _ => {}
        }
        match requested % 4 {
            1 => form.push(("requested_token_type", TT_ACCESS_TOKEN)),
            2 => form.push(("requested_token_type", TT_JWT)),
            3 => form.push(("requested_token_type", TT_ID_TOKEN)),
            _ => {}
        }
    } else {
        form.push(("grant_type", GRANT_JWT_BEARER));
        form.push(("assertion", &subject));
    }
    if client % 4 != 0 {
        form.push(("client_assertion_type", ASSERTION_TYPE));
        form.push(("client_assertion", &a.client[usize::from(client % 4) - 1]));
    }
    match target % 8 {
        1 => form.push(("resource", DOCS)),
        2 => form.push(("resource", TICKETS)),
        3 => form.push(("resource", SVC_B)),
        4 => form.push(("audience", "docs")),
        5 => form.push(("audience", "svc-b")),
        6 => form.extend([("resource", DOCS), ("audience", "tickets")]),
        7 => form.push(("resource", "https://unknown.mcp.fuzz/mcp")),
        _ => {}
    }
    let scope = pick(&["", "read", "read write", "ask", "write admin", "read ask"], *scope);
    if !scope.is_empty() {
        form.push(("scope", scope));
    }
    let mut body = form_urlencoded::Serializer::new(String::new());
    body.extend_pairs(form.iter());
    let body = body.finish();

    let broker = broker();
    let req = match TokenRequest::parse(body.as_bytes(), false) {
        Ok(r) => r,
        Err(e) => {
            trace(format_args!("form refused: {:?} {}", e.code, e.description));
            return assert_description_charset(&e);
        }
    };
    let issued = match block_on(broker.exchange(&req)) {
        Ok(i) => i,
        Err(e) => {
            trace(format_args!("refused: {:?} {}", e.code, e.description));
            return assert_description_charset(&e);
        }
    };
    trace(format_args!(
        "issued: sub {} aud {} scope {} act {:?}",
        issued.sub, issued.aud, issued.response.scope, issued.actors
    ));

    // The subject was signed by a key trusted for its iss.
    let (_, claims) = lenient_parts(&subject).expect("an accepted subject is readable JSON");
    let iss = claims.get("iss").and_then(Value::as_str).expect("an accepted subject has an iss");
    let trusted = keys_trusted_for(iss);
    assert!(
        trusted.iter().any(|k| signature_verifies(&subject, k)),
        "a token for a subject not signed for {iss}"
    );
    if let (Some(k), JwtInput::Signed { damage: None, .. }) = (signed_by, &input) {
        assert_eq!(k.trusted_for(), Some(iss), "a subject signed by {} accepted", k.key().name);
    }

    // The issued token is ours and says what the response says.
    let own =
        broker.tokens.verify_own(&issued.response.access_token, NOW).expect("the issued token verifies");
    assert_eq!((own.sub.as_str(), own.aud.as_str()), (issued.sub.as_str(), issued.aud.as_str()));
    assert_eq!(
        (own.client_id.as_str(), own.scope.as_str()),
        (issued.client_id.as_str(), issued.response.scope.as_str())
    );
    assert_eq!(Some(own.sub.as_str()), claims.get("sub").and_then(Value::as_str), "sub is not the subject's");
    if token_exchange {
        assert_eq!(issued.response.issued_token_type, Some(TT_ACCESS_TOKEN));
    }

    // Scopes: within the request and the agent's allowance on the audience.
    let scopes = ScopeSet::parse(&own.scope).expect("scope");
    assert!(!scopes.is_empty());
    if !scope.is_empty() {
        assert!(
            scopes.is_subset(&ScopeSet::parse(scope).expect("scope")),
            "{scopes} not requested ({scope})"
        );
    }
    let p = &broker.policy;
    let server = p.server_by_resource(&own.aud).expect("the audience is a server");
    let allowance =
        p.agent(&own.client_id).and_then(|a| a.allowance(server)).expect("the agent may reach it");
    assert!(scopes.is_subset(&allowance.scopes), "{scopes} beyond the allowance {}", allowance.scopes);

    // One of our tokens, exchanged: never wider, never longer, every prior actor kept.
    if iss == ISSUER {
        let subject_scopes =
            ScopeSet::parse(claims.get("scope").and_then(Value::as_str).unwrap_or("")).expect("scope");
        assert!(scopes.is_subset(&subject_scopes), "{scopes} wider than the subject's {subject_scopes}");
        assert!(own.exp <= numeric(&claims, "exp").expect("exp"), "outlives its subject");
        let prior = act_chain(claims.get("act"));
        let now = own.act.as_ref().map(Act::chain).unwrap_or_default();
        assert!(now.ends_with(&prior), "act chain {now:?} lost prior actors {prior:?}");
    }

    // Every path spent a single-use credential: the same request again is refused.
    let again = block_on(broker.exchange(&req));
    assert!(again.is_err(), "the same exchange succeeded twice");
});
