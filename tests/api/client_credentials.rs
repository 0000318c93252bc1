//! `grant_type=client_credentials` with private_key_jwt (RFC 6749 §4.4, RFC 7523 §2.2):
//! happy paths as the real clients send them, and the policy's refusals.

use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn issues_an_rfc9068_token_bound_to_the_resource() {
    let app = TestApp::spawn().await;
    let r = app.client_credentials(&app.assertion("bot").sign(), DOCS, Some("read write admin")).await;
    r.assert_ok();
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["scope"], "read write", "requested ∩ allowed");
    assert_eq!(r.body["expires_in"], 300, "default lifetime");
    assert!(r.body.get("issued_token_type").is_none());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let (header, claims) = r.token_parts();
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    assert!(header["kid"].is_string());
    assert_eq!(claims["iss"], app.issuer.as_str());
    assert_eq!(claims["sub"], "bot");
    assert_eq!(claims["client_id"], "bot");
    assert_eq!(claims["aud"], DOCS, "aud is the resource URI, a string");
    assert_eq!(claims["scope"], "read write");
    let iat = claims["iat"].as_i64().expect("iat");
    assert_eq!(claims["exp"].as_i64().expect("exp") - iat, 300);
    let jti = agent_sts::crypto::b64url_decode(claims["jti"].as_str().expect("jti")).expect("b64");
    assert_eq!(jti.len(), 16, "128-bit jti");
    assert!(claims.get("act").is_none());
}

/// What the MCP Python and TypeScript SDKs send: no kid, aud = issuer, exp = iat + 300,
/// no client_id, and sometimes no scope at all (then: the default scopes).
#[tokio::test]
async fn mcp_sdk_shaped_request_gets_default_scopes() {
    let app = TestApp::spawn().await;
    let now = app.now();
    let a = app.assertion("bot").without_header("kid").claim("exp", json!(now + 300)).sign();
    let r = app.client_credentials(&a, DOCS, None).await;
    r.assert_ok();
    assert_eq!(r.body["scope"], "read");
}

/// openid-client: client_id in the body, a kid, nbf, a 60 s lifetime; some clients: aud as a
/// one-element array. (Authlib's token-endpoint aud: see strict_jose.rs.)
#[tokio::test]
async fn other_client_shapes_are_accepted() {
    let app = TestApp::spawn().await;
    let now = app.now();
    let a = app.assertion("bot").claim("nbf", json!(now)).sign();
    let r = app
        .post_token(&[
            ("grant_type", "client_credentials"),
            ("client_id", "bot"),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", &a),
            ("resource", DOCS),
        ])
        .await;
    r.assert_ok();
    let a = app.assertion("bot").claim("aud", json!([app.issuer])).sign();
    app.client_credentials(&a, DOCS, None).await.assert_ok();
}

#[tokio::test]
async fn every_accepted_algorithm_works() {
    let app = TestApp::spawn().await;
    for id in ["ed-bot", "es384-bot", "rsa-bot", "pss-bot"] {
        let r = app.client_credentials(&app.assertion(id).sign(), DOCS, None).await;
        r.assert_ok();
        assert_eq!(r.token_parts().1["sub"], id);
    }
}

/// RFC 6749 §4.4.2 / §5.2: client_credentials without client authentication is invalid_client.
#[tokio::test]
async fn rfc6749_4_4_missing_client_authentication_is_invalid_client() {
    let app = TestApp::spawn().await;
    let r = app
        .post_token(&[("grant_type", "client_credentials"), ("client_id", "bot"), ("resource", DOCS)])
        .await;
    r.assert_error(401, "invalid_client");
}

/// RFC 6749 §2.3: only private_key_jwt is accepted; a client secret (body or Basic) is refused.
#[tokio::test]
async fn rfc6749_2_3_client_secrets_are_invalid_client() {
    let app = TestApp::spawn().await;
    let a = app.assertion("bot").sign();
    let r = app
        .post_token(&[
            ("grant_type", "client_credentials"),
            ("client_id", "bot"),
            ("client_secret", "hunter2"),
            ("resource", DOCS),
        ])
        .await;
    r.assert_error(401, "invalid_client");
    let body = format!(
        "grant_type=client_credentials&client_assertion_type={CLIENT_ASSERTION_TYPE}&client_assertion={a}&resource={DOCS}"
    );
    let resp = app
        .http
        .post(format!("{}/token", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", "Basic Ym90Omh1bnRlcjI=")
        .body(body)
        .send()
        .await
        .expect("send");
    Reply::read(resp).await.assert_error(401, "invalid_client");
}

/// RFC 8707 §2: unknown, not-allowed, missing, or several resources are invalid_target.
#[tokio::test]
async fn rfc8707_bad_targets_are_invalid_target() {
    let app = TestApp::spawn().await;
    let unknown = app.client_credentials(&app.assertion("bot").sign(), "https://nope.test/mcp", None).await;
    unknown.assert_error(400, "invalid_target");
    let not_allowed = app.client_credentials(&app.assertion("bot").sign(), UNREACHED, None).await;
    not_allowed.assert_error(400, "invalid_target");
    let other = app.client_credentials(&app.assertion("other-bot").sign(), DOCS, None).await;
    other.assert_error(400, "invalid_target");
    let a = app.assertion("bot").sign();
    let missing = app
        .post_token(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", &a),
        ])
        .await;
    missing.assert_error(400, "invalid_target");
    let a = app.assertion("bot").sign();
    let two = app
        .post_token(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", &a),
            ("resource", DOCS),
            ("resource", TICKETS),
        ])
        .await;
    two.assert_error(400, "invalid_target");
    let a = app.assertion("bot").sign();
    let fragment = app.client_credentials(&a, "https://docs.mcp.test/mcp#x", None).await;
    fragment.assert_error(400, "invalid_target");
}

/// RFC 8693 §2.1 `audience` picks the server by id or resource URI, like `resource`.
#[tokio::test]
async fn audience_names_the_server_too() {
    let app = TestApp::spawn().await;
    let a = app.assertion("bot").sign();
    let r = app
        .post_token(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", &a),
            ("audience", "tickets"),
        ])
        .await;
    r.assert_ok();
    assert_eq!(r.token_parts().1["aud"], TICKETS);
}

/// RFC 6749 §5.2 invalid_scope: nothing left after narrowing to the policy, or no scope
/// requested and no default scopes.
#[tokio::test]
async fn rfc6749_5_2_no_grantable_scope_is_invalid_scope() {
    let app = TestApp::spawn().await;
    let r = app.client_credentials(&app.assertion("bot").sign(), DOCS, Some("admin delete")).await;
    r.assert_error(400, "invalid_scope");
    let r = app.client_credentials(&app.assertion("nodefault-bot").sign(), DOCS, None).await;
    r.assert_error(400, "invalid_scope");
    let r = app.client_credentials(&app.assertion("bot").sign(), DOCS, Some("bad\"scope")).await;
    r.assert_error(400, "invalid_scope");
}

/// Lifetime = the least of the default, the server's cap and the agent's cap.
#[tokio::test]
async fn lifetime_is_capped_by_agent_policy() {
    let app = TestApp::spawn().await;
    let r = app.client_credentials(&app.assertion("nodefault-bot").sign(), DOCS, Some("read")).await;
    r.assert_ok();
    assert_eq!(r.body["expires_in"], 60);
}

#[tokio::test]
async fn disabled_agent_is_invalid_client() {
    let app = TestApp::spawn().await;
    let r = app.client_credentials(&app.assertion("off-bot").sign(), DOCS, None).await;
    r.assert_error(401, "invalid_client");
}
