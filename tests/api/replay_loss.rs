//! Replay protection that survives losing Redis (RFC 7523 section 3 item 7: a jti is used
//! once). A Redis that comes back empty, or a spend that did not reach the replicas, must
//! never turn into a second token for one assertion.

use crate::helpers::*;
use crate::replay_support::*;
use agent_sts::clock::Clock;
use agent_sts::replay::spent_key_name;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn on(
    redis_url: String,
    prefix: Option<String>,
    tweak: impl Fn(&mut agent_sts::config::Settings) + Send + Sync + 'static,
) -> AppOptions {
    AppOptions {
        redis_url: Some(redis_url),
        key_prefix: prefix,
        tweak: Some(Arc::new(tweak)),
        ..AppOptions::default()
    }
}

/// A 503 that says the record was lost and when a fresh assertion will pass.
#[track_caller]
fn assert_record_lost(r: &Reply) {
    r.assert_error(503, "temporarily_unavailable");
    let d = r.body["error_description"].as_str().unwrap_or_default();
    assert!(d.contains("replay record was lost") && d.contains("sign a new assertion"), "{}", r.text);
    let after: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).expect("numeric Retry-After");
    assert!(after >= 1, "{after}");
}

/// A replay after a loss is refused either way: 503 while the store cannot vouch for it,
/// 401 once it is spent again (its second presentation since the loss).
#[track_caller]
fn assert_refused(r: &Reply) {
    match r.status {
        503 => r.assert_error(503, "temporarily_unavailable"),
        _ => r.assert_error(401, "invalid_client"),
    }
}

/// Redis restarted empty (no persistence): the 20 assertions spent before the restart are
/// all refused after it, and a freshly signed assertion gets a token within 2 s of Redis
/// answering, with the default settings (tokens.future_skew_secs = 1: a fresh assertion's iat
/// is then past the loss plus the tolerance within 1 to 2 s of the loss).
#[tokio::test]
async fn rfc7523_3_redis_restarted_empty_refuses_what_was_spent_before() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let app = TestApp::spawn_with(on(redis.url(), None, |_| {})).await;
    let spent: Vec<String> = (0..20).map(|_| app.assertion("bot").sign()).collect();
    for a in &spent {
        app.client_credentials(a, DOCS, None).await.assert_ok();
    }

    redis.stop();
    let _redis = RedisServer::start_on(port);
    let answering = Instant::now();
    // Half of them replayed at once (the first requests may still find the old connection).
    for a in &spent[..10] {
        assert_refused(&app.client_credentials(a, DOCS, None).await);
    }
    // Once the broker has seen the loss (/readyz says so; the wait is for the reconnect only,
    // a liveness bound, not a figure), an assertion signed 2 s of the broker's clock later
    // (past the loss plus tokens.future_skew_secs = 1, in whole seconds) gets a token at once.
    let seen = within(Duration::from_secs(20), || async {
        let r = app.get("/readyz").await;
        r.body["replay_record_lost"].is_object().then_some(())
    })
    .await;
    assert!(
        seen.is_some(),
        "the broker never reported the loss ({:?} after Redis answered)",
        answering.elapsed()
    );
    app.clock.advance_secs(2);
    app.client_credentials(&app.assertion("bot").sign(), DOCS, None).await.assert_ok();

    // Fresh assertions pass, and the other half, first replayed now, are refused and told why.
    for a in &spent[10..19] {
        assert_record_lost(&app.client_credentials(a, DOCS, None).await);
    }
    // The jwt-bearer grant too (RFC 7523 section 2.1).
    let grant = [("grant_type", GRANT_JWT_BEARER), ("assertion", spent[19].as_str()), ("resource", DOCS)];
    assert_record_lost(&app.post_token(&grant).await);
    // And again: still no token, whatever the way in.
    for a in &spent {
        assert_refused(&app.client_credentials(a, DOCS, None).await);
    }

    // /readyz: ready (fresh assertions pass), and says the window.
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    let lost = &ready.body["replay_record_lost"];
    assert_eq!(lost["groups_affected"], json!(64), "{}", ready.text);
    let ends = lost["window_ends_at"].as_i64().expect("window end");
    // L + F + P + 1 = 300 + 1 + 60 + 1 seconds after the loss.
    assert!((app.now() + 355..=app.now() + 363).contains(&ends), "{}", ready.text);
}

/// The same loss through FLUSHALL on a running Redis (an operator's mistake, a wiped node).
#[tokio::test]
async fn rfc7523_3_flushed_redis_refuses_what_was_spent_before() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(on(redis.url(), None, |_| {})).await;
    let (a, b) = (app.assertion("bot").sign(), app.assertion("bot").sign());
    app.client_credentials(&a, DOCS, None).await.assert_ok();
    app.client_credentials(&b, DOCS, None).await.assert_ok();
    redis_cmd(&redis.url(), &["FLUSHALL"]).await.expect("FLUSHALL");
    assert_record_lost(&app.client_credentials(&a, DOCS, None).await);
    assert_refused(&app.client_credentials(&a, DOCS, None).await);
    // Fresh assertions are accepted again once signed past the loss plus
    // tokens.future_skew_secs (1 s, in whole seconds) of the group they fall in: /readyz
    // checks every group (so each has seen the loss), then 2 s of the broker's clock later.
    let ready = app.get("/readyz").await;
    assert!(ready.body["replay_record_lost"].is_object(), "{}", ready.text);
    app.clock.advance_secs(2);
    app.client_credentials(&app.assertion("bot").sign(), DOCS, None).await.assert_ok();
    // Still refused once fresh assertions pass again.
    assert_record_lost(&app.client_credentials(&b, DOCS, None).await);
}

/// The spent key lives exactly until the assertion's exp plus the skew (the leeway during
/// which the checklist would still accept it): read back from Redis as PTTL.
#[tokio::test]
async fn spent_key_lives_until_exp_plus_skew() {
    let prefix = unique_prefix();
    let app =
        TestApp::spawn_with(AppOptions { key_prefix: Some(prefix.clone()), ..AppOptions::default() }).await;
    let jti = agent_sts::crypto::random_id();
    let exp = app.now() + 100;
    let a = app.assertion("bot").claim("jti", json!(jti)).claim("exp", json!(exp)).sign();
    let before = app.clock.now_ms();
    app.client_credentials(&a, DOCS, None).await.assert_ok();
    let pttl = redis_cmd(&shared_redis_url(), &["PTTL", &spent_key_name(&prefix, "bot", &jti)]).await;
    let after = app.clock.now_ms();
    let Ok(redis::Value::Int(pttl)) = pttl else { panic!("PTTL: {pttl:?}") };
    // Until the end of the second exp + 60 s of skew: the last the assertion is accepted in.
    let until = (exp + 60 + 1) * 1000;
    assert!(
        (until - after - 5..=until - before + 5).contains(&pttl),
        "PTTL {pttl} ms, expected {}..{} ms",
        until - after,
        until - before
    );
}

/// Redis paused past the command timeout: 503 in bounded time, no request hangs; once
/// the pause ends, tokens flow again.
#[tokio::test]
async fn paused_redis_gives_503_in_bounded_time() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(on(redis.url(), None, |_| {})).await;
    app.client_credentials(&app.assertion("bot").sign(), DOCS, None).await.assert_ok();
    redis_cmd(&redis.url(), &["CLIENT", "PAUSE", "2500", "ALL"]).await.expect("CLIENT PAUSE");
    for _ in 0..3 {
        let started = Instant::now();
        let r = app.client_credentials(&app.assertion("bot").sign(), DOCS, None).await;
        r.assert_error(503, "temporarily_unavailable");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?} (command timeout 250 ms)",
            started.elapsed()
        );
    }
    assert_eq!(app.get("/readyz").await.status, 503);
    let back = within(Duration::from_secs(6), || async {
        let r = app.client_credentials(&app.assertion("bot").sign(), DOCS, None).await;
        (r.status == 200).then_some(())
    })
    .await;
    assert!(back.is_some(), "tokens again after the pause");
}

/// With replay.min_replica_acks = 1 a token is issued only when the spend reached a replica
/// (WAIT): with the replica gone, 503 and no token; the assertion stays spent on the master,
/// so at most one token can ever come of it.
#[tokio::test]
async fn spend_not_confirmed_by_a_replica_gives_503() {
    // Full sync at once (Redis 7 waits 5 s for more replicas by default).
    let master = RedisServer::spawn_with(free_port(), &["--repl-diskless-sync-delay", "0"]);
    master.wait_ready();
    let replica_port = free_port();
    let dir = tempfile::tempdir().expect("tmp");
    let (master_port, dir_arg) = (master.port.to_string(), dir.path().display().to_string());
    let mut replica = RedisServer::spawn_with(
        replica_port,
        &["--replicaof", "127.0.0.1", &master_port, "--repl-diskless-load", "on-empty-db", "--dir", &dir_arg],
    );
    replica.wait_ready();
    let linked = within(Duration::from_secs(10), || async {
        let info = redis_cmd(&master.url(), &["INFO", "replication"]).await.ok()?;
        let redis::Value::BulkString(b) = info else { return None };
        String::from_utf8_lossy(&b).contains("state=online").then_some(())
    })
    .await;
    assert!(linked.is_some(), "replica linked");
    // Generous timeouts: a busy CI machine may take a while to schedule the replica.
    let app = TestApp::spawn_with(on(master.url(), None, |s| {
        s.replay.min_replica_acks = 1;
        s.replay.replica_ack_timeout_ms = 1500;
        s.replay.command_timeout_ms = 3000;
    }))
    .await;
    app.client_credentials(&app.assertion("bot").sign(), DOCS, None).await.assert_ok();

    replica.stop();
    let a = app.assertion("bot").sign();
    let r = app.client_credentials(&a, DOCS, None).await;
    r.assert_error(503, "temporarily_unavailable");
    assert!(r.text.contains("replicas"), "{}", r.text);
    // Spent on the master: the same assertion is a replay now, never a token.
    app.client_credentials(&a, DOCS, None).await.assert_error(401, "invalid_client");
}

/// A trusted issuer's single-use token is not held to our assertion lifetime cap, so its
/// `exp` says nothing about whether it was presented before a loss of the replay record
/// (RFC 7523 section 3 item 7). One issued before the loss stays refused for as long as it
/// passes the checklist, also after the loss window that frees agents' assertions has
/// ended; one issued after the loss is accepted.
#[tokio::test]
async fn rfc7523_3_platform_token_from_before_a_loss_is_refused_after_the_window() {
    use crate::idp::Idp;
    let redis = RedisServer::start();
    let idp = Idp::start();
    let policy = format!(
        r#"
[[issuer]]
id = "ci"
issuer = "{}"
jwks_uri = "{}"
algorithms = ["RS256"]
max_token_age_secs = 7200

[[agent]]
id = "ci-bot"
[[agent.allow]]
server = "docs"
scopes = ["read"]
default_scopes = ["read"]

[[federation]]
id = "ci-main"
issuer = "ci"
agent = "ci-bot"
[federation.claims]
repository = "acme/x"
"#,
        idp.issuer(),
        idp.jwks_uri()
    );
    let app = TestApp::spawn_with(AppOptions {
        redis_url: Some(redis.url()),
        extra_policy: policy,
        tweak: tweak(|s| s.issuers.retry_initial_ms = 50),
        ..AppOptions::default()
    })
    .await;
    crate::idp::wait_keys_fetched(&[&idp]).await;
    let token = |iat: i64| {
        let claims = json!({"iss": idp.issuer(), "aud": app.issuer, "sub": "repo:acme/x",
            "jti": agent_sts::crypto::random_id(), "iat": iat, "nbf": iat, "exp": iat + 3600,
            "repository": "acme/x"});
        idp.sign(&claims, "rsa-1")
    };
    let before = token(app.now() - 30);
    redis_cmd(&redis.url(), &["FLUSHALL"]).await.expect("FLUSHALL");
    let ready = app.get("/readyz").await;
    let ends = ready.body["replay_record_lost"]["window_ends_at"].as_i64().expect("window end");
    // Past the end of the window, the token still passes every other check.
    app.clock.advance_secs(ends + 1 - app.now());
    let grant = [("grant_type", GRANT_JWT_BEARER), ("assertion", before.as_str()), ("resource", DOCS)];
    let r = app.post_token(&grant).await;
    r.assert_error(503, "temporarily_unavailable");
    assert!(
        r.body["error_description"].as_str().unwrap_or_default().contains("replay record was lost"),
        "{}",
        r.text
    );
    let after = token(app.now());
    app.post_token(&[("grant_type", GRANT_JWT_BEARER), ("assertion", after.as_str()), ("resource", DOCS)])
        .await
        .assert_ok();
}
