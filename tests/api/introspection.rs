//! Introspection (RFC 7662) and revocation (RFC 7009), and the kill switch: callers
//! authenticate with their own assertion; inactive for expired, revoked, unknown and other
//! servers' tokens; the `act` chain of a delegated token; a disabled agent gets nothing more.

use crate::helpers::*;
use agent_sts::crypto::{generate_key_pair, Alg, SigningKey};
use serde_json::{json, Value};
use std::sync::OnceLock;

/// The docs server's own key (registered in the policy below) and its public JWK as TOML.
fn docs_key() -> &'static (SigningKey, String) {
    static KEY: OnceLock<(SigningKey, String)> = OnceLock::new();
    KEY.get_or_init(|| {
        let pair = generate_key_pair(Alg::ES256, Some("docs-1")).expect("keygen");
        let key =
            SigningKey::from_pem(Alg::ES256, pair.private_pem.0.as_bytes(), Some("docs-1")).expect("key");
        let t: toml::Value = serde_json::from_value(Value::Object(pair.public_jwk)).expect("toml");
        (key, t.to_string())
    })
}

/// The test policy, with keys on the docs server (only docs may introspect).
pub fn policy_with_server_keys() -> String {
    policy_toml().replacen(
        "max_token_lifetime_secs = 900\n",
        &format!("max_token_lifetime_secs = 900\nkeys = [{}]\n", docs_key().1),
        1,
    )
}

async fn app() -> TestApp {
    TestApp::spawn_with(AppOptions { policy: Some(policy_with_server_keys()), ..AppOptions::default() }).await
}

/// An assertion of the docs server (iss = sub = "docs"), signed with its key.
fn server_assertion(app: &TestApp) -> Assertion {
    app.assertion("bot")
        .claim("iss", json!("docs"))
        .claim("sub", json!("docs"))
        .header("kid", json!("docs-1"))
        .signed_by(&docs_key().0)
}

async fn post(app: &TestApp, path: &str, params: &[(&str, &str)]) -> Reply {
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    let r = app
        .http
        .post(format!("{}{path}", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("POST");
    Reply::read(r).await
}

async fn introspect_with(app: &TestApp, assertion: &str, token: &str) -> Reply {
    post(
        app,
        "/introspect",
        &[
            ("token", token),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", assertion),
        ],
    )
    .await
}

async fn introspect(app: &TestApp, token: &str) -> Value {
    let r = introspect_with(app, &server_assertion(app).sign(), token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    r.body
}

async fn revoke_as(app: &TestApp, assertion: &str, token: &str) -> Reply {
    post(
        app,
        "/revoke",
        &[
            ("token", token),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", assertion),
        ],
    )
    .await
}

/// RFC 7662 section 2.2: an active token's claims, for the server it was issued to.
#[tokio::test]
async fn rfc7662_2_2_active_token_for_its_own_server() {
    let app = app().await;
    let token = app.token_for("bot", DOCS, Some("read write")).await;
    let (_, claims) = decode_unverified(&token);
    let body = introspect(&app, &token).await;
    assert_eq!(body["active"], true, "{body}");
    for k in ["iss", "sub", "aud", "client_id", "scope", "exp", "iat", "jti"] {
        assert_eq!(body[k], claims[k], "{k}");
    }
    assert_eq!(body["token_type"], "Bearer");
    assert!(body.get("act").is_none());
}

/// RFC 7662 section 2.2: `active: false` and nothing else for an unknown token, a token for
/// another server, and an expired one.
#[tokio::test]
async fn rfc7662_2_2_inactive_for_unknown_foreign_and_expired_tokens() {
    let app = app().await;
    assert_eq!(introspect(&app, "not-a-token").await, json!({"active": false}));
    let tickets = app.token_for("bot", TICKETS, None).await;
    assert_eq!(introspect(&app, &tickets).await, json!({"active": false}), "another server's token");
    let docs = app.token_for("bot", DOCS, None).await;
    let exp = decode_unverified(&docs).1["exp"].as_i64().expect("exp");
    app.clock.advance_secs(exp - app.now());
    assert_eq!(introspect(&app, &docs).await, json!({"active": false}), "expired at exp");
}

/// RFC 7662 with RFC 8693 section 4.1: a delegated (exchanged) token carries its `act`.
#[tokio::test]
async fn rfc7662_delegated_token_shows_its_act_chain() {
    let app = app().await;
    let subject = app.token_for("bot", TICKETS, Some("read")).await;
    let a = app.assertion("bot").sign();
    let r = app
        .post_token(&[
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", &subject),
            ("subject_token_type", TT_ACCESS_TOKEN),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", &a),
            ("resource", DOCS),
        ])
        .await;
    r.assert_ok();
    let body = introspect(&app, r.access_token()).await;
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["act"], json!({"sub": "bot"}));
    assert_eq!(body["sub"], "bot");
}

/// RFC 7662 section 2.1: the caller authenticates; only a server with registered keys may
/// introspect; a replayed or forged caller assertion is `invalid_client`.
#[tokio::test]
async fn rfc7662_2_1_caller_must_authenticate_as_a_server() {
    let app = app().await;
    let token = app.token_for("bot", DOCS, None).await;
    let r = post(&app, "/introspect", &[("token", &token)]).await;
    r.assert_error(401, "invalid_client");
    introspect_with(&app, &app.assertion("bot").sign(), &token).await.assert_error(401, "invalid_client");
    let tickets = app
        .assertion("bot")
        .claim("iss", json!("tickets"))
        .claim("sub", json!("tickets"))
        .header("kid", json!("docs-1"))
        .signed_by(&docs_key().0)
        .sign();
    introspect_with(&app, &tickets, &token).await.assert_error(401, "invalid_client");
    let forged = server_assertion(&app).signed_by(&agent("bot").keys[0].key).sign();
    introspect_with(&app, &forged, &token).await.assert_error(401, "invalid_client");
    let once = server_assertion(&app).sign();
    assert_eq!(introspect_with(&app, &once, &token).await.body["active"], true);
    introspect_with(&app, &once, &token).await.assert_error(401, "invalid_client");
    let wrong_aud = server_assertion(&app).claim("aud", json!("https://elsewhere.example")).sign();
    introspect_with(&app, &wrong_aud, &token).await.assert_error(401, "invalid_client");
}

/// RFC 7009 section 2.2: the agent revokes its own token; introspection then says inactive,
/// and the token can no longer be exchanged (RFC 8693 section 2.2.2: invalid_request).
#[tokio::test]
async fn rfc7009_2_2_revoked_token_is_inactive_and_not_exchangeable() {
    let app = app().await;
    let token = app.token_for("bot", DOCS, None).await;
    assert_eq!(introspect(&app, &token).await["active"], true);
    let r = revoke_as(&app, &app.assertion("bot").sign(), &token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.text, "");
    assert_eq!(introspect(&app, &token).await, json!({"active": false}));
    let a = app.assertion("bot").sign();
    app.post_token(&[
        ("grant_type", GRANT_TOKEN_EXCHANGE),
        ("subject_token", &token),
        ("subject_token_type", TT_ACCESS_TOKEN),
        ("client_assertion_type", CLIENT_ASSERTION_TYPE),
        ("client_assertion", &a),
        ("resource", TICKETS),
    ])
    .await
    .assert_error(400, "invalid_request");
    // An unknown token is answered 200 too (section 2.2), and nothing is stored.
    assert_eq!(revoke_as(&app, &app.assertion("bot").sign(), "garbage").await.status, 200);
}

/// RFC 7009 section 2.1: a client may revoke only its own tokens; a server only the tokens
/// for its own resource.
#[tokio::test]
async fn rfc7009_2_1_only_the_tokens_own_client_or_server_may_revoke() {
    let app = app().await;
    let bots = app.token_for("bot", DOCS, None).await;
    revoke_as(&app, &app.assertion("other-bot").sign(), &bots).await.assert_error(400, "unauthorized_client");
    let tickets = app.token_for("bot", TICKETS, None).await;
    revoke_as(&app, &server_assertion(&app).sign(), &tickets).await.assert_error(400, "unauthorized_client");
    assert_eq!(introspect(&app, &bots).await["active"], true, "nothing was revoked");
    assert_eq!(
        revoke_as(&app, &server_assertion(&app).sign(), &bots).await.status,
        200,
        "docs revokes a docs token"
    );
    assert_eq!(introspect(&app, &bots).await["active"], false);
}

/// The kill switch: `disabled = true` in a reloaded policy refuses the agent's next request
/// (RFC 6749 section 5.2: invalid_client) and makes its live tokens inactive.
#[tokio::test]
async fn kill_switch_refuses_the_next_request_and_deactivates_tokens() {
    let app = app().await;
    let token = app.token_for("bot", DOCS, None).await;
    let disabled = policy_with_server_keys().replacen("id = \"bot\"\n", "id = \"bot\"\ndisabled = true\n", 1);
    std::fs::write(&app.policy_path, disabled).expect("rewrite");
    let reloader = app.reloader.clone();
    tokio::task::spawn_blocking(move || reloader.reload("test")).await.expect("join").expect("valid");
    app.client_credentials(&app.assertion("bot").sign(), DOCS, None)
        .await
        .assert_error(401, "invalid_client");
    assert_eq!(introspect(&app, &token).await, json!({"active": false}));
}
