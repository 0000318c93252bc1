//! The token request form (RFC 6749 §3.2): media type, size, duplicates, grant types.

use crate::helpers::*;

/// RFC 6749 §3.2: "Request and response parameters MUST NOT be included more than once."
#[tokio::test]
async fn rfc6749_3_2_repeated_parameter_is_invalid_request() {
    let app = TestApp::spawn().await;
    let a = app.assertion("bot").sign();
    let r = app
        .post_token(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", &a),
            ("resource", DOCS),
            ("scope", "read"),
            ("scope", "write"),
        ])
        .await;
    r.assert_error(400, "invalid_request");
    assert!(r.body["error_description"].as_str().unwrap_or_default().contains("scope"));
}

/// RFC 6749 §3.2: the token endpoint takes application/x-www-form-urlencoded.
#[tokio::test]
async fn rfc6749_3_2_json_body_is_invalid_request() {
    let app = TestApp::spawn().await;
    let r = app.post_raw(r#"{"grant_type":"client_credentials"}"#.into(), "application/json").await;
    r.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let app = TestApp::spawn().await;
    let body = format!("grant_type=client_credentials&pad={}", "x".repeat(20_000));
    let r = app.post_raw(body, "application/x-www-form-urlencoded").await;
    assert_eq!(r.status, 413);
    assert_eq!(r.body["error"], "invalid_request");
}

/// RFC 6749 §5.2: unsupported_grant_type for grants this broker does not offer.
#[tokio::test]
async fn rfc6749_5_2_unknown_grant_is_unsupported_grant_type() {
    let app = TestApp::spawn().await;
    for g in ["authorization_code", "password", "refresh_token", "urn:example:custom"] {
        app.post_token(&[("grant_type", g), ("code", "x")]).await.assert_error(400, "unsupported_grant_type");
    }
    app.post_token(&[("resource", DOCS)]).await.assert_error(400, "invalid_request");
}

/// RFC 7521 §4.2.1: an unknown client_assertion_type is refused.
#[tokio::test]
async fn rfc7521_4_2_unknown_assertion_type_is_invalid_client() {
    let app = TestApp::spawn().await;
    let a = app.assertion("bot").sign();
    let r = app
        .post_token(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"),
            ("client_assertion", &a),
            ("resource", DOCS),
        ])
        .await;
    r.assert_error(401, "invalid_client");
}
