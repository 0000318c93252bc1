//! Per-agent rate limits (policy `rate_limit`): one budget across broker instances (Redis),
//! 429 with `Retry-After` when it is spent, and never spent by a request whose credentials
//! did not verify.

use crate::helpers::*;
use agent_sts::config::ReplayBackend;

/// `bot` may have 2 tokens at once, then one every 100 s (so the test never refills).
fn limited_policy() -> String {
    policy_toml().replacen(
        "id = \"bot\"\n",
        "id = \"bot\"\nrate_limit = { per_second = 0.01, burst = 2 }\n",
        1,
    )
}

fn shared(prefix: &str, issuer: &str) -> AppOptions {
    AppOptions {
        key_prefix: Some(prefix.to_string()),
        issuer: Some(issuer.to_string()),
        policy: Some(limited_policy()),
        ..AppOptions::default()
    }
}

#[track_caller]
fn assert_rate_limited(r: &Reply) {
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.body["error"], "temporarily_unavailable", "{}", r.text);
    assert!(r.body.get("access_token").is_none());
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().expect("seconds");
    assert!((1..=100).contains(&retry), "Retry-After {retry}");
}

/// Two instances behind one load balancer share one Redis and so one budget: the burst is
/// spent across both, and the next request at either is 429.
#[tokio::test]
async fn rate_limit_is_shared_across_instances() {
    let prefix = unique_prefix();
    let issuer = format!("http://127.0.0.1:{}", free_port());
    let one = TestApp::spawn_with(shared(&prefix, &issuer)).await;
    let two = TestApp::spawn_with(shared(&prefix, &issuer)).await;
    one.client_credentials(&one.assertion("bot").sign(), DOCS, None).await.assert_ok();
    two.client_credentials(&two.assertion("bot").sign(), DOCS, None).await.assert_ok();
    assert_rate_limited(&one.client_credentials(&one.assertion("bot").sign(), DOCS, None).await);
    assert_rate_limited(&two.client_credentials(&two.assertion("bot").sign(), DOCS, None).await);
    // Another agent has no limit; the limited one's budget is its own.
    one.token_for("other-bot", TICKETS, None).await;
    let m = crate::metrics::parse_metrics(&one.get("/metrics").await.text);
    assert_eq!(crate::metrics::value(&m, "agent_sts_rate_limited_total"), 1.0);
    assert_eq!(
        crate::metrics::value(
            &m,
            "agent_sts_token_requests_total{grant=\"client_credentials\",outcome=\"refused\",error=\"rate_limited\"}"
        ),
        1.0
    );
}

/// An attacker without the agent's key can't exhaust its budget: forged signatures, a wrong
/// audience and replayed assertions are refused before the limiter is asked.
#[tokio::test]
async fn unverified_requests_never_spend_the_budget() {
    let prefix = unique_prefix();
    let issuer = format!("http://127.0.0.1:{}", free_port());
    let app = TestApp::spawn_with(shared(&prefix, &issuer)).await;
    let forger = &agent("other-bot").keys[0].key;
    for _ in 0..5 {
        let forged = app.assertion("bot").signed_by(forger).sign();
        app.client_credentials(&forged, DOCS, None).await.assert_error(401, "invalid_client");
        let wrong_aud =
            app.assertion("bot").claim("aud", serde_json::json!("https://elsewhere.example")).sign();
        app.client_credentials(&wrong_aud, DOCS, None).await.assert_error(401, "invalid_client");
    }
    let once = app.assertion("bot").sign();
    app.client_credentials(&once, DOCS, None).await.assert_ok();
    for _ in 0..5 {
        app.client_credentials(&once, DOCS, None).await.assert_error(401, "invalid_client");
    }
    // The budget held 2: one is spent by the genuine request above, one is left.
    app.client_credentials(&app.assertion("bot").sign(), DOCS, None).await.assert_ok();
    assert_rate_limited(&app.client_credentials(&app.assertion("bot").sign(), DOCS, None).await);
}

/// The memory backend (one process) limits too.
#[tokio::test]
async fn memory_backend_limits_per_process() {
    let app = TestApp::spawn_with(AppOptions {
        replay: ReplayBackend::Memory,
        policy: Some(limited_policy()),
        ..AppOptions::default()
    })
    .await;
    app.token_for("bot", DOCS, None).await;
    app.token_for("bot", DOCS, None).await;
    assert_rate_limited(&app.client_credentials(&app.assertion("bot").sign(), DOCS, None).await);
}

/// A limit that is not a rate is refused when the policy loads.
#[test]
fn invalid_rate_limits_are_refused_at_load() {
    for bad in
        ["{ per_second = 0, burst = 1 }", "{ per_second = 1, burst = 0 }", "{ per_second = -1, burst = 1 }"]
    {
        let text =
            policy_toml().replacen("id = \"bot\"\n", &format!("id = \"bot\"\nrate_limit = {bad}\n"), 1);
        let e = agent_sts::policy::Policy::from_sources(&[("p.toml".into(), text)]).unwrap_err();
        assert!(e.reason.contains("rate_limit"), "{e}");
    }
}
