//! Discovery (RFC 8414), JWKS (RFC 7517), health, and independent verification of issued
//! tokens by a second JOSE implementation (the `jsonwebtoken` crate) against /jwks.json.

use crate::helpers::*;

#[tokio::test]
async fn rfc8414_metadata_is_what_mcp_clients_require() {
    let app = TestApp::spawn().await;
    let m = app.get("/.well-known/oauth-authorization-server").await;
    assert_eq!(m.status, 200);
    let b = &m.body;
    assert_eq!(b["issuer"], app.issuer.as_str());
    assert!(!app.issuer.ends_with('/'));
    assert_eq!(b["token_endpoint"], format!("{}/token", app.issuer));
    assert_eq!(b["jwks_uri"], format!("{}/jwks.json", app.issuer));
    assert!(b["authorization_endpoint"].is_string(), "MCP SDKs refuse metadata without it");
    assert!(b["response_types_supported"].is_array(), "MCP SDKs refuse metadata without it");
    assert_eq!(b["token_endpoint_auth_methods_supported"], serde_json::json!(["private_key_jwt"]));
    let grants: Vec<&str> =
        b["grant_types_supported"].as_array().expect("array").iter().filter_map(|v| v.as_str()).collect();
    assert!(
        grants.contains(&"client_credentials")
            && grants.contains(&GRANT_JWT_BEARER)
            && grants.contains(&GRANT_TOKEN_EXCHANGE)
    );
    let algs = b["token_endpoint_auth_signing_alg_values_supported"].as_array().expect("array");
    assert_eq!(algs.len(), 5);
    assert!(!algs.iter().any(|a| a == "none" || a.as_str().is_some_and(|s| s.starts_with("HS"))));
    assert_eq!(b["scopes_supported"], serde_json::json!(["admin", "ask", "read", "write"]));
    // MCP enterprise-managed authorization (ID-JAG).
    assert_eq!(
        b["authorization_grant_profiles_supported"],
        serde_json::json!(["urn:ietf:params:oauth:grant-profile:id-jag"])
    );
    let oidc = app.get("/.well-known/openid-configuration").await;
    assert_eq!(oidc.body, m.body, "both discovery paths serve one document");
    // The token's iss is byte-identical to the metadata issuer.
    let r = app.client_credentials(&app.assertion("bot").sign(), DOCS, None).await;
    assert_eq!(r.token_parts().1["iss"], b["issuer"]);
}

/// The authorization endpoint exists for the SDKs and refuses every request, without
/// redirecting anywhere (RFC 6749 §4.1.2.1).
#[tokio::test]
async fn authorization_endpoint_explains_itself() {
    let app = TestApp::spawn().await;
    let r = app.get("/authorize?response_type=code&client_id=bot&redirect_uri=https://evil.example/cb").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"], "unauthorized_client");
    assert!(r.header("location").is_none());
    assert!(r.body["error_description"].as_str().unwrap_or_default().contains("non-interactive"));
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await.status, 200);
    assert_eq!(app.get("/readyz").await.status, 200);
    assert_eq!(app.get("/nope").await.status, 404);
}

/// Tokens verify with an independent JOSE library against the served JWKS, checking
/// signature, alg, typ (RFC 9068 §2.1), iss, aud and exp.
#[tokio::test]
async fn rfc9068_tokens_verify_with_an_independent_library() {
    use jsonwebtoken::{decode, decode_header, jwk::JwkSet, Algorithm, DecodingKey, Validation};
    let app = TestApp::spawn().await;
    let jwks: JwkSet = serde_json::from_value(app.get("/jwks.json").await.body).expect("a JWK Set");
    let mut tokens = vec![app.token_for("bot", DOCS, Some("read write")).await];
    let a = app.assertion("bot").sign();
    let r = app
        .post_token(&[
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", &tokens[0]),
            ("subject_token_type", TT_ACCESS_TOKEN),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", &a),
            ("resource", TICKETS),
        ])
        .await;
    r.assert_ok();
    tokens.push(r.access_token().to_string());
    for (token, aud) in tokens.iter().zip([DOCS, TICKETS]) {
        let header = decode_header(token).expect("header");
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.alg, Algorithm::ES256);
        let kid = header.kid.expect("kid");
        let jwk = jwks.find(&kid).expect("the token's kid is in the JWKS");
        let key = DecodingKey::from_jwk(jwk).expect("decoding key");
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[aud]);
        v.set_issuer(&[app.issuer.as_str()]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = decode::<serde_json::Value>(token, &key, &v).expect("verifies independently");
        assert_eq!(data.claims["client_id"], "bot");
        // A wrong audience is rejected by the same library.
        let mut wrong = Validation::new(Algorithm::ES256);
        wrong.set_audience(&[UNREACHED]);
        assert!(decode::<serde_json::Value>(token, &key, &wrong).is_err());
    }
}
