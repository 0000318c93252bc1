//! The `serve` process itself, as an operator runs it: signals (SIGTERM/SIGINT graceful
//! shutdown, SIGHUP reload), policy file watching, OTLP trace export and JSON audit events.

use crate::helpers::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_agent-sts");

/// A `serve --config` child in production mode, with its own temp dir (policy, keys,
/// config, stderr). Killed on drop.
pub struct Proc {
    child: Child,
    pub issuer: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Proc {
    /// `extra` is appended to the config (TOML sections other than [server] and [policy]).
    pub fn start(policy: &str, extra: &str, env: &[(&str, &str)]) -> Proc {
        let dir = tempfile::tempdir().expect("tmp");
        let port = free_port();
        let issuer = format!("http://127.0.0.1:{port}");
        std::fs::write(dir.path().join("policy.toml"), policy).expect("policy");
        write_signing_key(dir.path(), "signing-1");
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nissuer = \"{issuer}\"\nworkers = 2\nshutdown_timeout_secs = 10\n\
             [policy]\npath = \"{}\"\nwatch_interval_secs = 0\n{extra}",
            dir.path().join("policy.toml").display()
        );
        let config = if config.contains("[signing]") {
            config
        } else {
            format!(
                "{config}\n[signing]\nactive = \"signing-1\"\n[[signing.keys]]\nkid = \"signing-1\"\nkey_file = \"{}\"\n",
                dir.path().join("signing-1.pem").display()
            )
        };
        let config = if config.contains("[replay]") {
            config
        } else {
            format!(
                "{config}\n[replay]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"{}\"\n",
                shared_redis_url(),
                unique_prefix()
            )
        };
        seed_replay_markers(&config);
        std::fs::write(dir.path().join("agent-sts.toml"), config).expect("config");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file");
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config", dir.path().join("agent-sts.toml").to_str().expect("utf8")])
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn serve");
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        let mut p = Proc { child, issuer, dir, http };
        p.wait_ready();
        p
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = self.issuer.trim_start_matches("http://").to_string();
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("broker exited early: {status}\n{}", self.stderr());
            }
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if buf.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("broker not ready within 20 s\n{}", self.stderr());
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.path("stderr.log")).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill");
    }

    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "broker still running after {within:?}\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn post_token(&self, params: &[(&str, &str)]) -> Reply {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
        let r = self
            .http
            .post(format!("{}/token", self.issuer))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("POST /token");
        Reply::read(r).await
    }

    /// client_credentials for `agent` on `resource`.
    pub async fn token(&self, agent: &str, resource: &str) -> Reply {
        let a = assertion_for(agent, &self.issuer, now()).sign();
        post_client_credentials(&self.http, &self.issuer, &a, resource).await
    }

    pub async fn metrics(&self) -> std::collections::HashMap<String, f64> {
        let r = self.http.get(format!("{}/metrics", self.issuer)).send().await.expect("GET /metrics");
        crate::metrics::parse_metrics(&r.text().await.expect("text"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis that has served for long has its replay markers (a missing one reads as a loss of
/// the replay record, issue 9): set them, long ago, for the config's Redis and prefix.
fn seed_replay_markers(config: &str) {
    let t: toml::Value = toml::from_str(config).expect("config is TOML");
    let replay = &t["replay"];
    if replay.get("backend").and_then(|b| b.as_str()) != Some("redis") {
        return;
    }
    let url = replay.get("redis_url").and_then(|u| u.as_str()).unwrap_or("redis://127.0.0.1:6379");
    let port: u16 = url
        .rsplit(':')
        .next()
        .map(|p| p.chars().take_while(char::is_ascii_digit).collect::<String>())
        .and_then(|p| p.parse().ok())
        .expect("port");
    let prefix = replay.get("key_prefix").and_then(|p| p.as_str()).unwrap_or("agent-sts:");
    let long_ago = ((now() - 86_400) * 1000).to_string();
    for marker in agent_sts::replay::marker_key_names(prefix) {
        redis_command(port, &["SET", &marker, &long_ago, "NX"]);
    }
}

pub fn now() -> i64 {
    use agent_sts::clock::Clock;
    agent_sts::clock::SystemClock.now_secs()
}

pub fn write_signing_key(dir: &Path, kid: &str) {
    let pair =
        agent_sts::crypto::generate_key_pair(agent_sts::crypto::Alg::ES256, Some(kid)).expect("keygen");
    std::fs::write(dir.join(format!("{kid}.pem")), pair.private_pem.0).expect("pem");
    std::fs::write(
        dir.join(format!("{kid}.jwk.json")),
        serde_json::Value::Object(pair.public_jwk).to_string(),
    )
    .expect("jwk");
}

/// The test policy with only the agents named (same servers, same keys).
pub fn policy_with(agents: &[&str]) -> String {
    let full = policy_toml();
    // Agents that operate a server stay (the policy refuses an operator it does not know).
    let operators: Vec<&str> =
        full.lines().filter_map(|l| l.strip_prefix("operator = ")).map(|v| v.trim_matches('"')).collect();
    let mut out = String::new();
    for block in full.split("[[agent]]\n").enumerate() {
        match block {
            (0, servers) => out.push_str(servers),
            (_, b) => {
                let id = b.lines().next().and_then(|l| l.split('"').nth(1)).expect("agent id");
                if agents.contains(&id) || operators.contains(&id) {
                    out.push_str("[[agent]]\n");
                    out.push_str(b);
                }
            }
        }
    }
    out
}

/// Wait up to `within` for `check` to hold.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

// ---- Graceful shutdown ---------------------------------------------------------------------

/// SIGTERM with requests in flight: every one is answered (with a token), the listener
/// stops taking new connections, and the process exits 0. Requests are held in flight by
/// pausing the shared Redis's writes, so the replay spend waits.
#[tokio::test]
async fn sigterm_answers_in_flight_requests_and_exits_0() {
    let redis = RedisServer::start();
    let p = Proc::start(
        &policy_toml(),
        &format!(
            "[replay]\nbackend = \"redis\"\nredis_url = \"{}\"\ncommand_timeout_ms = 5000\n",
            redis.url()
        ),
        &[],
    );
    p.token("bot", DOCS).await.assert_ok();
    redis_command(redis.port, &["CLIENT", "PAUSE", "1500", "WRITE"]);
    let p = Arc::new(Mutex::new(p));
    let mut in_flight = Vec::new();
    for _ in 0..20 {
        let (issuer, http) = {
            let g = p.lock().expect("lock");
            (g.issuer.clone(), g.http.clone())
        };
        let a = assertion_for("bot", &issuer, now()).sign();
        in_flight.push(tokio::spawn(async move { post_client_credentials(&http, &issuer, &a, DOCS).await }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    p.lock().expect("lock").signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr = p.lock().expect("lock").issuer.trim_start_matches("http://").to_string();
    assert!(std::net::TcpStream::connect(&addr).is_err(), "no new connections after SIGTERM");
    for t in in_flight {
        t.await.expect("join").assert_ok();
    }
    let status =
        tokio::task::spawn_blocking(move || p.lock().expect("lock").wait_exit(Duration::from_secs(10)))
            .await
            .expect("join");
    assert!(status.success(), "exit status {status}");
}

/// SIGINT is graceful too (not actix's immediate stop).
#[tokio::test]
async fn sigint_exits_0() {
    let mut p = Proc::start(&policy_toml(), "", &[]);
    p.token("bot", DOCS).await.assert_ok();
    p.signal(libc::SIGINT);
    let status = p.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    assert!(p.stderr().contains("in-flight requests finish"), "{}", p.stderr());
}

/// A `[replay]` section on the Redis at `url`.
fn redis_replay(url: &str) -> String {
    format!("[replay]\nbackend = \"redis\"\nredis_url = \"{url}\"\n")
}

/// One Redis command over a raw connection (RESP).
pub fn redis_command(port: u16, args: &[&str]) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("redis");
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).expect("write");
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

// ---- Replay store checks at start -----------------------------------------------------------

/// At start the broker reads the replay store's markers in the background and warns when
/// Redis may evict keys on its own (any `maxmemory-policy` but `noeviction`): an evicted
/// spent assertion can be replayed (RFC 7523 §3 item 7), and the operator is told how to
/// set Redis instead. With `noeviction` it says the record is intact, and no warning.
#[tokio::test]
async fn start_warns_when_redis_may_evict_spent_assertions() {
    let evicting = RedisServer::start_on_with(&["--maxmemory-policy", "allkeys-lru"]);
    // RESP3 answers CONFIG GET with a map, RESP2 with an array.
    let resp3 = format!("{}/?protocol=resp3", evicting.url());
    for (url, warns) in [(evicting.url(), true), (resp3, true), (shared_redis_url(), false)] {
        let replay = format!("{}key_prefix = \"{}\"\n", redis_replay(&url), unique_prefix());
        let p = Proc::start(&policy_toml(), &replay, &[]);
        let said =
            eventually(Duration::from_secs(10), || async { p.stderr().contains("its record is intact") })
                .await;
        assert!(said, "{url}: the background check reports the record\n{}", p.stderr());
        let warned = eventually(Duration::from_secs(if warns { 10 } else { 1 }), || async {
            p.stderr().contains("may evict spent assertions")
        })
        .await;
        assert_eq!(warned, warns, "{url}\n{}", p.stderr());
        if warns {
            assert!(p.stderr().contains("allkeys-lru"), "the policy in use is named\n{}", p.stderr());
        }
    }
}

/// A loss of the replay record (here FLUSHALL) is logged at WARN when a broker first sees
/// it, once per loss, not once per request or per key group: the first request after it
/// logs it, `/readyz` finding the other 63 groups' markers missing (re-created together)
/// logs it once more, and later requests add nothing.
#[tokio::test]
async fn a_lost_replay_record_is_logged_once_when_first_seen() {
    let redis = RedisServer::start();
    let p = Proc::start(&policy_toml(), &redis_replay(&redis.url()), &[]);
    let lines = || p.stderr().matches("replay record lost").count();
    assert!(
        eventually(Duration::from_secs(10), || async { p.stderr().contains("its record is intact") }).await,
        "{}",
        p.stderr()
    );
    assert_eq!(lines(), 0);
    redis_command(redis.port, &["FLUSHALL"]);
    p.token("bot", DOCS).await.assert_error(503, "temporarily_unavailable");
    assert!(eventually(Duration::from_secs(5), || async { lines() == 1 }).await, "{}", p.stderr());
    // This broker's spend re-created the group's marker (another broker's would say false).
    assert!(p.stderr().contains("created_by_this_broker=true"), "{}", p.stderr());
    let ready: serde_json::Value = p
        .http
        .get(format!("{}/readyz", p.issuer))
        .send()
        .await
        .expect("GET /readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["replay_record_lost"]["groups_affected"], 64, "{ready}");
    assert!(eventually(Duration::from_secs(5), || async { lines() == 2 }).await, "{}", p.stderr());
    // Refused while fresh assertions wait out the future skew, then accepted: no more lines.
    for _ in 0..5 {
        let status = p.token("bot", DOCS).await.status;
        assert!(status == 503 || status == 200, "{status}");
    }
    p.http.get(format!("{}/readyz", p.issuer)).send().await.expect("GET /readyz");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lines(), 2, "{}", p.stderr());
}

/// Redis refusing the spend (here: out of memory under `noeviction`) is a 503 for the
/// client (fail closed) and its cause, with Redis's error code, is in the broker's log for
/// the operator; the answer's description only says to retry.
#[tokio::test]
async fn a_redis_error_refuses_the_token_and_its_cause_is_logged() {
    let redis = RedisServer::start();
    let p = Proc::start(&policy_toml(), &redis_replay(&redis.url()), &[]);
    p.token("bot", DOCS).await.assert_ok();
    redis_command(redis.port, &["CONFIG", "SET", "maxmemory", "1"]);
    let r = p.token("bot", DOCS).await;
    r.assert_error(503, "temporarily_unavailable");
    assert!(!r.text.contains("OOM"), "{}", r.text);
    let logged =
        eventually(Duration::from_secs(5), || async { p.stderr().contains("replay spend failed") }).await;
    assert!(logged && p.stderr().contains("Redis error OOM"), "{}", p.stderr());
    // Redis gone: the log says the connection failed (a line a second at most, so retry).
    drop(redis);
    let said = eventually(Duration::from_secs(10), || async {
        p.token("bot", DOCS).await.assert_error(503, "temporarily_unavailable");
        let log = p.stderr();
        log.contains("replay store unavailable: connection refused")
            || log.contains("replay store unavailable: connection lost")
    })
    .await;
    assert!(said, "{}", p.stderr());
}

// ---- Reload --------------------------------------------------------------------------------

/// SIGHUP with a valid policy: the new agent gets tokens, the removed one is refused. Then
/// SIGHUP with a broken policy: refused, logged, counted, and the previous policy serves on.
#[tokio::test]
async fn sighup_reloads_a_valid_policy_and_refuses_a_broken_one() {
    let p = Proc::start(&policy_with(&["bot"]), "", &[]);
    p.token("bot", DOCS).await.assert_ok();
    p.token("other-bot", TICKETS).await.assert_error(401, "invalid_client");

    std::fs::write(p.path("policy.toml"), policy_with(&["other-bot"])).expect("rewrite");
    p.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || async { p.token("other-bot", TICKETS).await.status == 200 })
            .await,
        "the new agent works after SIGHUP\n{}",
        p.stderr()
    );
    p.token("bot", DOCS).await.assert_error(401, "invalid_client");
    let m = p.metrics().await;
    assert_eq!(crate::metrics::value(&m, "agent_sts_policy_reloads_total{result=\"ok\"}"), 1.0);

    std::fs::write(p.path("policy.toml"), "[[server]]\nid = \"broken\"\nscopes = 7\n").expect("break");
    p.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || async {
            crate::metrics::value(&p.metrics().await, "agent_sts_policy_reloads_total{result=\"failed\"}")
                == 1.0
        })
        .await,
        "the failed reload is counted"
    );
    p.token("other-bot", TICKETS).await.assert_ok();
    p.token("bot", DOCS).await.assert_error(401, "invalid_client");
    let log = p.stderr();
    assert!(log.contains("reload refused") && log.contains("policy.toml"), "{log}");
}

/// Without a signal: the watcher sees the policy file change and reloads it.
#[tokio::test]
async fn policy_file_changes_are_picked_up() {
    // The harness sets watch_interval_secs = 0; the environment turns watching on.
    let p = Proc::start(&policy_with(&["bot"]), "", &[("AGENT_STS__POLICY__WATCH_INTERVAL_SECS", "1")]);
    p.token("other-bot", TICKETS).await.assert_error(401, "invalid_client");
    std::fs::write(p.path("policy.toml"), policy_with(&["bot", "other-bot"])).expect("rewrite");
    assert!(
        eventually(Duration::from_secs(8), || async { p.token("other-bot", TICKETS).await.status == 200 })
            .await,
        "the watcher reloads a changed policy\n{}",
        p.stderr()
    );
    p.token("bot", DOCS).await.assert_ok();
}

// ---- OTLP traces and the audit event -------------------------------------------------------

/// An OTLP/HTTP receiver on a free port: decodes each `POST /v1/traces` body and keeps the
/// spans. Runs on a thread; stops with the test process.
pub struct OtlpReceiver {
    pub url: String,
    pub spans: Arc<Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
    pub service_names: Arc<Mutex<Vec<String>>>,
}

impl OtlpReceiver {
    pub fn start() -> OtlpReceiver {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use prost::Message;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let spans = Arc::new(Mutex::new(Vec::new()));
        let service_names = Arc::new(Mutex::new(Vec::new()));
        let (s, n) = (spans.clone(), service_names.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let Some(body) = read_http_body(&mut conn) else { continue };
                if let Ok(req) = ExportTraceServiceRequest::decode(body.as_slice()) {
                    for rs in req.resource_spans {
                        if let Some(res) = &rs.resource {
                            for kv in &res.attributes {
                                if kv.key == "service.name" {
                                    n.lock().expect("lock").push(format!("{:?}", kv.value));
                                }
                            }
                        }
                        for ss in rs.scope_spans {
                            s.lock().expect("lock").extend(ss.spans);
                        }
                    }
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        OtlpReceiver { url, spans, service_names }
    }
}

/// One HTTP/1.1 request's body (Content-Length framing), or None.
fn read_http_body(conn: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    while buf.len() < header_end + len {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf[header_end..].to_vec())
}

fn attr(span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes.iter().find(|a| a.key == key).and_then(|a| match a.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        other => Some(format!("{other:?}")),
    })
}

/// A token request with a W3C `traceparent`: the receiver gets the span tree (the request
/// span, a child of the caller's span, with grant, agent, server, outcome and rule; the
/// assertion verification with the replay spend inside it; the policy decision; the
/// signing), all in the caller's trace; and the JSON audit event names the same trace id.
#[tokio::test]
async fn otlp_receives_the_span_tree_of_a_token_request_in_the_callers_trace() {
    let rx = OtlpReceiver::start();
    let p = Proc::start(
        &policy_toml(),
        &format!(
            "[otel]\nendpoint = \"{}\"\nservice_name = \"sts-under-test\"\n[log]\nformat = \"json\"\n",
            rx.url
        ),
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let a = assertion_for("bot", &p.issuer, now()).sign();
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "client_credentials"),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", a.as_str()),
            ("resource", DOCS),
            ("scope", "read"),
        ])
        .finish();
    let r = p
        .http
        .post(format!("{}/token", p.issuer))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("traceparent", format!("00-{trace_id}-{parent}-01"))
        .body(body)
        .send()
        .await
        .expect("POST");
    let r = Reply::read(r).await;
    r.assert_ok();
    let (_, claims) = r.token_parts();

    let want = ["POST /token", "assertion.verify", "replay.spend", "policy.decide", "token.sign"];
    let got_all = eventually(Duration::from_secs(10), || async {
        let spans = rx.spans.lock().expect("lock");
        want.iter().all(|n| spans.iter().any(|s| &s.name == n))
    })
    .await;
    let spans = rx.spans.lock().expect("lock").clone();
    assert!(got_all, "spans received: {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>());
    let by_name = |n: &str| spans.iter().find(|s| s.name == n).expect("span").clone();
    let root = by_name("POST /token");
    for s in &spans {
        assert_eq!(hex::encode(&s.trace_id), trace_id, "span {} is in the caller's trace", s.name);
    }
    assert_eq!(hex::encode(&root.parent_span_id), parent, "the request span's parent is the caller's span");
    assert_eq!(attr(&root, "grant").as_deref(), Some("client_credentials"));
    assert_eq!(attr(&root, "agent").as_deref(), Some("bot"));
    assert_eq!(attr(&root, "server").as_deref(), Some("docs"));
    assert_eq!(attr(&root, "outcome").as_deref(), Some("issued"));
    assert_eq!(attr(&root, "rule").as_deref(), Some("agent:bot/allow:docs"));
    let verify = by_name("assertion.verify");
    assert_eq!(verify.parent_span_id, root.span_id);
    assert_eq!(by_name("replay.spend").parent_span_id, verify.span_id);
    assert_eq!(attr(&by_name("replay.spend"), "backend").as_deref(), Some("redis"));
    assert_eq!(by_name("policy.decide").parent_span_id, root.span_id);
    assert_eq!(by_name("token.sign").parent_span_id, root.span_id);
    assert!(rx.service_names.lock().expect("lock").iter().any(|n| n.contains("sts-under-test")));

    // The audit event: one JSON line with the documented keys and the same trace id.
    let log = p.stderr();
    let event = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["target"] == "agent_sts::audit" && v["event"] == "token")
        .unwrap_or_else(|| panic!("no audit line in\n{log}"));
    assert_eq!(event["trace_id"], trace_id);
    assert_eq!(event["outcome"], "issued");
    assert_eq!(event["agent"], "bot");
    assert_eq!(event["server"], "docs");
    assert_eq!(event["scope_requested"], "read");
    assert_eq!(event["scope_granted"], "read");
    assert_eq!(event["jti"], claims["jti"]);
    assert_eq!(event["exp"], claims["exp"]);
    assert!(!log.contains(&a) && !log.contains(r.access_token()), "no assertion or token in the log");
}

/// JSON audit events for refusals: the error code and reason, and the agent once it is
/// authenticated (a refusal by policy after authentication still names it).
#[tokio::test]
async fn audit_events_for_refusals_name_the_error_and_the_authenticated_agent() {
    let p = Proc::start(&policy_toml(), "[log]\nformat = \"json\"\n", &[]);
    p.token("bot", UNREACHED).await.assert_error(400, "invalid_target");
    p.post_token(&[("grant_type", "password")]).await.assert_error(400, "unsupported_grant_type");
    let events: Vec<serde_json::Value> = eventually_lines(&p, 2).await;
    let target = events.iter().find(|e| e["error"] == "invalid_target").expect("invalid_target event");
    assert_eq!(target["outcome"], "refused");
    assert_eq!(target["agent"], "bot");
    assert_eq!(target["grant"], "client_credentials");
    assert!(target["reason"].as_str().is_some_and(|r| r.contains("may not reach")), "{target}");
    assert_eq!(target["jti"], serde_json::Value::Null);
    let unparsed = events.iter().find(|e| e["error"] == "unsupported_grant_type").expect("event");
    assert_eq!(unparsed["agent"], serde_json::Value::Null);
    assert_eq!(unparsed["trace_id"], serde_json::Value::Null);
}

async fn eventually_lines(p: &Proc, n: usize) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    eventually(Duration::from_secs(5), || {
        events = p
            .stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "agent_sts::audit")
            .collect();
        let done = events.len() >= n;
        async move { done }
    })
    .await;
    events
}
