//! `agent-sts proxy` in front of the test upstream (`upstream.rs`), with the broker under
//! test issuing the tokens: requests pass with a broker token and the client's own
//! credentials never reach the upstream; renewal at 80 % of a token's life and after an
//! upstream 401 (RFC 6750 section 3.1); SSE streamed event by event; a broker outage
//! answered with 503 and recovered from without a restart.

use crate::helpers::*;
use crate::upstream::Upstream;
use agent_sts::agent::AgentKey;
use agent_sts::clock::OffsetClock;
use agent_sts::proxy::{Proxy, ProxyConfig};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Rig {
    pub url: String,
    pub clock: Arc<OffsetClock>,
    pub http: reqwest::Client,
    handle: actix_web::dev::ServerHandle,
    _key_dir: tempfile::TempDir,
}

impl Drop for Rig {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// The key file of a test agent, as the CLI and the proxy read it.
pub fn key_file(dir: &std::path::Path, agent_id: &str, index: usize) -> std::path::PathBuf {
    let path = dir.join(format!("{agent_id}-{index}.pem"));
    std::fs::write(&path, &agent(agent_id).keys[index].pem).expect("write key");
    path
}

/// The proxy for agent `bot` in front of `upstream`, asking `issuer` for tokens.
pub fn proxy(issuer: &str, upstream: &Upstream, tweak: impl FnOnce(&mut ProxyConfig)) -> Rig {
    proxy_to(issuer, &upstream.url, &upstream.state.resource, tweak)
}

pub fn proxy_to(issuer: &str, url: &str, resource: &str, tweak: impl FnOnce(&mut ProxyConfig)) -> Rig {
    let dir = tempfile::tempdir().expect("tmp");
    let key = AgentKey::load("bot", &key_file(dir.path(), "bot", 0), Some("bot-1"), None).expect("key");
    let clock = OffsetClock::new();
    let mut config = ProxyConfig::new(issuer.to_string(), key, url.to_string(), clock.clone());
    config.resource = Some(resource.to_string());
    config.listen = "127.0.0.1:0".into();
    tweak(&mut config);
    let proxy = Proxy::build(config).expect("proxy builds");
    let url = proxy.local_url().to_string();
    let handle = proxy.handle();
    tokio::spawn(proxy.run_until_stopped());
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    Rig { url, clock, http, handle, _key_dir: dir }
}

impl Rig {
    pub async fn post(&self, body: Value) -> reqwest::Response {
        self.http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .json(&body)
            .send()
            .await
            .expect("POST through the proxy")
    }

    /// A JSON-RPC call through the proxy that must succeed; returns its `result`.
    pub async fn call(&self, id: u64) -> Value {
        let r = self.post(json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"})).await;
        assert_eq!(r.status(), 200, "through the proxy: {:?}", r.text().await);
        r.json::<Value>().await.expect("json")["result"].clone()
    }
}

async fn broker_and_upstream() -> (TestApp, Upstream) {
    let app = TestApp::spawn().await;
    let upstream = Upstream::start(&app.issuer, DOCS);
    (app, upstream)
}

/// Requests pass with a token the broker issued for the upstream; session headers pass
/// both ways; the upstream's challenge never reaches the client.
#[tokio::test]
async fn requests_pass_with_a_broker_token_and_session_headers_both_ways() {
    let (app, upstream) = broker_and_upstream().await;
    let rig = proxy(&app.issuer, &upstream, |_| {});
    let r = rig
        .http
        .post(&rig.url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()), Some("session-1"));
    let result = r.json::<Value>().await.expect("json")["result"].clone();
    assert_eq!(result["sub"], "bot");
    let jti = result["jti"].as_str().expect("jti").to_string();

    let second = rig
        .http
        .post(&rig.url)
        .header("mcp-session-id", "session-1")
        .header("mcp-protocol-version", "2025-06-18")
        .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(
        second.json::<Value>().await.expect("json")["result"]["jti"],
        jti.as_str(),
        "the token is reused"
    );
    let deleted =
        rig.http.delete(&rig.url).header("mcp-session-id", "session-1").send().await.expect("DELETE");
    assert_eq!(deleted.status(), 204);

    let seen = upstream.seen();
    assert_eq!(seen.iter().map(|s| s.method.as_str()).collect::<Vec<_>>(), ["POST", "POST", "DELETE"]);
    assert!(seen.iter().all(|s| s.jti.as_deref() == Some(jti.as_str())), "{seen:?}");
    assert_eq!(seen[1].session.as_deref(), Some("session-1"));
    assert_eq!(seen[2].session.as_deref(), Some("session-1"));
    assert!(seen[..2].iter().all(|s| s.protocol_version.as_deref() == Some("2025-06-18")), "{seen:?}");
}

/// The client's own `Authorization` (and `Proxy-Authorization`) never reach the upstream:
/// the upstream sees exactly one `Authorization`, the broker's token.
#[tokio::test]
async fn a_client_authorization_header_never_reaches_the_upstream() {
    let (app, upstream) = broker_and_upstream().await;
    let rig = proxy(&app.issuer, &upstream, |_| {});
    let r = rig
        .http
        .post(&rig.url)
        .header("authorization", "Bearer long-lived-api-key-of-the-client")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 200);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authorization.len(), 1, "one Authorization header: {:?}", seen[0].authorization);
    assert!(!seen[0].authorization[0].contains("long-lived-api-key"));
    assert!(seen[0].jti.is_some(), "the header the upstream got is a valid broker token");
}

/// Renewal before expiry: with a 20 s token, the proxy keeps it until 80 % of its life
/// (16 s) and renews it after, while it is still valid.
#[tokio::test]
async fn the_token_is_renewed_at_80_percent_of_its_life() {
    let app = TestApp::spawn_with(AppOptions {
        tweak: tweak(|s| s.tokens.default_lifetime_secs = 20),
        ..AppOptions::default()
    })
    .await;
    let upstream = Upstream::start(&app.issuer, DOCS);
    let rig = proxy(&app.issuer, &upstream, |_| {});
    let first = rig.call(1).await["jti"].clone();
    // The broker's clock moves with the proxy's so the new assertion's iat is acceptable.
    rig.clock.advance_secs(15);
    app.clock.advance_secs(15);
    assert_eq!(rig.call(2).await["jti"], first, "15 s into a 20 s token: kept");
    rig.clock.advance_secs(2);
    app.clock.advance_secs(2);
    let renewed = rig.call(3).await["jti"].clone();
    assert_ne!(renewed, first, "17 s into a 20 s token: renewed before it expired");
    assert_eq!(rig.call(4).await["jti"], renewed);
    assert!(upstream.seen().iter().all(|s| s.refused.is_none()), "no request carried an expired token");
}

/// Concurrent first requests wait for one renewal: the broker is asked once, and every
/// request carries the same token.
#[tokio::test]
async fn concurrent_requests_share_one_renewal() {
    let (app, upstream) = broker_and_upstream().await;
    let rig = proxy(&app.issuer, &upstream, |_| {});
    let calls = (0..8).map(|i| rig.call(i));
    let results = futures_util::future::join_all(calls).await;
    let jtis: std::collections::HashSet<String> =
        results.iter().map(|r| r["jti"].as_str().expect("jti").to_string()).collect();
    assert_eq!(jtis.len(), 1, "one token for all: {jtis:?}");
    assert_eq!(upstream.seen().len(), 8);
}

/// RFC 6750 section 3.1: the upstream says `invalid_token` (here: the token was revoked).
/// The proxy renews at once and resends the same request once; the client sees 200.
#[tokio::test]
async fn an_upstream_401_invalid_token_renews_at_once_and_resends() {
    let (app, upstream) = broker_and_upstream().await;
    let rig = proxy(&app.issuer, &upstream, |_| {});
    let first = rig.call(1).await["jti"].as_str().expect("jti").to_string();
    upstream.revoke(&first);
    let body = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "x"}});
    let r = rig.post(body.clone()).await;
    assert_eq!(r.status(), 200);
    let result = r.json::<Value>().await.expect("json")["result"].clone();
    assert_ne!(result["jti"], first.as_str(), "a new token");
    let seen = upstream.seen();
    let last_two = &seen[seen.len() - 2..];
    assert_eq!(last_two[0].refused.as_deref(), Some("revoked"));
    assert_eq!(last_two[1].jti.as_deref(), result["jti"].as_str());
    assert_eq!(last_two[0].body, last_two[1].body, "the same body was resent");
    assert_eq!(serde_json::from_slice::<Value>(&last_two[1].body).expect("json"), body);
}

/// An upstream that refuses every token of ours (here: it expects another audience) gets
/// one resend with a fresh token, then the client gets 502 with the reason, and no
/// `WWW-Authenticate` that would send an MCP client into an OAuth flow of its own.
#[tokio::test]
async fn an_upstream_that_refuses_fresh_tokens_gives_502_without_a_challenge() {
    let (app, upstream) = broker_and_upstream().await;
    let rig = proxy(&app.issuer, &upstream, |c| c.resource = Some(TICKETS.into()));
    let r = rig.post(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})).await;
    assert_eq!(r.status(), 502);
    assert!(r.headers().get("www-authenticate").is_none());
    let text = r.text().await.expect("text");
    assert!(
        text.contains("answered 401") && text.contains("fresh token") && text.contains("--resource"),
        "{text}"
    );
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2, "one resend, no more: {seen:?}");
    assert!(
        seen.iter().all(|s| s.refused.as_deref().is_some_and(|r| r.contains("InvalidAudience"))),
        "{seen:?}"
    );
    assert_ne!(seen[0].authorization, seen[1].authorization, "the resend carried a renewed token");
}

/// Read from a streamed response until `needle` has arrived (bounded wait).
async fn read_until<B: AsRef<[u8]>>(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<B>> + Unpin),
    got: &mut String,
    needle: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !got.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(chunk)) => got.push_str(&String::from_utf8_lossy(chunk.expect("chunk").as_ref())),
            Ok(None) => panic!("stream ended before {needle:?}; got {got:?}"),
            Err(_) => panic!("{needle:?} did not arrive through the proxy within 5 s; got {got:?}"),
        }
    }
}

/// A `text/event-stream` answer to a POST arrives event by event: the upstream sends the
/// second event only after the test has received the first through the proxy.
#[tokio::test]
async fn an_sse_response_arrives_event_by_event() {
    let (app, upstream) = broker_and_upstream().await;
    let rig = proxy(&app.issuer, &upstream, |_| {});
    let events = upstream.events();
    let r = rig.post(json!({"jsonrpc": "2.0", "id": 7, "method": "stream"})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("text/event-stream"));
    let mut stream = r.bytes_stream();
    let mut got = String::new();
    events.send("event: message\ndata: {\"progress\":1}\n\n".into()).await.expect("send 1");
    read_until(&mut stream, &mut got, "{\"progress\":1}").await;
    assert!(!got.contains("progress\":2"));
    events.send("event: message\ndata: {\"progress\":2}\n\n".into()).await.expect("send 2");
    read_until(&mut stream, &mut got, "{\"progress\":2}").await;
    drop(events);
    assert!(stream.next().await.is_none(), "the stream ends when the upstream's does");
}

/// A `GET` SSE stream is held open, and when the client goes away the upstream stream is
/// closed too (the proxy does not keep reading it for nobody).
#[tokio::test]
async fn a_get_stream_stays_open_and_closes_upstream_when_the_client_leaves() {
    let (app, upstream) = broker_and_upstream().await;
    let rig = proxy(&app.issuer, &upstream, |_| {});
    let events = upstream.events();
    let r = rig.http.get(&rig.url).header("accept", "text/event-stream").send().await.expect("GET");
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut got = String::new();
    tokio::time::sleep(Duration::from_millis(300)).await;
    events.send("id: 1\ndata: {\"n\":1}\n\n".into()).await.expect("send");
    read_until(&mut stream, &mut got, "{\"n\":1}").await;
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !events.is_closed() {
        assert!(Instant::now() < deadline, "the upstream stream stayed open after the client left");
        let _ = events.try_send(": keep-alive\n\n".into());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An idle stream whose client left: the upstream sends nothing more, yet the proxy notices
/// (its keep-alive comment fails to write) and closes the upstream connection. The upstream
/// here is a bare HTTP/1.1 server that reports when its connection is closed.
#[tokio::test]
async fn an_idle_stream_is_closed_upstream_when_the_client_leaves() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://127.0.0.1:{}/mcp", listener.local_addr().expect("addr").port());
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).await.expect("read");
            assert!(n > 0, "the proxy closed before sending a request");
            head.extend_from_slice(&buf[..n]);
        }
        let event = b"data: 1\n\n";
        let mut out =
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                .to_vec();
        out.extend_from_slice(format!("{:x}\r\n", event.len()).as_bytes());
        out.extend_from_slice(event);
        out.extend_from_slice(b"\r\n");
        sock.write_all(&out).await.expect("write");
        while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
        let _ = closed_tx.send(());
    });
    let rig = proxy_to(&app.issuer, &url, DOCS, |c| c.sse_keepalive = Duration::from_millis(100));
    let r = rig.http.get(&rig.url).header("accept", "text/event-stream").send().await.expect("GET");
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut got = String::new();
    read_until(&mut stream, &mut got, "data: 1").await;
    read_until(&mut stream, &mut got, ": keep-alive").await;
    drop(stream);
    tokio::time::timeout(Duration::from_secs(5), closed_rx)
        .await
        .expect("the upstream connection was still open 5 s after the client left")
        .expect("the upstream task ended without seeing the close");
}

/// Bodies over the buffer bound stream through intact; such a body can't be resent after
/// a 401, so that one request gets 502 and the next passes with the renewed token.
#[tokio::test]
async fn bodies_over_the_bound_stream_through_and_are_not_resent() {
    let (app, upstream) = broker_and_upstream().await;
    let rig = proxy(&app.issuer, &upstream, |c| c.max_buffered_body = 1024);
    let big =
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"blob": "x".repeat(200_000)}});
    let sent = serde_json::to_vec(&big).expect("json");
    let r = rig.post(big.clone()).await;
    assert_eq!(r.status(), 200);
    let jti = r.json::<Value>().await.expect("json")["result"]["jti"].as_str().expect("jti").to_string();
    assert_eq!(upstream.seen()[0].body, sent, "the body arrived intact");

    upstream.revoke(&jti);
    let r = rig.post(big.clone()).await;
    assert_eq!(r.status(), 502);
    assert!(r.text().await.expect("text").contains("cannot be resent"));
    assert_eq!(upstream.seen().len(), 2, "not resent");
    let r = rig.post(big).await;
    assert_eq!(r.status(), 200, "the token was renewed for the next request");
}

/// The broker is down: 503 with the reason and `Retry-After`. It comes back: the proxy
/// recovers by itself. It goes down again while a token is held: requests go on with that
/// token until it nears expiry, then 503 again, and recover again.
#[tokio::test]
async fn broker_down_gives_503_and_the_proxy_recovers_without_a_restart() {
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let key_dir = tempfile::tempdir().expect("tmp");
    let signing = key_dir.path().join("signing.pem");
    let pair = agent_sts::crypto::generate_key_pair(agent_sts::crypto::Alg::ES256, Some("s1")).expect("key");
    std::fs::write(&signing, pair.private_pem.0.as_bytes()).expect("write");
    let start_broker = || {
        let signing = signing.clone();
        async move {
            wait_port_free(port).await;
            TestApp::spawn_with(AppOptions {
                tweak: tweak(move |s| {
                    s.server.listen = format!("127.0.0.1:{port}");
                    s.signing.key_file = Some(signing.clone());
                    s.tokens.default_lifetime_secs = 20;
                }),
                ..AppOptions::default()
            })
            .await
        }
    };
    let upstream = Upstream::start(&issuer, DOCS);
    let rig = proxy(&issuer, &upstream, |_| {});

    let r = rig.post(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let text = r.text().await.expect("text");
    assert!(
        text.contains(&issuer) && text.contains("cannot reach") && text.contains("keeps trying"),
        "{text}"
    );
    assert!(upstream.seen().is_empty(), "nothing was sent upstream without a token");

    let app = start_broker().await;
    eventually_200(&rig).await;

    app.stop().await;
    assert_eq!(rig.post(json!({"jsonrpc": "2.0", "id": 2, "method": "x"})).await.status(), 200, "held token");
    rig.clock.advance_secs(17);
    assert_eq!(
        rig.post(json!({"jsonrpc": "2.0", "id": 3, "method": "x"})).await.status(),
        200,
        "renewal failed, but the held token is still valid"
    );
    rig.clock.advance_secs(2);
    assert_eq!(
        rig.post(json!({"jsonrpc": "2.0", "id": 4, "method": "x"})).await.status(),
        503,
        "near expiry"
    );
    // The proxy's clock moved 19 s; the broker that comes back must agree with it (the
    // assertion's iat may be at most tokens.future_skew_secs ahead of the broker's clock).
    let back = start_broker().await;
    back.clock.advance_secs(19);
    eventually_200(&rig).await;
}

async fn wait_port_free(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} still taken");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn eventually_200(rig: &Rig) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = rig.post(json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list"})).await;
        if r.status() == 200 {
            return;
        }
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(status, 503, "{text}");
        assert!(Instant::now() < deadline, "the proxy did not recover within 10 s: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Only the upstream's path is served (so OAuth discovery probes find nothing and the
/// client concludes that no authorization is needed); web pages are refused (cross-site
/// `Origin`, DNS-rebound `Host`); methods other than GET, POST, DELETE get 405.
#[tokio::test]
async fn only_local_programs_reach_only_the_upstream_path() {
    let (app, upstream) = broker_and_upstream().await;
    let rig = proxy(&app.issuer, &upstream, |_| {});
    let base = rig.url.trim_end_matches("/mcp").to_string();
    for path in
        ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-authorization-server", "/", "/mcp/"]
    {
        let r = rig.http.get(format!("{base}{path}")).send().await.expect("GET");
        assert_eq!(r.status(), 404, "{path}");
        assert!(r.text().await.expect("text").contains("only /mcp is forwarded"));
    }
    let r = rig
        .http
        .post(&rig.url)
        .header("origin", "https://evil.example")
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 403);
    let r = rig.http.post(&rig.url).header("host", "evil.example:80").body("{}").send().await.expect("POST");
    assert_eq!(r.status(), 403);
    let r = rig.http.put(&rig.url).body("{}").send().await.expect("PUT");
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers().get("allow").and_then(|v| v.to_str().ok()), Some("GET, POST, DELETE"));
    assert!(upstream.seen().is_empty(), "none of these reached the upstream");
    let r = rig
        .http
        .post(&rig.url)
        .header("origin", "http://localhost:5173")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "x"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 200, "a page served from loopback may use it");
    assert_eq!(upstream.seen()[0].origin, None, "Origin is checked here, not forwarded");
}

/// Start-up refusals: an upstream over plain http off loopback (the token would cross the
/// network in clear), and a listen address off loopback unless explicitly allowed.
#[tokio::test]
async fn refuses_cleartext_remote_upstreams_and_non_loopback_listening() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = || AgentKey::load("bot", &key_file(dir.path(), "bot", 0), None, None).expect("key");
    let config = |upstream: &str, listen: &str| {
        let mut c = ProxyConfig::new("http://127.0.0.1:1".into(), key(), upstream.into(), OffsetClock::new());
        c.listen = listen.into();
        c
    };
    let err = |c| Proxy::build(c).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err(config("http://mcp.example/mcp", "127.0.0.1:0")).contains("must be https"));
    assert!(err(config("https://mcp.example/mcp?x=1", "127.0.0.1:0")).contains("no query"));
    assert!(err(config("https://mcp.example/mcp", "0.0.0.0:0")).contains("--allow-non-loopback"));
    let mut allowed = config("https://mcp.example/mcp", "0.0.0.0:0");
    allowed.allow_non_loopback = true;
    assert!(Proxy::build(allowed).is_ok());
}
