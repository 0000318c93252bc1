//! Property test of `act` nesting (RFC 8693 section 4.1: "the current actor ... prior actors
//! ... nested"), through `Broker::exchange` in process: one of our tokens carrying any prior
//! chain of actors is exchanged by the agent it was issued to (re-scoping it) or by the
//! operator of its audience (carrying it one hop further).
//!
//! * Every prior actor is kept, in order: the new chain is the old one with the new actor
//!   put in front, or the old one unchanged when the new actor is already the current one
//!   (re-scoping is not a new hop); the subject (`sub`) never changes.
//! * The chain is capped at `[chains] max_actors` (3 by default): a longer one is refused
//!   with `invalid_request` (RFC 8693 section 2.2.2), never truncated.

use crate::helpers::{
    agent, policy_toml, CLIENT_ASSERTION_TYPE, DOCS, GRANT_TOKEN_EXCHANGE, SVC_B, SVC_C, TICKETS,
    TT_ACCESS_TOKEN,
};
use agent_sts::broker::Broker;
use agent_sts::clock::{SharedClock, SystemClock};
use agent_sts::crypto::{b64url_encode, Alg, SigningKey};
use agent_sts::mint::{Act, MintSpec, TokenIssuer};
use agent_sts::policy::{Lifetimes, Policy};
use agent_sts::protocol::{ErrorCode, ScopeSet, TokenRequest};
use agent_sts::replay::{AnyReplayStore, MemoryStore};
use proptest::prelude::*;
use serde_json::json;
use std::sync::Arc;

const ISSUER: &str = "https://sts.props.test";
const NAMES: [&str; 5] = ["bot", "agent-a", "agent-b", "agent-c", "someone-else"];

pub fn broker() -> Broker {
    let policy = Policy::from_sources(&[("props.toml".into(), policy_toml())]).expect("policy");
    let clock: SharedClock = Arc::new(SystemClock);
    let key = SigningKey::generate(Alg::ES256).expect("key");
    let issuers = agent_sts::issuers::Issuers::new(&Default::default(), clock.clone(), &policy.issuers)
        .expect("issuers");
    let replay = Arc::new(AnyReplayStore::Memory(MemoryStore::new(100_000, clock.clone())));
    Broker {
        tokens: TokenIssuer::new(ISSUER.into(), key, vec![]).expect("issuer"),
        policy: Arc::new(policy),
        shared: Arc::new(agent_sts::broker::Shared::new(false, replay.clone(), clock.clone())),
        replay,
        issuers: Arc::new(issuers),
        rules: agent_sts::startup::assertion_rules(ISSUER, &Default::default()),
        lifetimes: Lifetimes { default_secs: 300, max_secs: 3600 },
        clock,
    }
}

pub fn assertion(agent_id: &str, now: i64) -> String {
    let k = &agent(agent_id).keys[0];
    let mut header = json!({"alg": k.key.alg().as_str(), "typ": "JWT"});
    if let Some(kid) = &k.kid {
        header["kid"] = json!(kid);
    }
    let claims = json!({"iss": agent_id, "sub": agent_id, "aud": ISSUER, "iat": now, "exp": now + 60,
        "jti": agent_sts::crypto::random_id()});
    k.key
        .sign_compact(&b64url_encode(header.to_string().as_bytes()), claims.to_string().as_bytes())
        .expect("sign")
}

fn chain(names: &[usize]) -> Option<Act> {
    names.iter().rev().fold(None, |inner, &n| Some(Act { sub: NAMES[n].into(), act: inner.map(Box::new) }))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn rfc8693_4_1_act_nesting_keeps_every_prior_actor(prior in proptest::collection::vec(0usize..NAMES.len(), 0..4), carry in any::<bool>()) {
        thread_local! {
            static B: (Broker, tokio::runtime::Runtime) =
                (broker(), tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt"));
        }
        B.with(|(broker, rt)| {
            let now = broker.clock.now_secs();
            // Re-scope: bot's own token for docs, bot exchanges it for tickets. Carry: agent-a's
            // token for svc-b, which agent-b operates and carries on to svc-c.
            let (client, aud, actor, to, scope, entitlement) = if carry {
                ("agent-a", SVC_B, "agent-b", SVC_C, "ask", "agent:agent-b")
            } else {
                ("bot", DOCS, "bot", TICKETS, "read", "agent:bot")
            };
            let prior_act = chain(&prior);
            let scopes = ScopeSet::parse(scope).expect("scope");
            let subject = broker.tokens.mint(&MintSpec {
                sub: "user-1", aud, client_id: client, scopes: &scopes, iat: now, exp: now + 300,
                act: prior_act.as_ref(), entitlement: Some(entitlement),
            }).expect("mint").token;
            let body = form_urlencoded::Serializer::new(String::new()).extend_pairs([
                ("grant_type", GRANT_TOKEN_EXCHANGE),
                ("subject_token", subject.as_str()),
                ("subject_token_type", TT_ACCESS_TOKEN),
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_assertion", assertion(actor, now).as_str()),
                ("resource", to),
            ]).finish();
            let req = TokenRequest::parse(body.as_bytes(), false).expect("parses");
            let outcome = rt.block_on(broker.exchange(&req));

            let before: Vec<String> = prior_act.as_ref().map(Act::chain).unwrap_or_default();
            let expected: Vec<String> = match before.first() {
                Some(current) if current == actor => before.clone(),
                _ => std::iter::once(actor.to_string()).chain(before.iter().cloned()).collect(),
            };
            match outcome {
                Ok(issued) => {
                    prop_assert!(expected.len() <= 3, "a chain of {} actors was issued", expected.len());
                    prop_assert_eq!(&issued.actors, &expected);
                    prop_assert!(issued.actors.ends_with(&before));
                    prop_assert_eq!(issued.sub.as_str(), "user-1");
                    let own = broker.tokens.verify_own(&issued.response.access_token, now).expect("ours");
                    prop_assert_eq!(own.act.as_ref().map(Act::chain).unwrap_or_default(), expected);
                }
                Err(e) => {
                    prop_assert!(expected.len() > 3, "refused: {}", e.description);
                    prop_assert_eq!(e.code, ErrorCode::InvalidRequest);
                    prop_assert!(e.description.contains("act chain"), "{}", e.description);
                }
            }
            Ok(())
        })?;
    }
}
