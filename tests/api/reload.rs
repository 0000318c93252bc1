//! Reload without restart, in process: the snapshot swap, and a request in flight finishing
//! under the policy it started with.

use crate::helpers::*;
use crate::process::{policy_with, redis_command};
use std::time::Duration;

/// A request held in flight (its replay spend waits on a paused Redis) while the policy is
/// reloaded without its agent: it finishes under the snapshot it started with and gets its
/// token; the next request from that agent is refused by the new policy.
#[tokio::test]
async fn in_flight_request_finishes_under_its_snapshot() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(AppOptions {
        redis_url: Some(redis.url()),
        configure: |s| s.replay.command_timeout_ms = 5000,
        ..AppOptions::default()
    })
    .await;
    app.token_for("bot", DOCS, None).await;

    redis_command(redis.port, &["CLIENT", "PAUSE", "1000", "WRITE"]);
    let held = {
        let a = app.assertion("bot").sign();
        let (http, base) = (app.http.clone(), app.base.clone());
        tokio::spawn(async move { post_client_credentials(&http, &base, &a, DOCS).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(&app.policy_path, policy_with(&["other-bot"])).expect("rewrite");
    let reloader = app.reloader.clone();
    tokio::task::spawn_blocking(move || reloader.reload("test")).await.expect("join").expect("valid policy");
    assert!(!held.is_finished(), "the request was still in flight during the reload");
    held.await.expect("join").assert_ok();
    app.client_credentials(&app.assertion("bot").sign(), DOCS, None)
        .await
        .assert_error(401, "invalid_client");
    app.token_for("other-bot", TICKETS, None).await;
}

/// An invalid policy is refused as a whole: the reload reports the file and the reason and
/// nothing of it is served (not even its valid parts).
#[tokio::test]
async fn invalid_policy_is_refused_whole() {
    let app = TestApp::spawn().await;
    let broken = format!("{}\n[[agent]]\nid = \"ghost\"\ndisabled = true\n[[agent.allow]]\nserver = \"nowhere\"\nscopes = [\"read\"]\n", policy_with(&["bot"]));
    std::fs::write(&app.policy_path, broken).expect("rewrite");
    let reloader = app.reloader.clone();
    let err = tokio::task::spawn_blocking(move || reloader.reload("test")).await.expect("join").unwrap_err();
    assert!(err.contains("policy.toml") && err.contains("no such server"), "{err}");
    // The old policy (with other-bot) still serves.
    app.token_for("other-bot", TICKETS, None).await;
}
