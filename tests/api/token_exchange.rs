//! `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693): an agent
//! re-scopes a token of ours for another server it may reach, or exchanges its own
//! assertion. Invalid subject/actor tokens are invalid_request (RFC 8693 §2.2.2).

use crate::helpers::*;
use serde_json::json;

async fn exchange(app: &TestApp, subject: &str, subject_type: &str, extra: &[(&str, &str)]) -> Reply {
    let mut p = vec![
        ("grant_type", GRANT_TOKEN_EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", subject_type),
    ];
    p.extend_from_slice(extra);
    app.post_token(&p).await
}

fn client_auth(a: &str) -> [(&str, &str); 2] {
    [("client_assertion_type", CLIENT_ASSERTION_TYPE), ("client_assertion", a)]
}

/// [`exchange`] with client authentication by a fresh assertion of `agent` (RFC 7523 §2.2).
async fn exchange_as(
    app: &TestApp,
    agent: &str,
    subject: &str,
    subject_type: &str,
    extra: &[(&str, &str)],
) -> Reply {
    let a = app.assertion(agent).sign();
    let mut p = client_auth(&a).to_vec();
    p.extend_from_slice(extra);
    exchange(app, subject, subject_type, &p).await
}

#[tokio::test]
async fn rescopes_our_token_for_another_server() {
    let app = TestApp::spawn().await;
    let subject = app.token_for("bot", DOCS, Some("read write")).await;
    let (_, subject_claims) = decode_unverified(&subject);
    let r = exchange_as(
        &app,
        "bot",
        &subject,
        TT_ACCESS_TOKEN,
        &[("resource", TICKETS), ("scope", "read write")],
    )
    .await;
    r.assert_ok();
    assert_eq!(r.body["issued_token_type"], TT_ACCESS_TOKEN);
    assert_eq!(r.body["token_type"], "Bearer");
    let (header, claims) = r.token_parts();
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(claims["aud"], TICKETS);
    assert_eq!(claims["sub"], "bot");
    assert_eq!(claims["client_id"], "bot");
    assert_eq!(claims["act"], json!({"sub": "bot"}), "the authenticated agent is the actor");
    assert_eq!(claims["scope"], "read write");
    assert!(claims["exp"].as_i64() <= subject_claims["exp"].as_i64(), "never outlives the subject token");
}

/// Scopes never wider than the subject token's (RFC 8693 §2.1 + policy): a scope the agent
/// may have on the target but the subject token lacks is not granted.
#[tokio::test]
async fn rfc8693_scope_never_wider_than_subject() {
    let app = TestApp::spawn().await;
    let subject = app.token_for("bot", DOCS, Some("read")).await;
    let r = exchange_as(
        &app,
        "bot",
        &subject,
        TT_ACCESS_TOKEN,
        &[("resource", TICKETS), ("scope", "read write")],
    )
    .await;
    r.assert_ok();
    assert_eq!(r.body["scope"], "read");
    let r = exchange_as(&app, "bot", &subject, TT_ACCESS_TOKEN, &[("resource", TICKETS), ("scope", "write")])
        .await;
    r.assert_error(400, "invalid_scope");
}

/// Lifetime never longer than the subject token's remaining life.
#[tokio::test]
async fn rfc8693_lifetime_never_longer_than_subject() {
    let app = TestApp::spawn().await;
    let subject = app.token_for("bot", DOCS, None).await;
    app.clock.advance_secs(250);
    let r = exchange_as(&app, "bot", &subject, TT_ACCESS_TOKEN, &[("resource", TICKETS)]).await;
    r.assert_ok();
    let expires_in = r.body["expires_in"].as_i64().expect("expires_in");
    assert!((1..=50).contains(&expires_in), "only the subject's remaining ~50 s, got {expires_in}");
}

/// RFC 8693 §2.2.2: an expired, forged, or foreign subject_token is invalid_request.
#[tokio::test]
async fn rfc8693_2_2_2_bad_subject_tokens_are_invalid_request() {
    let app = TestApp::spawn().await;
    let other_app = TestApp::spawn().await;
    // Issued by another broker (another signing key and issuer).
    let foreign = other_app.token_for("bot", DOCS, None).await;
    let r = exchange_as(&app, "bot", &foreign, TT_ACCESS_TOKEN, &[("resource", TICKETS)]).await;
    r.assert_error(400, "invalid_request");
    let d = r.body["error_description"].as_str().unwrap_or_default();
    assert!(d.contains("iss is not this broker, a trusted issuer, or a registered agent"), "{d}");
    // Tampered.
    let subject = app.token_for("bot", DOCS, None).await;
    let mut parts: Vec<String> = subject.split('.').map(String::from).collect();
    let (_, mut claims) = decode_unverified(&subject);
    claims["scope"] = json!("read write");
    parts[1] = agent_sts::crypto::b64url_encode(claims.to_string().as_bytes());
    let tampered = parts.join(".");
    exchange_as(&app, "bot", &tampered, TT_ACCESS_TOKEN, &[("resource", TICKETS)])
        .await
        .assert_error(400, "invalid_request");
    // Expired.
    app.clock.advance_secs(301);
    let r = exchange_as(&app, "bot", &subject, TT_ACCESS_TOKEN, &[("resource", TICKETS)]).await;
    r.assert_error(400, "invalid_request");
    assert!(r.body["error_description"].as_str().unwrap_or_default().contains("expired"));
    // Not a JWT at all.
    exchange_as(&app, "bot", "opaque-token", TT_ACCESS_TOKEN, &[("resource", TICKETS)])
        .await
        .assert_error(400, "invalid_request");
}

/// Only the agent a token was issued to may exchange it (RFC 8693 §2.2.2: unacceptable
/// based on policy ▶ invalid_request).
#[tokio::test]
async fn rfc8693_2_2_2_another_agents_token_is_invalid_request() {
    let app = TestApp::spawn().await;
    let subject = app.token_for("other-bot", TICKETS, None).await;
    exchange_as(&app, "bot", &subject, TT_ACCESS_TOKEN, &[("resource", TICKETS)])
        .await
        .assert_error(400, "invalid_request");
}

/// Exchanging an access token needs the agent's authentication (RFC 6749 §5.2 invalid_client).
#[tokio::test]
async fn rfc6749_5_2_exchange_without_authentication_is_invalid_client() {
    let app = TestApp::spawn().await;
    let subject = app.token_for("bot", DOCS, None).await;
    exchange(&app, &subject, TT_ACCESS_TOKEN, &[("resource", TICKETS)])
        .await
        .assert_error(401, "invalid_client");
}

/// RFC 8707 / RFC 8693 §2.2.2: a target the actor may not reach is invalid_target.
#[tokio::test]
async fn rfc8693_2_2_2_unreachable_target_is_invalid_target() {
    let app = TestApp::spawn().await;
    let subject = app.token_for("bot", DOCS, None).await;
    exchange_as(&app, "bot", &subject, TT_ACCESS_TOKEN, &[("audience", "unreached")])
        .await
        .assert_error(400, "invalid_target");
}

/// The agent's own assertion as the subject (token type jwt): the assertion authenticates.
#[tokio::test]
async fn the_agents_own_assertion_as_subject() {
    let app = TestApp::spawn().await;
    let subject = app.assertion("bot").sign();
    let r = exchange(&app, &subject, TT_JWT, &[("resource", DOCS), ("scope", "write")]).await;
    r.assert_ok();
    assert_eq!(r.body["issued_token_type"], TT_ACCESS_TOKEN);
    let (_, claims) = r.token_parts();
    assert_eq!((claims["sub"].as_str(), claims["act"]["sub"].as_str()), (Some("bot"), Some("bot")));
    // Spent: a second exchange with it is refused.
    exchange(&app, &subject, TT_JWT, &[("resource", DOCS)]).await.assert_error(400, "invalid_request");
}

/// An `actor_token` (the agent's assertion) authenticates the actor instead of client auth;
/// it must name the same agent as any client authentication.
#[tokio::test]
async fn rfc8693_actor_token_authenticates_the_actor() {
    let app = TestApp::spawn().await;
    let subject = app.token_for("bot", DOCS, None).await;
    let actor = app.assertion("bot").sign();
    let r = exchange(
        &app,
        &subject,
        TT_ACCESS_TOKEN,
        &[("actor_token", &actor), ("actor_token_type", TT_JWT), ("resource", TICKETS)],
    )
    .await;
    r.assert_ok();
    // Client authentication by bot, actor token by other-bot.
    let actor = app.assertion("other-bot").sign();
    let r = exchange_as(
        &app,
        "bot",
        &subject,
        TT_ACCESS_TOKEN,
        &[("actor_token", &actor), ("actor_token_type", TT_JWT), ("resource", TICKETS)],
    )
    .await;
    r.assert_error(400, "invalid_request");
    // RFC 8693 §2.2.2: the actor's own assertion is of type jwt; a valid one declared as an
    // access token is refused, not verified as if the type had been right.
    let actor = app.assertion("bot").sign();
    let r = exchange(
        &app,
        &subject,
        TT_ACCESS_TOKEN,
        &[("actor_token", &actor), ("actor_token_type", TT_ACCESS_TOKEN), ("resource", TICKETS)],
    )
    .await;
    r.assert_error(400, "invalid_request");
    assert!(r.body["error_description"].as_str().unwrap_or_default().contains("actor_token"), "{}", r.text);
}

/// RFC 8693 §2.2.2: unsupported token types are invalid_request.
#[tokio::test]
async fn rfc8693_2_2_2_unsupported_token_types_are_invalid_request() {
    let app = TestApp::spawn().await;
    let subject = app.token_for("bot", DOCS, None).await;
    let r = exchange_as(
        &app,
        "bot",
        &subject,
        "urn:ietf:params:oauth:token-type:id_token",
        &[("resource", TICKETS)],
    )
    .await;
    r.assert_error(400, "invalid_request");
    // The refusal says where the token is from and which types fit it.
    let d = r.body["error_description"].as_str().unwrap_or_default();
    assert!(d.ends_with("from this broker (use access_token or jwt)"), "{d}");
    exchange_as(
        &app,
        "bot",
        &subject,
        TT_ACCESS_TOKEN,
        &[("resource", TICKETS), ("requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token")],
    )
    .await
    .assert_error(400, "invalid_request");
}

/// A chain of exchanges keeps one actor entry per distinct actor, outermost = current.
#[tokio::test]
async fn repeated_exchange_by_the_same_actor_does_not_grow_act() {
    let app = TestApp::spawn().await;
    let mut token = app.token_for("bot", DOCS, None).await;
    for target in [TICKETS, DOCS, TICKETS] {
        let r = exchange_as(&app, "bot", &token, TT_ACCESS_TOKEN, &[("resource", target)]).await;
        r.assert_ok();
        token = r.access_token().to_string();
    }
    assert_eq!(decode_unverified(&token).1["act"], json!({"sub": "bot"}));
}

/// RFC 8693 §2.2.2: with the agent's own assertion as the subject, a client authenticated as
/// another agent is refused (no delegation between agents this way); the same agent
/// authenticating as the client is fine.
#[tokio::test]
async fn rfc8693_2_2_2_own_assertion_subject_and_client_must_be_one_agent() {
    let app = TestApp::spawn().await;
    let subject = app.assertion("bot").sign();
    let r = exchange_as(&app, "other-bot", &subject, TT_JWT, &[("resource", DOCS)]).await;
    r.assert_error(400, "invalid_request");
    assert!(r.body["error_description"].as_str().unwrap_or_default().contains("another agent"), "{}", r.text);
    let subject = app.assertion("bot").sign();
    let r = exchange_as(&app, "bot", &subject, TT_JWT, &[("resource", DOCS)]).await;
    r.assert_ok();
    let (_, claims) = r.token_parts();
    assert_eq!((claims["sub"].as_str(), claims["act"]["sub"].as_str()), (Some("bot"), Some("bot")));
}

/// A token of ours from before `entitlement` was recorded in issued tokens (an upgrade: such
/// tokens live until their `exp`): only an agent's own token (`sub` = `client_id`, no `act`)
/// stands for that agent's entitlement; any other is refused, never guessed (RFC 8693 §2.2.2,
/// invalid_request). In process, to mint tokens without the claim.
#[tokio::test]
async fn rfc8693_2_2_2_subject_without_entitlement_claim_only_as_the_agents_own_token() {
    use agent_sts::mint::{Act, MintSpec};
    use agent_sts::protocol::{ErrorCode, ScopeSet, TokenRequest};
    let broker = crate::props_act::broker();
    let now = broker.clock.now_secs();
    let read = ScopeSet::parse("read").expect("scope");
    let bot = Act { sub: "bot".into(), act: None };
    let exchange = |sub: &'static str, act: Option<&Act>| {
        let subject = broker
            .tokens
            .mint(&MintSpec {
                sub,
                aud: DOCS,
                client_id: "bot",
                scopes: &read,
                iat: now,
                exp: now + 300,
                act,
                entitlement: None,
            })
            .expect("mint")
            .token;
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("grant_type", GRANT_TOKEN_EXCHANGE),
                ("subject_token", subject.as_str()),
                ("subject_token_type", TT_ACCESS_TOKEN),
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_assertion", crate::props_act::assertion("bot", now).as_str()),
                ("resource", TICKETS),
            ])
            .finish();
        let req = TokenRequest::parse(body.as_bytes(), false).expect("parses");
        let broker = &broker;
        async move { broker.exchange(&req).await }
    };
    // bot's own token: its entitlement is bot's.
    let issued = exchange("bot", None).await.expect("bot's own token is exchanged");
    assert_eq!((issued.sub.as_str(), issued.actors.clone()), ("bot", vec!["bot".to_string()]));
    // For a user, or with an actor already: nothing says whose entitlement applies.
    for (sub, act) in [("user-1", None), ("bot", Some(&bot))] {
        let Err(e) = exchange(sub, act).await else { panic!("{sub}: exchanged") };
        assert_eq!(e.code, ErrorCode::InvalidRequest, "{}", e.description);
        assert!(e.description.contains("records no entitlement"), "{}", e.description);
    }
}
