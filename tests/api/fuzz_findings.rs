//! Regression tests for what the fuzz targets found (fuzz/README.md), through the token
//! endpoint, with each door's error code: `client_assertion` (RFC 7523 section 3.2: 401
//! invalid_client), the jwt-bearer `assertion` (section 3.1: invalid_grant), the token
//! exchange `subject_token` (RFC 8693 section 2.2.2: invalid_request).

use crate::helpers::*;
use serde_json::json;

/// Present `jwt` (an assertion of `bot`) as a client assertion, as the jwt-bearer grant and as
/// a token exchange's subject, and expect each refusal with its code and `why`.
async fn refused_at_every_door(app: &TestApp, why: &str, make: impl Fn() -> String) {
    let doors: [(&str, u16, &str); 3] = [
        ("client_assertion", 401, "invalid_client"),
        ("assertion", 400, "invalid_grant"),
        ("subject_token", 400, "invalid_request"),
    ];
    for (param, status, code) in doors {
        let jwt = make();
        let r = match param {
            "client_assertion" => app.client_credentials(&jwt, DOCS, None).await,
            "assertion" => {
                app.post_token(&[("grant_type", GRANT_JWT_BEARER), ("assertion", &jwt), ("resource", DOCS)])
                    .await
            }
            _ => {
                app.post_token(&[
                    ("grant_type", GRANT_TOKEN_EXCHANGE),
                    ("subject_token", &jwt),
                    ("subject_token_type", TT_JWT),
                    ("resource", DOCS),
                ])
                .await
            }
        };
        r.assert_error(status, code);
        let d = r.body["error_description"].as_str().unwrap_or_default();
        assert!(d.contains(param) && d.contains(why), "{param}: {d:?} should mention {why:?}");
    }
}

/// RFC 7516 section 9: a JOSE header with `enc` is a JWE's header, so three parts with `enc`
/// are no JWS. The differential fuzz target found that both we and jsonwebtoken accepted such
/// a header as a JWS when its signature verified; we now refuse it, like `zip`.
#[tokio::test]
async fn rfc7516_9_a_header_with_enc_is_not_a_jws() {
    let app = TestApp::spawn().await;
    for enc in [json!("A128GCM"), json!("A256CBC-HS512")] {
        refused_at_every_door(&app, "carries 'enc'", || {
            app.assertion("bot").header("enc", enc.clone()).sign()
        })
        .await;
    }
    refused_at_every_door(&app, "header parameter 'enc' is null", || {
        app.assertion("bot").header("enc", json!(null)).sign()
    })
    .await;
}
