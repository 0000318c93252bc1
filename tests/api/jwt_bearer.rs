//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523 §2.1).

use crate::helpers::*;

#[tokio::test]
async fn the_agents_own_assertion_is_the_grant() {
    let app = TestApp::spawn().await;
    let a = app.assertion("bot").sign();
    let r = app
        .post_token(&[
            ("grant_type", GRANT_JWT_BEARER),
            ("assertion", &a),
            ("resource", TICKETS),
            ("scope", "write"),
        ])
        .await;
    r.assert_ok();
    let (_, claims) = r.token_parts();
    assert_eq!((claims["sub"].as_str(), claims["aud"].as_str()), (Some("bot"), Some(TICKETS)));
    assert_eq!(r.body["scope"], "write");
}

/// RFC 7523 §3.1: client authentication may accompany the grant; it must name the same agent.
#[tokio::test]
async fn rfc7523_3_1_client_authentication_must_match_the_grant() {
    let app = TestApp::spawn().await;
    let (grant, client) = (app.assertion("bot").sign(), app.assertion("bot").sign());
    let r = app
        .post_token(&[
            ("grant_type", GRANT_JWT_BEARER),
            ("assertion", &grant),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", &client),
            ("resource", DOCS),
        ])
        .await;
    r.assert_ok();
    let (grant, client) = (app.assertion("bot").sign(), app.assertion("other-bot").sign());
    let r = app
        .post_token(&[
            ("grant_type", GRANT_JWT_BEARER),
            ("assertion", &grant),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", &client),
            ("resource", DOCS),
        ])
        .await;
    r.assert_error(400, "invalid_grant");
}

/// RFC 6749 §5.2: the grant's required parameter missing is invalid_request.
#[tokio::test]
async fn rfc6749_5_2_missing_assertion_is_invalid_request() {
    let app = TestApp::spawn().await;
    app.post_token(&[("grant_type", GRANT_JWT_BEARER), ("resource", DOCS)])
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn disabled_agent_grant_is_invalid_grant() {
    let app = TestApp::spawn().await;
    let a = app.assertion("off-bot").sign();
    let r = app.post_token(&[("grant_type", GRANT_JWT_BEARER), ("assertion", &a), ("resource", DOCS)]).await;
    r.assert_error(400, "invalid_grant");
}
