//! Strict JOSE at every door (RFC 7515, RFC 7519, RFC 8725, draft-ietf-oauth-rfc7523bis):
//! each rule is tried through each place a JWT enters, with that place's error code:
//! `client_assertion` (RFC 7523 section 3.2: 401 invalid_client), the jwt-bearer `assertion`
//! (section 3.1: invalid_grant), and the token-exchange `subject_token` and `actor_token`
//! (RFC 8693 section 2.2.2: invalid_request).

use crate::helpers::*;
use serde_json::json;

#[derive(Debug, Clone, Copy)]
enum Door {
    ClientAssertion,
    Assertion,
    SubjectToken,
    ActorToken,
}

const DOORS: [Door; 4] = [Door::ClientAssertion, Door::Assertion, Door::SubjectToken, Door::ActorToken];

impl Door {
    fn parameter(self) -> &'static str {
        match self {
            Door::ClientAssertion => "client_assertion",
            Door::Assertion => "assertion",
            Door::SubjectToken => "subject_token",
            Door::ActorToken => "actor_token",
        }
    }

    /// Present `jwt` (an assertion of the agent `bot`) through this door.
    async fn present(self, app: &TestApp, jwt: &str) -> Reply {
        match self {
            Door::ClientAssertion => app.client_credentials(jwt, DOCS, None).await,
            Door::Assertion => {
                app.post_token(&[("grant_type", GRANT_JWT_BEARER), ("assertion", jwt), ("resource", DOCS)])
                    .await
            }
            Door::SubjectToken => {
                app.post_token(&[
                    ("grant_type", GRANT_TOKEN_EXCHANGE),
                    ("subject_token", jwt),
                    ("subject_token_type", TT_JWT),
                    ("resource", DOCS),
                ])
                .await
            }
            Door::ActorToken => {
                let subject = app.token_for("bot", DOCS, None).await;
                app.post_token(&[
                    ("grant_type", GRANT_TOKEN_EXCHANGE),
                    ("subject_token", &subject),
                    ("subject_token_type", TT_ACCESS_TOKEN),
                    ("actor_token", jwt),
                    ("actor_token_type", TT_JWT),
                    ("resource", TICKETS),
                ])
                .await
            }
        }
    }

    fn refusal(self) -> (u16, &'static str) {
        match self {
            Door::ClientAssertion => (401, "invalid_client"),
            Door::Assertion => (400, "invalid_grant"),
            Door::SubjectToken | Door::ActorToken => (400, "invalid_request"),
        }
    }
}

/// Every door refuses `make()` (a fresh JWT each time: a refusal must not be a replay)
/// with its code, a description naming the parameter and containing `why`.
async fn refused_everywhere(app: &TestApp, why: &str, make: impl Fn() -> String) {
    for door in DOORS {
        let jwt = make();
        let r = door.present(app, &jwt).await;
        let (status, code) = door.refusal();
        r.assert_error(status, code);
        let d = r.body["error_description"].as_str().unwrap_or_default();
        assert!(d.contains(door.parameter()) && d.contains(why), "{door:?}: {d:?} should mention {why:?}");
    }
}

async fn accepted_everywhere(app: &TestApp, make: impl Fn() -> String) {
    for door in DOORS {
        door.present(app, &make()).await.assert_ok();
    }
}

/// Replace the JSON text `from` by `to` in the header or payload of `bot`'s assertion (which
/// carries a `note` member in both) before signing.
fn edited(app: &TestApp, part: &'static str, from: &'static str, to: &'static [u8]) -> String {
    edit(app.assertion("bot"), part, from, to)
}

fn edit(a: Assertion, part: &'static str, from: &'static str, to: &'static [u8]) -> String {
    a.claim("note", json!("n")).header("note", json!("n")).sign_edited(|which, text| {
        if which != part {
            return text;
        }
        let s = String::from_utf8(text).expect("utf8");
        assert!(s.contains(from), "{s} has no {from}");
        let (a, b) = s.split_once(from).expect("present");
        [a.as_bytes(), to, b.as_bytes()].concat()
    })
}

/// RFC 7515 section 5.2 step 3, RFC 7519 section 7.2 step 8, RFC 8259 section 8.1: the
/// decoded header and payload must be UTF-8, also inside members nobody reads.
#[tokio::test]
async fn rfc7515_5_2_invalid_utf8_is_refused() {
    let app = TestApp::spawn().await;
    for bad in
        [&b"\"\xff\""[..], b"\"\xc0\xaf\"", b"\"\x80\"", b"\"\xed\xa0\x80\"", b"\"\xf8\x88\x80\x80\x80\""]
    {
        let bad: &'static [u8] = Box::leak(bad.to_vec().into_boxed_slice());
        refused_everywhere(&app, "payload is not valid UTF-8", || edited(&app, "payload", "\"n\"", bad))
            .await;
        refused_everywhere(&app, "header is not valid UTF-8", || edited(&app, "header", "\"n\"", bad)).await;
    }
    // A lone surrogate escape is no character at all.
    refused_everywhere(&app, "such as a lone surrogate", || edited(&app, "payload", "\"n\"", b"\"\\ud800\""))
        .await;
}

/// RFC 7515 section 4.1 / RFC 7519 section 4.1: absent and null are not the same; a
/// registered member present as null is refused, by name.
#[tokio::test]
async fn null_is_not_absence() {
    let app = TestApp::spawn().await;
    for name in ["kid", "typ", "crit", "jku", "jwk", "x5u", "x5c", "cty"] {
        let why = format!("header parameter '{name}' is null");
        refused_everywhere(&app, &why, || app.assertion("bot").header(name, json!(null)).sign()).await;
    }
    for name in ["nbf", "iat", "exp", "iss", "sub", "aud", "jti"] {
        let why = format!("claim '{name}' is null");
        refused_everywhere(&app, &why, || app.assertion("bot").claim(name, json!(null)).sign()).await;
    }
}

/// RFC 7519 section 5.2: `cty` announces a nested JWT (or other content); we never process one.
#[tokio::test]
async fn rfc7519_5_2_cty_is_refused() {
    let app = TestApp::spawn().await;
    for cty in ["JWT", "application/jwt", "json"] {
        refused_everywhere(&app, "cty", || app.assertion("bot").header("cty", json!(cty)).sign()).await;
    }
}

/// RFC 7515 section 4: duplicate member names in the header or the claims are refused.
#[tokio::test]
async fn rfc7515_4_duplicate_members_are_refused() {
    let app = TestApp::spawn().await;
    refused_everywhere(&app, "has the member 'note' twice", || {
        edited(&app, "payload", "\"note\":\"n\"", b"\"note\":\"n\",\"note\":\"m\"")
    })
    .await;
    refused_everywhere(&app, "has the member 'alg' twice", || {
        edited(&app, "header", "\"note\":\"n\"", b"\"note\":\"n\",\"alg\":\"none\"")
    })
    .await;
}

/// RFC 7515 section 4.1.9: `typ` compares as a media type, case-insensitively, with the
/// `application/` prefix optional. Accepted for an assertion: JWT and
/// client-authentication+jwt (draft-ietf-oauth-rfc7523bis), or no typ at all.
#[tokio::test]
async fn rfc7515_4_1_9_typ_compares_as_a_media_type() {
    let app = TestApp::spawn().await;
    for typ in [
        "JWT",
        "jwt",
        "application/jwt",
        "APPLICATION/JWT",
        "client-authentication+jwt",
        "Client-Authentication+JWT",
        "application/client-authentication+jwt",
    ] {
        accepted_everywhere(&app, || app.assertion("bot").header("typ", json!(typ)).sign()).await;
    }
    accepted_everywhere(&app, || app.assertion("bot").without_header("typ").sign()).await;
    let long = format!("application/{}+jwt", "x".repeat(60));
    // RFC 8725 section 3.11: an access token (at+jwt) or an ID-JAG is not an assertion.
    for typ in [
        "at+jwt",
        "application/AT+JWT",
        "text/jwt",
        "application/jwt; charset=utf-8",
        "oauth-id-jag+jwt",
        &long,
    ] {
        // The description carries the whole value (no cut at 32 characters).
        let why = format!("typ '{typ}' is not accepted");
        refused_everywhere(&app, &why, || app.assertion("bot").header("typ", json!(typ)).sign()).await;
    }
    // And it says what would be: the accepted set of an assertion.
    let r =
        app.client_credentials(&app.assertion("bot").header("typ", json!("at+jwt")).sign(), DOCS, None).await;
    r.assert_error(401, "invalid_client");
    let d = r.body["error_description"].as_str().unwrap_or_default();
    assert!(d.contains("(accepted: jwt, client-authentication+jwt, or none)"), "{d}");
}

/// draft-ietf-oauth-rfc7523bis (and the 2025 private_key_jwt audience advisories): `aud` is
/// exactly the issuer identifier, as a string or a one-element array; nothing else may ride
/// along, and the token endpoint URL is not the issuer.
#[tokio::test]
async fn rfc7523bis_audience_is_exactly_the_issuer() {
    let app = TestApp::spawn().await;
    let issuer = app.issuer.clone();
    accepted_everywhere(&app, || app.assertion("bot").claim("aud", json!([issuer])).sign()).await;
    for aud in [
        json!([issuer, "https://evil.example"]),
        json!(["https://evil.example", issuer]),
        json!([issuer, issuer]),
        json!(app.token_endpoint()),
        json!([app.token_endpoint()]),
        json!(format!("{issuer}/")),
        json!([]),
    ] {
        refused_everywhere(&app, "aud must be exactly", || {
            app.assertion("bot").claim("aud", aud.clone()).sign()
        })
        .await;
    }
}

/// The documented compatibility setting for Authlib, which puts the token endpoint URL in
/// `aud`: off by default (above), on here; still exactly one audience.
#[tokio::test]
async fn token_endpoint_audience_only_with_the_compatibility_setting() {
    let app = TestApp::spawn_with(AppOptions {
        tweak: tweak(|s| s.tokens.accept_token_endpoint_audience = true),
        ..AppOptions::default()
    })
    .await;
    let endpoint = app.token_endpoint();
    accepted_everywhere(&app, || app.assertion("bot").claim("aud", json!(endpoint)).sign()).await;
    accepted_everywhere(&app, || app.assertion("bot").claim("aud", json!(app.issuer)).sign()).await;
    refused_everywhere(&app, "aud must be exactly", || {
        app.assertion("bot").claim("aud", json!([endpoint, "https://evil.example"])).sign()
    })
    .await;
}

/// Our own access tokens go through the same parser: a subject_token that says `at+jwt` but
/// whose payload is not UTF-8 is refused before any key is looked at.
#[tokio::test]
async fn access_token_subjects_are_parsed_strictly_too() {
    let app = TestApp::spawn().await;
    let fake = edit(app.assertion("bot").header("typ", json!("at+jwt")), "payload", "\"n\"", b"\"\xff\"");
    let r = app
        .post_token(&[
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", &fake),
            ("subject_token_type", TT_ACCESS_TOKEN),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", &app.assertion("bot").sign()),
            ("resource", TICKETS),
        ])
        .await;
    r.assert_error(400, "invalid_request");
    let d = r.body["error_description"].as_str().unwrap_or_default();
    assert!(d.contains("subject_token") && d.contains("not valid UTF-8"), "{d}");
}

/// RFC 9110 section 15.5.6: a known endpoint with the wrong method answers 405 with `Allow`.
#[tokio::test]
async fn wrong_method_is_405_with_allow() {
    let app = TestApp::spawn().await;
    let r = app.get("/token").await;
    assert_eq!(r.status, 405, "{}", r.text);
    assert_eq!(r.header("allow"), Some("POST"));
    assert_eq!(r.body["error"], "invalid_request");
    for path in ["/jwks.json", "/.well-known/oauth-authorization-server", "/healthz"] {
        let r = Reply::read(app.http.post(format!("{}{path}", app.base)).send().await.expect("POST")).await;
        assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")), "{path}");
        let head = app.http.head(format!("{}{path}", app.base)).send().await.expect("HEAD");
        assert_eq!(head.status().as_u16(), 200, "HEAD {path}");
    }
    assert_eq!(app.get("/nowhere").await.status, 404);
}
