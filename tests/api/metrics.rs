//! `GET /metrics` (Prometheus text format): counters after known requests, bounded labels,
//! and the separate metrics listener.

use crate::helpers::*;
use serde_json::json;
use std::collections::HashMap;

/// Parse the exposition text into `series{labels} -> value`.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').expect("series value");
        out.insert(series.to_string(), value.parse::<f64>().expect("number"));
    }
    out
}

pub fn value(m: &HashMap<String, f64>, series: &str) -> f64 {
    *m.get(series).unwrap_or_else(|| panic!("no series {series}"))
}

async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let r = app.get("/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/plain; version=0.0.4")));
    parse_metrics(&r.text)
}

const CC_ISSUED: &str =
    "agent_sts_token_requests_total{grant=\"client_credentials\",outcome=\"issued\",error=\"none\"}";
const CC_INVALID_CLIENT: &str =
    "agent_sts_token_requests_total{grant=\"client_credentials\",outcome=\"refused\",error=\"invalid_client\"}";

#[tokio::test]
async fn counters_follow_known_requests() {
    let app = TestApp::spawn().await;
    let before = scrape(&app).await;
    assert_eq!(value(&before, CC_ISSUED), 0.0);

    // One token, one replay of its assertion, one bad signature, one unknown resource, one
    // form that does not parse.
    let assertion = app.assertion("bot").sign();
    app.client_credentials(&assertion, DOCS, None).await.assert_ok();
    app.client_credentials(&assertion, DOCS, None).await.assert_error(401, "invalid_client");
    let forged = app.assertion("bot").signed_by(&agent("other-bot").keys[0].key).sign();
    app.client_credentials(&forged, DOCS, None).await.assert_error(401, "invalid_client");
    app.client_credentials(&app.assertion("bot").sign(), "https://nowhere.test/mcp", None)
        .await
        .assert_error(400, "invalid_target");
    app.post_token(&[("grant_type", "password")]).await.assert_error(400, "unsupported_grant_type");

    let m = scrape(&app).await;
    assert_eq!(value(&m, CC_ISSUED), 1.0);
    assert_eq!(value(&m, CC_INVALID_CLIENT), 2.0);
    assert_eq!(
        value(&m, "agent_sts_token_requests_total{grant=\"client_credentials\",outcome=\"refused\",error=\"invalid_target\"}"),
        1.0
    );
    assert_eq!(
        value(&m, "agent_sts_token_requests_total{grant=\"unknown\",outcome=\"refused\",error=\"unsupported_grant_type\"}"),
        1.0
    );
    assert_eq!(
        value(&m, "agent_sts_token_request_duration_seconds_count{grant=\"client_credentials\"}"),
        4.0
    );
    assert_eq!(value(&m, "agent_sts_tokens_issued_total{server=\"docs\"}"), 1.0);
    assert_eq!(value(&m, "agent_sts_replay_refusals_total"), 1.0);
    // Three spends reached the store (the fresh one, its replay, the invalid_target one);
    // the forged assertion never did (signature first, replay last).
    assert_eq!(value(&m, "agent_sts_replay_store_duration_seconds_count"), 3.0);
    assert_eq!(value(&m, "agent_sts_replay_store_errors_total"), 0.0);
    assert_eq!(value(&m, "agent_sts_build_info{version=\"0.1.0\"}"), 1.0);
}

/// No label takes a value from the request: an unknown resource, a made-up agent id and a
/// made-up grant leave no trace in the label values.
#[tokio::test]
async fn labels_never_carry_request_strings() {
    let app = TestApp::spawn().await;
    let marker = "zz-label-probe";
    let fake = app.assertion("bot").claim("iss", json!(marker)).claim("sub", json!(marker)).sign();
    app.client_credentials(&fake, &format!("https://{marker}.test/mcp"), Some(marker))
        .await
        .assert_error(401, "invalid_client");
    app.post_token(&[("grant_type", marker)]).await.assert_error(400, "unsupported_grant_type");
    let r = app.get("/metrics").await;
    assert!(!r.text.contains(marker), "a request string became a label value");
    for line in r.text.lines().filter(|l| l.starts_with("agent_sts_tokens_issued_total{")) {
        let server = line.split('"').nth(1).expect("label");
        assert!(["docs", "tickets", "unreached"].contains(&server), "{line}");
    }
}

/// `metrics.listen`: `/metrics` on its own port and not on the public one.
#[tokio::test]
async fn separate_metrics_listener() {
    let app = TestApp::spawn_with(AppOptions {
        configure: |s| s.metrics.listen = Some("127.0.0.1:0".into()),
        ..AppOptions::default()
    })
    .await;
    let port = app.metrics_port.expect("metrics listener bound");
    assert_eq!(app.get("/metrics").await.status, 404, "not on the public listener");
    let r = app.http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.expect("GET");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("text");
    assert!(text.contains("agent_sts_token_requests_total"));
    let token = app.http.post(format!("http://127.0.0.1:{port}/token")).send().await.expect("POST");
    assert_eq!(token.status(), 404, "the metrics listener serves no token endpoint");
}

/// Trusted issuers' key refreshes are counted by result: one issuer answers, one is down.
#[tokio::test]
async fn issuer_key_fetches_are_counted_by_result() {
    let idp = crate::idp::Idp::start();
    let down = format!("http://127.0.0.1:{}/jwks", free_port());
    let app = TestApp::spawn_with(AppOptions {
        extra_policy: format!(
            "[[issuer]]\nid = \"ci\"\nissuer = \"{}\"\njwks_uri = \"{}\"\n\n\
             [[issuer]]\nid = \"down\"\nissuer = \"https://down.example\"\njwks_uri = \"{down}\"\n",
            idp.issuer(),
            idp.jwks_uri()
        ),
        ..AppOptions::default()
    })
    .await;
    let counted = crate::process::eventually(std::time::Duration::from_secs(10), || async {
        let m = scrape(&app).await;
        value(&m, "agent_sts_issuer_key_fetches_total{result=\"ok\"}") >= 1.0
            && value(&m, "agent_sts_issuer_key_fetches_total{result=\"failed\"}") >= 1.0
    })
    .await;
    assert!(counted, "{}", app.get("/metrics").await.text);
}
