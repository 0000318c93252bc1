//! Replay protection (RFC 7523 §3 item 7): the jti is spent atomically in Redis after the
//! signature verifies; a second use issues nothing.

use crate::helpers::*;
use agent_sts::clock::Clock;
use agent_sts::config::ReplayBackend;
use serde_json::json;

#[tokio::test]
async fn rfc7523_3_replayed_client_assertion_is_invalid_client() {
    let app = TestApp::spawn().await;
    let a = app.assertion("bot").sign();
    app.client_credentials(&a, DOCS, None).await.assert_ok();
    let again = app.client_credentials(&a, DOCS, None).await;
    again.assert_error(401, "invalid_client");
    assert!(again.body["error_description"].as_str().unwrap_or_default().contains("already used"));
}

#[tokio::test]
async fn rfc7523_3_replayed_grant_assertion_is_invalid_grant() {
    let app = TestApp::spawn().await;
    let a = app.assertion("bot").sign();
    let grant = [("grant_type", GRANT_JWT_BEARER), ("assertion", a.as_str()), ("resource", DOCS)];
    app.post_token(&grant).await.assert_ok();
    app.post_token(&grant).await.assert_error(400, "invalid_grant");
    // The same jti is spent whichever way the assertion comes back.
    app.client_credentials(&a, DOCS, None).await.assert_error(401, "invalid_client");
}

/// A refused request (here: the policy denies the target) still spent the assertion.
#[tokio::test]
async fn an_assertion_is_spent_even_when_the_policy_refuses() {
    let app = TestApp::spawn().await;
    let a = app.assertion("bot").sign();
    app.client_credentials(&a, UNREACHED, None).await.assert_error(400, "invalid_target");
    app.client_credentials(&a, DOCS, None).await.assert_error(401, "invalid_client");
}

/// Many requests racing with one assertion: exactly one token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_requests_with_one_assertion_get_one_token() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let a = std::sync::Arc::new(app.assertion("bot").sign());
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (app, a) = (app.clone(), a.clone());
            tokio::spawn(async move { app.client_credentials(&a, DOCS, None).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let r = t.await.expect("join");
        if r.status == 200 {
            ok += 1;
        } else {
            r.assert_error(401, "invalid_client");
        }
    }
    assert_eq!(ok, 1, "exactly one of the racing requests gets a token");
}

/// Two broker instances sharing one Redis: an assertion spent at one is refused at the other.
#[tokio::test]
async fn replay_is_refused_across_broker_instances() {
    let prefix = unique_prefix();
    // Instances behind one load balancer share the issuer identifier and the Redis.
    let issuer = format!("http://127.0.0.1:{}", free_port());
    let shared = || AppOptions {
        key_prefix: Some(prefix.clone()),
        issuer: Some(issuer.clone()),
        ..AppOptions::default()
    };
    let one = TestApp::spawn_with(shared()).await;
    let two = TestApp::spawn_with(shared()).await;
    let a = one.assertion("bot").sign();
    one.client_credentials(&a, DOCS, None).await.assert_ok();
    two.client_credentials(&a, DOCS, None).await.assert_error(401, "invalid_client");
}

/// The in-memory store (dev mode) refuses replays too.
#[tokio::test]
async fn memory_replay_store_refuses_replays() {
    let app = TestApp::spawn_with(AppOptions {
        replay: agent_sts::config::ReplayBackend::Memory,
        ..AppOptions::default()
    })
    .await;
    let a = app.assertion("bot").sign();
    app.client_credentials(&a, DOCS, None).await.assert_ok();
    app.client_credentials(&a, DOCS, None).await.assert_error(401, "invalid_client");
}

/// RFC 7523 §3 item 7: an assertion is accepted until the end of the second `exp` + the past
/// skew (the checklist counts whole seconds), so its spent record must last that long too. Used
/// in that last second, it is still refused when replayed in it, in either store.
#[tokio::test]
async fn rfc7523_3_assertion_spent_in_its_last_accepted_second_is_not_replayable() {
    for replay in [ReplayBackend::Redis, ReplayBackend::Memory] {
        let app = TestApp::spawn_with(AppOptions { replay, ..AppOptions::default() }).await;
        let mut tries = 0;
        let (a, last_second) = loop {
            // Move the broker's clock to the start of a second, and sign an assertion whose
            // exp + 60 s of skew is that second: its last accepted one.
            app.clock.advance_ms(1000 - app.clock.now_ms().rem_euclid(1000));
            let exp = app.now() - 60;
            let a = app.assertion("bot").claim("exp", json!(exp)).claim("iat", json!(exp - 60)).sign();
            let r = app.client_credentials(&a, DOCS, None).await;
            if r.status == 200 {
                break (a, exp + 60);
            }
            // Only if this machine took the whole second to answer: the assertion expired.
            r.assert_error(401, "invalid_client");
            tries += 1;
            assert!(tries < 3, "{replay:?}: never accepted in its last second: {}", r.text);
        };
        // Back to the start of that second: the checklist still accepts the assertion, so only
        // the spent record can refuse it.
        app.clock.advance_ms(last_second * 1000 - app.clock.now_ms());
        let again = app.client_credentials(&a, DOCS, None).await;
        again.assert_error(401, "invalid_client");
        let d = again.body["error_description"].as_str().unwrap_or_default();
        assert!(d.contains("already used"), "{replay:?}: {d}");
    }
}
