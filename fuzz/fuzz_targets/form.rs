//! The token request form parser (`protocol::TokenRequest::parse`, RFC 6749 section 3.2) on
//! any bytes. Invariants:
//! * no panic; every refusal's `error_description` is within the RFC 6749 section 5.2 set;
//! * a request that parses holds exactly the single-valued parameters the form carried
//!   (compared with an independent `form_urlencoded` reading), and re-encoding what it holds
//!   parses to the same request (round trip);
//! * a single-valued parameter that occurs twice never parses: not in the input (checked on
//!   the independent reading), and not when a duplicate of any of them is appended;
//! * with `Authorization: Basic`, nothing parses.
#![no_main]

use agent_sts::protocol::{ErrorCode, GrantRequest, TokenRequest};
use agent_sts_fuzz::assert_description_charset;
use libfuzzer_sys::fuzz_target;

const SINGLE: [&str; 12] = [
    "grant_type",
    "client_assertion_type",
    "client_assertion",
    "client_id",
    "client_secret",
    "assertion",
    "scope",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "requested_token_type",
];

/// What a parsed request holds, as form pairs (in a fixed order).
fn canonical(r: &TokenRequest) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut push = |k: &str, v: &str| out.push((k.to_string(), v.to_string()));
    push("grant_type", r.grant.name());
    match &r.grant {
        GrantRequest::ClientCredentials => {}
        GrantRequest::JwtBearer { assertion } => push("assertion", &assertion.0),
        GrantRequest::TokenExchange { subject, actor, requested_token_type } => {
            push("subject_token", &subject.token);
            push("subject_token_type", subject.token_type.urn());
            if let Some(a) = actor {
                push("actor_token", &a.token);
                push("actor_token_type", a.token_type.urn());
            }
            if let Some(t) = requested_token_type {
                push("requested_token_type", t.urn());
            }
        }
    }
    if let Some(a) = &r.client_assertion {
        push("client_assertion_type", agent_sts::protocol::ASSERTION_TYPE_JWT_BEARER);
        push("client_assertion", &a.0);
    }
    if let Some(c) = &r.client_id {
        push("client_id", c);
    }
    if let Some(s) = &r.scope {
        push("scope", &s.to_string());
    }
    for v in &r.resources {
        push("resource", v);
    }
    for v in &r.audiences {
        push("audience", v);
    }
    out
}

fn encode(pairs: &[(String, String)]) -> Vec<u8> {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish().into_bytes()
}

fuzz_target!(|data: &[u8]| {
    let raw: Vec<(String, String)> =
        form_urlencoded::parse(data).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let values =
        |name: &str| raw.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
    let repeated = SINGLE.iter().any(|n| values(n).len() > 1);

    if let Err(e) = TokenRequest::parse(data, true) {
        assert_description_charset(&e);
    } else {
        panic!("parsed with Authorization: Basic");
    }

    let req = match TokenRequest::parse(data, false) {
        Ok(r) => r,
        Err(e) => {
            assert_description_charset(&e);
            if repeated {
                assert_eq!(e.code, ErrorCode::InvalidRequest, "a repeated parameter is invalid_request");
            }
            return;
        }
    };
    assert!(!repeated, "a form with a repeated single-valued parameter parsed");

    // What it holds is what the form said (RFC 6749 section 3.1: empty means omitted).
    let one = |name: &str| values(name).first().copied().filter(|v| !v.is_empty()).map(str::to_string);
    assert_eq!(Some(req.grant.name().to_string()), one("grant_type"));
    assert_eq!(req.client_id, one("client_id"));
    assert_eq!(req.client_assertion.as_ref().map(|a| a.0.clone()), one("client_assertion"));
    assert!(one("client_secret").is_none(), "a client secret was accepted");
    match &req.grant {
        GrantRequest::ClientCredentials => {}
        GrantRequest::JwtBearer { assertion } => assert_eq!(Some(assertion.0.clone()), one("assertion")),
        GrantRequest::TokenExchange { subject, actor, requested_token_type } => {
            assert_eq!(Some(subject.token.clone()), one("subject_token"));
            assert_eq!(Some(subject.token_type.urn().to_string()), one("subject_token_type"));
            assert_eq!(actor.as_ref().map(|a| a.token.clone()), one("actor_token"));
            assert_eq!(actor.as_ref().map(|a| a.token_type.urn().to_string()), one("actor_token_type"));
            assert_eq!(requested_token_type.map(|t| t.urn().to_string()), one("requested_token_type"));
        }
    }
    let multi = |name: &str| {
        values(name).into_iter().filter(|v| !v.is_empty()).map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(req.resources, multi("resource"));
    assert_eq!(req.audiences, multi("audience"));
    match (&req.scope, one("scope")) {
        (None, None) => {}
        (None, Some(s)) => assert!(s.split(' ').all(str::is_empty), "scope {s:?} dropped"),
        (Some(parsed), Some(s)) => {
            let mut words: Vec<&str> = s.split(' ').filter(|w| !w.is_empty()).collect();
            words.sort();
            words.dedup();
            assert_eq!(parsed.to_string(), words.join(" "));
        }
        (Some(_), None) => panic!("a scope from nowhere"),
    }

    // Round trip: what it holds, re-encoded, parses to the same.
    let pairs = canonical(&req);
    let again = TokenRequest::parse(&encode(&pairs), false).expect("a re-encoded request parses");
    assert_eq!(canonical(&again), pairs);

    // A duplicate of any single-valued parameter never parses (RFC 6749 section 3.2).
    for name in SINGLE {
        let mut body = data.to_vec();
        body.extend_from_slice(format!("&{name}=x").as_bytes());
        if !values(name).is_empty() {
            let e = TokenRequest::parse(&body, false).expect_err("a duplicate parsed");
            assert_eq!(e.code, ErrorCode::InvalidRequest);
        }
    }
});
