//! Fail closed: with the replay store down, no token is issued (503 temporarily_unavailable
//! with Retry-After); when it comes back, tokens flow again without restarting the broker.

use crate::helpers::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A Redis that comes up empty has lost its replay record: fresh assertions pass once the
/// future tolerance has gone by (here 1 s; see `replay_loss` for the window itself).
fn short_skew(redis_url: String) -> AppOptions {
    AppOptions {
        redis_url: Some(redis_url),
        tweak: Some(Arc::new(|s| s.tokens.future_skew_secs = 1)),
        ..AppOptions::default()
    }
}

/// Keep asking with fresh assertions until a token comes, for at most `limit`.
async fn until_token(app: &TestApp, limit: Duration) -> Reply {
    let deadline = Instant::now() + limit;
    loop {
        let r = app.client_credentials(&app.assertion("bot").sign(), DOCS, None).await;
        if r.status == 200 || Instant::now() > deadline {
            return r;
        }
        r.assert_error(503, "temporarily_unavailable");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn redis_stopped_mid_run_gives_503_then_recovers() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let app = TestApp::spawn_with(short_skew(redis.url())).await;
    app.client_credentials(&app.assertion("bot").sign(), DOCS, None).await.assert_ok();

    redis.stop();
    for _ in 0..3 {
        let r = app.client_credentials(&app.assertion("bot").sign(), DOCS, None).await;
        r.assert_error(503, "temporarily_unavailable");
    }
    assert_eq!(app.get("/readyz").await.status, 503);

    let _redis = RedisServer::start_on(port);
    until_token(&app, Duration::from_secs(10)).await.assert_ok();
    assert_eq!(app.get("/readyz").await.status, 200);
}

/// The broker starts while Redis is down (not ready, refusing), and serves once it is up.
#[tokio::test]
async fn broker_started_before_redis_serves_once_redis_is_up() {
    let port = free_port();
    let app = TestApp::spawn_with(short_skew(format!("redis://127.0.0.1:{port}"))).await;
    assert_eq!(app.get("/readyz").await.status, 503);
    app.client_credentials(&app.assertion("bot").sign(), DOCS, None)
        .await
        .assert_error(503, "temporarily_unavailable");
    let _redis = RedisServer::start_on(port);
    until_token(&app, Duration::from_secs(10)).await.assert_ok();
}

/// An unresponsive Redis (accepts connections, never answers) times out into a 503 rather
/// than hanging the request.
#[tokio::test]
async fn unresponsive_redis_times_out_into_503() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Accept and hold connections without answering, for the length of the test.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        listener.set_nonblocking(true).expect("nonblocking");
        while Instant::now() < deadline {
            if let Ok((s, _)) = listener.accept() {
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let app = TestApp::spawn_with(AppOptions {
        redis_url: Some(format!("redis://127.0.0.1:{port}")),
        ..AppOptions::default()
    })
    .await;
    app.assert_replay_store_unavailable().await;
}
