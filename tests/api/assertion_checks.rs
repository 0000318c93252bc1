//! The RFC 7523 §3 assertion checklist, one negative test per rule. As client
//! authentication each refusal is `invalid_client` (RFC 7523 §3.2, RFC 6749 §5.2).

use crate::helpers::*;
use serde_json::json;

/// Send as client authentication; expect 401 invalid_client whose description mentions `why`.
async fn refused(app: &TestApp, assertion: &str, why: &str) {
    let r = app.client_credentials(assertion, DOCS, None).await;
    r.assert_error(401, "invalid_client");
    let d = r.body["error_description"].as_str().unwrap_or_default();
    assert!(d.contains(why), "description {d:?} should mention {why:?}");
    assert!(!r.text.contains(assertion), "the assertion must not be echoed");
}

/// RFC 7523 §3 item 1: iss and sub both name the client.
#[tokio::test]
async fn rfc7523_3_sub_must_equal_iss() {
    let app = TestApp::spawn().await;
    refused(&app, &app.assertion("bot").claim("sub", json!("someone-else")).sign(), "sub must equal iss")
        .await;
    refused(&app, &app.assertion("bot").without("sub").sign(), "sub must equal iss").await;
}

#[tokio::test]
async fn rfc7523_3_unknown_or_missing_issuer() {
    let app = TestApp::spawn().await;
    let a = app.assertion("bot").claim("iss", json!("ghost")).claim("sub", json!("ghost")).sign();
    refused(&app, &a, "not a registered agent").await;
    refused(&app, &app.assertion("bot").without("iss").sign(), "no iss").await;
}

/// RFC 7521 §4.2: a client_id sent with the assertion must name the same client.
#[tokio::test]
async fn rfc7521_4_2_client_id_must_match() {
    let app = TestApp::spawn().await;
    let a = app.assertion("bot").sign();
    let r = app
        .post_token(&[
            ("grant_type", "client_credentials"),
            ("client_id", "other-bot"),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", &a),
            ("resource", DOCS),
        ])
        .await;
    r.assert_error(401, "invalid_client");
}

/// RFC 7523 §3 item 3: aud identifies this authorization server.
#[tokio::test]
async fn rfc7523_3_audience_must_be_this_broker() {
    let app = TestApp::spawn().await;
    refused(&app, &app.assertion("bot").claim("aud", json!("https://other-as.example")).sign(), "aud").await;
    refused(&app, &app.assertion("bot").claim("aud", json!(format!("{}/", app.issuer))).sign(), "aud").await;
    refused(&app, &app.assertion("bot").without("aud").sign(), "aud").await;
    refused(&app, &app.assertion("bot").claim("aud", json!([])).sign(), "aud").await;
}

/// RFC 7523 §3 item 4: exp is required and must not be past (beyond the 60 s skew).
#[tokio::test]
async fn rfc7523_3_expiry_required_and_not_past() {
    let app = TestApp::spawn().await;
    let now = app.now();
    refused(&app, &app.assertion("bot").without("exp").sign(), "no exp").await;
    refused(
        &app,
        &app.assertion("bot").claim("exp", json!(now - 61)).claim("iat", json!(now - 120)).sign(),
        "expired",
    )
    .await;
    refused(&app, &app.assertion("bot").claim("exp", json!("tomorrow")).sign(), "claim").await;
    // Within the skew: accepted.
    let a = app.assertion("bot").claim("exp", json!(now - 30)).claim("iat", json!(now - 90)).sign();
    app.client_credentials(&a, DOCS, None).await.assert_ok();
}

/// The maximum assertion lifetime (300 s + the 1 s future skew): a long-lived assertion is a
/// long-lived credential. (The exact boundaries are unit-tested in client_auth::checklist;
/// here a second may tick between signing and checking.)
#[tokio::test]
async fn assertion_lifetime_is_capped() {
    let app = TestApp::spawn().await;
    let now = app.now();
    refused(&app, &app.assertion("bot").claim("exp", json!(now + 3600)).sign(), "lives too long").await;
    refused(&app, &app.assertion("bot").claim("exp", json!(now + 310)).sign(), "lives too long").await;
    let a = app.assertion("bot").claim("exp", json!(now + 300)).sign();
    app.client_credentials(&a, DOCS, None).await.assert_ok();
}

/// RFC 7523 section 3 items 5-6: nbf and iat not in the future beyond the future skew (1 s).
#[tokio::test]
async fn rfc7523_3_not_before_and_issued_at_not_in_future() {
    let app = TestApp::spawn().await;
    let now = app.now();
    refused(&app, &app.assertion("bot").claim("nbf", json!(now + 120)).sign(), "not valid yet").await;
    refused(&app, &app.assertion("bot").claim("iat", json!(now + 120)).sign(), "iat").await;
    refused(&app, &app.assertion("bot").claim("iat", json!(now + 5)).sign(), "iat").await;
    // One second ahead passes (the broker's clock is at least `now`).
    let a = app.assertion("bot").claim("iat", json!(now + 1)).claim("nbf", json!(now + 1)).sign();
    app.client_credentials(&a, DOCS, None).await.assert_ok();
}

/// RFC 7523 §3 item 7: jti is required here (replay protection needs it).
#[tokio::test]
async fn rfc7523_3_jti_required() {
    let app = TestApp::spawn().await;
    refused(&app, &app.assertion("bot").without("jti").sign(), "no jti").await;
    refused(&app, &app.assertion("bot").claim("jti", json!("")).sign(), "no jti").await;
    refused(&app, &app.assertion("bot").claim("jti", json!("x".repeat(300))).sign(), "jti").await;
}

/// RFC 7523 §3 item 9: the signature must verify with one of the agent's registered keys.
#[tokio::test]
async fn rfc7523_3_signature_by_another_key_is_refused() {
    let app = TestApp::spawn().await;
    let intruder = &agent("other-bot").keys[0].key;
    let a = app.assertion("bot").signed_by(intruder).sign();
    refused(&app, &a, "signature does not verify").await;
    let mut tampered = app.assertion("bot").sign();
    tampered.push('A');
    let r = app.client_credentials(&tampered, DOCS, None).await;
    r.assert_error(401, "invalid_client");
}

/// Key selection: by kid, whose registered alg must equal the header's; without kid, the
/// only key for the alg (RFC 8725 §3.1: the key, not the header, fixes the algorithm).
#[tokio::test]
async fn key_selection_by_kid_and_alg() {
    let app = TestApp::spawn().await;
    refused(&app, &app.assertion("bot").header("kid", json!("no-such-kid")).sign(), "kid").await;
    let es384_key = &agent("two-key-bot").keys[2].key;
    // kid "a" is an ES256 key; a header claiming ES384 with kid "a" is refused before use.
    let a = app.assertion("two-key-bot").header("alg", json!("ES384")).signed_by(es384_key).sign();
    refused(&app, &a, "registered for ES256").await;
    // Two ES256 keys and no kid: ambiguous.
    refused(&app, &app.assertion("two-key-bot").without_header("kid").sign(), "send a kid").await;
    // One ES384 key and no kid: found by alg.
    let a = app
        .assertion("two-key-bot")
        .without_header("kid")
        .header("alg", json!("ES384"))
        .signed_by(es384_key)
        .sign();
    app.client_credentials(&a, DOCS, None).await.assert_ok();
    // Second key by kid.
    let b = &agent("two-key-bot").keys[1].key;
    app.client_credentials(
        &app.assertion("two-key-bot").header("kid", json!("b")).signed_by(b).sign(),
        DOCS,
        None,
    )
    .await
    .assert_ok();
    // An agent registered without a kid is found by its RFC 7638 thumbprint, or by alg.
    let ed = &agent("ed-bot").keys[0];
    let thumb = agent_sts::crypto::thumbprint(&ed.jwk).expect("thumbprint");
    app.client_credentials(&app.assertion("ed-bot").header("kid", json!(thumb)).sign(), DOCS, None)
        .await
        .assert_ok();
}

/// RFC 8725 §2.1, §3.1: `none` and HMAC are never accepted, and an RSA public key is never
/// used as an HMAC secret.
#[tokio::test]
async fn rfc8725_none_and_hmac_are_refused() {
    let app = TestApp::spawn().await;
    let unsigned = app.assertion("bot").header("alg", json!("none")).sign();
    let (h, p, _) = {
        let mut it = unsigned.split('.');
        (it.next().unwrap_or(""), it.next().unwrap_or(""), it.next())
    };
    refused(&app, &format!("{h}.{p}."), "").await;
    refused(&app, &unsigned, "not accepted").await;

    // An HS256 token keyed with the RSA agent's public key, the classic confusion attack.
    let rsa = &agent("rsa-bot").keys[0];
    let secret = serde_json::Value::Object(rsa.jwk.clone()).to_string();
    let now = app.now();
    let claims =
        json!({"iss": "rsa-bot", "sub": "rsa-bot", "aud": app.issuer, "exp": now + 60, "jti": "hmac-1"});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let forged =
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()))
            .expect("hs256");
    let r = app.client_credentials(&forged, DOCS, None).await;
    r.assert_error(401, "invalid_client");
    assert!(r.body["error_description"].as_str().unwrap_or_default().contains("HS256"));
}

/// RFC 8725 §3.10 / RFC 7515 §4.1.2–4.1.6: jku, x5u, jwk, x5c never select a key; their
/// presence refuses the assertion.
#[tokio::test]
async fn rfc8725_key_reference_headers_are_refused() {
    let app = TestApp::spawn().await;
    let own_jwk = serde_json::Value::Object(agent("bot").keys[0].jwk.clone());
    for (name, value) in [
        ("jku", json!("https://evil.example/jwks.json")),
        ("x5u", json!("https://evil.example/cert.pem")),
        ("jwk", own_jwk),
        ("x5c", json!(["MIIB"])),
    ] {
        refused(&app, &app.assertion("bot").header(name, value).sign(), name).await;
    }
}

/// RFC 7515 §4.1.11: a `crit` header naming anything we don't implement is refused.
#[tokio::test]
async fn rfc7515_unknown_crit_is_refused() {
    let app = TestApp::spawn().await;
    let a = app.assertion("bot").header("crit", json!(["exp-ext"])).header("exp-ext", json!(1)).sign();
    refused(&app, &a, "critical").await;
}

/// RFC 8725 §3.11: an access token (typ at+jwt) is not an assertion.
#[tokio::test]
async fn rfc8725_3_11_access_token_is_not_an_assertion() {
    let app = TestApp::spawn().await;
    refused(&app, &app.assertion("bot").header("typ", json!("at+jwt")).sign(), "typ").await;
}

#[tokio::test]
async fn oversized_and_malformed_assertions_are_refused() {
    let app = TestApp::spawn().await;
    let big = app.assertion("bot").claim("pad", json!("x".repeat(9000))).sign();
    refused(&app, &big, "larger than").await;
    refused(&app, "not-a-jwt", "three base64url parts").await;
    refused(&app, "a.b.c", "base64url").await;
}

/// RFC 7523 §3.1: in the jwt-bearer grant the same checks refuse with invalid_grant.
#[tokio::test]
async fn rfc7523_3_1_grant_assertion_failures_are_invalid_grant() {
    let app = TestApp::spawn().await;
    let now = app.now();
    for a in [
        app.assertion("bot").claim("aud", json!("https://other.example")).sign(),
        app.assertion("bot").claim("exp", json!(now - 120)).claim("iat", json!(now - 200)).sign(),
        app.assertion("bot").without("jti").sign(),
        app.assertion("bot").signed_by(&agent("other-bot").keys[0].key).sign(),
    ] {
        let r =
            app.post_token(&[("grant_type", GRANT_JWT_BEARER), ("assertion", &a), ("resource", DOCS)]).await;
        r.assert_error(400, "invalid_grant");
    }
}
