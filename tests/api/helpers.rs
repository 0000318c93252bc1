//! Test harness: a real `redis-server` on a free port, the broker in-process on port 0 with
//! a generated policy, and builders for assertions and token requests.

use agent_sts::clock::{Clock, OffsetClock};
use agent_sts::config::{ReplayBackend, Settings};
use agent_sts::crypto::{b64url_decode, b64url_encode, generate_key_pair, Alg, SigningKey};
use agent_sts::startup::{Application, Mode};
use serde_json::{json, Map, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub const DOCS: &str = "https://docs.mcp.test/mcp";
pub const TICKETS: &str = "https://tickets.mcp.test/mcp";
pub const UNREACHED: &str = "https://unreached.mcp.test/mcp";
pub const SVC_B: &str = "https://b.mcp.test/mcp";
pub const SVC_C: &str = "https://c.mcp.test/mcp";
pub const SVC_D: &str = "https://d.mcp.test/mcp";
pub const SVC_E: &str = "https://e.mcp.test/mcp";
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const TT_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const TT_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

// ---- Redis ---------------------------------------------------------------------------------

/// A `redis-server` child on 127.0.0.1. Killed on drop; also killed by the kernel when the
/// thread that started it ends (PR_SET_PDEATHSIG), so none outlives the test run.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> RedisServer {
        let server = Self::spawn_with(port, &[]);
        server.wait_ready();
        server
    }

    /// On a free port with `extra` arguments, ready.
    pub fn start_on_with(extra: &[&str]) -> RedisServer {
        let server = Self::spawn_with(free_port(), extra);
        server.wait_ready();
        server
    }

    /// `redis-server` on `port` (plain, no persistence) with `extra` arguments; not waited for.
    pub fn spawn_with(port: u16, extra: &[&str]) -> RedisServer {
        let port_arg = port.to_string();
        let mut args = vec!["--port", &port_arg, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
        args.extend_from_slice(extra);
        Self::spawn_raw(port, &args)
    }

    /// `redis-server args...` (a config file first, `--sentinel`, ...) that serves `port`.
    pub fn spawn_raw(port: u16, args: &[&str]) -> RedisServer {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("redis-server");
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe and touches only the child's own state.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .expect("redis-server must be on PATH for the tests (Debian: apt-get install redis-server; .ci/run installs it)");
        RedisServer { child: Some(child), port }
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let mut buf = [0u8; 16];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer within 10 s", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One Redis for the whole run, started by a thread that lives as long as the process.
pub fn shared_redis_url() -> String {
    static PORT: OnceLock<u16> = OnceLock::new();
    let port = *PORT.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let server = RedisServer::start();
            tx.send(server.port).expect("send port");
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("shared redis started")
    });
    format!("redis://127.0.0.1:{port}")
}

// ---- Keys and policy -----------------------------------------------------------------------

pub struct AgentKey {
    pub key: SigningKey,
    /// The kid registered in the policy (`None`: registered without one).
    pub kid: Option<String>,
    pub jwk: Map<String, Value>,
    /// The private key, PKCS#8 PEM (for the CLI and the proxy, which read key files).
    pub pem: String,
}

pub struct AgentDef {
    pub id: &'static str,
    pub keys: Vec<AgentKey>,
    pub extra: &'static str,
}

fn agent_key(alg: Alg, kid: Option<&str>) -> AgentKey {
    let pair = generate_key_pair(alg, Some(kid.unwrap_or("tmp"))).expect("keygen");
    let key = SigningKey::from_pem(alg, pair.private_pem.0.as_bytes(), kid).expect("signing key");
    let mut jwk = pair.public_jwk;
    if kid.is_none() {
        jwk.remove("kid");
    }
    if alg != Alg::RS256 && alg != Alg::PS256 {
        jwk.remove("alg");
    }
    AgentKey { key, kid: kid.map(String::from), jwk, pem: pair.private_pem.0 }
}

/// Keys are generated once per run (RSA generation is slow).
pub fn agents() -> &'static [AgentDef] {
    static AGENTS: OnceLock<Vec<AgentDef>> = OnceLock::new();
    AGENTS.get_or_init(|| {
        let docs_read = "[[agent.allow]]\nserver = \"docs\"\nscopes = [\"read\"]\ndefault_scopes = [\"read\"]\n";
        vec![
            AgentDef {
                id: "bot",
                keys: vec![agent_key(Alg::ES256, Some("bot-1"))],
                extra: "[[agent.allow]]\nserver = \"docs\"\nscopes = [\"read\", \"write\"]\ndefault_scopes = [\"read\"]\n\
                        [[agent.allow]]\nserver = \"tickets\"\nscopes = [\"read\", \"write\"]\ndefault_scopes = [\"read\"]\n",
            },
            AgentDef { id: "ed-bot", keys: vec![agent_key(Alg::EdDSA, None)], extra: docs_read },
            AgentDef { id: "es384-bot", keys: vec![agent_key(Alg::ES384, None)], extra: docs_read },
            AgentDef { id: "rsa-bot", keys: vec![agent_key(Alg::RS256, Some("rsa-1"))], extra: docs_read },
            AgentDef { id: "pss-bot", keys: vec![agent_key(Alg::PS256, Some("pss-1"))], extra: docs_read },
            AgentDef {
                id: "two-key-bot",
                keys: vec![
                    agent_key(Alg::ES256, Some("a")),
                    agent_key(Alg::ES256, Some("b")),
                    agent_key(Alg::ES384, Some("c")),
                ],
                extra: docs_read,
            },
            AgentDef {
                id: "other-bot",
                keys: vec![agent_key(Alg::ES256, Some("other-1"))],
                extra: "[[agent.allow]]\nserver = \"tickets\"\nscopes = [\"read\"]\ndefault_scopes = [\"read\"]\n",
            },
            AgentDef { id: "off-bot", keys: vec![agent_key(Alg::ES256, Some("off-1"))], extra: "disabled = true\n" },
            // Agents of delegation chains (tests/api/delegation.rs): each operates an MCP
            // server of its own (svc-b is run by agent-b, ...).
            AgentDef {
                id: "agent-a",
                keys: vec![agent_key(Alg::ES256, Some("a-1"))],
                extra: "[[agent.allow]]\nserver = \"svc-b\"\nscopes = [\"ask\", \"read\"]\ndefault_scopes = [\"ask\"]\n\
                        [[agent.allow]]\nserver = \"docs\"\nscopes = [\"read\", \"write\"]\ndefault_scopes = [\"read\"]\n",
            },
            AgentDef {
                id: "agent-b",
                keys: vec![agent_key(Alg::ES256, Some("b-1"))],
                extra: "[[agent.allow]]\nserver = \"svc-c\"\nscopes = [\"ask\", \"read\", \"admin\"]\ndefault_scopes = [\"ask\"]\n\
                        [[agent.allow]]\nserver = \"svc-e\"\nscopes = [\"ask\"]\ndefault_scopes = [\"ask\"]\n",
            },
            AgentDef {
                id: "agent-c",
                keys: vec![agent_key(Alg::ES256, Some("c-1"))],
                extra: "[[agent.allow]]\nserver = \"svc-d\"\nscopes = [\"ask\"]\ndefault_scopes = [\"ask\"]\n\
                        [[agent.allow]]\nserver = \"svc-c\"\nscopes = [\"ask\"]\ndefault_scopes = [\"ask\"]\n",
            },
            AgentDef {
                id: "agent-d",
                keys: vec![agent_key(Alg::ES256, Some("d-1"))],
                extra: "[[agent.allow]]\nserver = \"svc-e\"\nscopes = [\"ask\"]\ndefault_scopes = [\"ask\"]\n",
            },
            AgentDef {
                id: "nodefault-bot",
                keys: vec![agent_key(Alg::ES256, Some("nd-1"))],
                extra: "max_token_lifetime_secs = 60\n[[agent.allow]]\nserver = \"docs\"\nscopes = [\"read\"]\n",
            },
        ]
    })
}

pub fn agent(id: &str) -> &'static AgentDef {
    agents().iter().find(|a| a.id == id).expect("known test agent")
}

pub fn policy_toml() -> String {
    let mut out = String::from(
        "[[server]]\nid = \"docs\"\nresource = \"https://docs.mcp.test/mcp\"\nscopes = [\"read\", \"write\"]\nmax_token_lifetime_secs = 900\n\n\
         [[server]]\nid = \"tickets\"\nresource = \"https://tickets.mcp.test/mcp\"\nscopes = [\"read\", \"write\", \"admin\"]\n\n\
         [[server]]\nid = \"unreached\"\nresource = \"https://unreached.mcp.test/mcp\"\nscopes = [\"read\"]\n\n\
         [[server]]\nid = \"svc-b\"\nresource = \"https://b.mcp.test/mcp\"\nscopes = [\"ask\", \"read\"]\noperator = \"agent-b\"\n\n\
         [[server]]\nid = \"svc-c\"\nresource = \"https://c.mcp.test/mcp\"\nscopes = [\"ask\", \"read\", \"admin\"]\noperator = \"agent-c\"\n\n\
         [[server]]\nid = \"svc-d\"\nresource = \"https://d.mcp.test/mcp\"\nscopes = [\"ask\"]\noperator = \"agent-d\"\n\n\
         [[server]]\nid = \"svc-e\"\nresource = \"https://e.mcp.test/mcp\"\nscopes = [\"ask\"]\n\n",
    );
    for a in agents() {
        let keys: Vec<String> = a
            .keys
            .iter()
            .map(|k| {
                let t: toml::Value =
                    serde_json::from_value(Value::Object(k.jwk.clone())).expect("jwk as toml");
                t.to_string()
            })
            .collect();
        // `extra` may hold plain keys (before any [[agent.allow]] table) and allow tables.
        let (plain, tables) = match a.extra.find("[[") {
            Some(i) => a.extra.split_at(i),
            None => (a.extra, ""),
        };
        out.push_str(&format!(
            "[[agent]]\nid = \"{}\"\n{plain}keys = [{}]\n{tables}\n",
            a.id,
            keys.join(", ")
        ));
    }
    out
}

// ---- The broker ----------------------------------------------------------------------------

pub struct TestApp {
    pub base: String,
    pub issuer: String,
    pub clock: Arc<OffsetClock>,
    pub http: reqwest::Client,
    handle: actix_web::dev::ServerHandle,
    /// `metrics.listen`'s port, when the options set it.
    pub metrics_port: Option<u16>,
    /// Reloads the policy file at `policy_path` (what SIGHUP does in `serve`).
    pub reloader: Arc<agent_sts::reload::Reloader>,
    pub policy_path: std::path::PathBuf,
    _policy_dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop accepting; the runtime ending stops the rest.
        drop(self.handle.stop(false));
    }
}

pub struct AppOptions {
    pub redis_url: Option<String>,
    pub key_prefix: Option<String>,
    pub replay: ReplayBackend,
    /// The issuer (default: dev mode's `http://127.0.0.1:<port>`); instances behind one
    /// load balancer share it.
    pub issuer: Option<String>,
    /// Appended to the test policy (issuers, rules, more agents).
    pub extra_policy: String,
    /// The whole policy file's text instead (default: [`policy_toml`] + `extra_policy`).
    pub policy: Option<String>,
    /// Any other setting (listen address, lifetimes, topology, skews ...), applied last,
    /// before the broker starts: `tweak: tweak(|s| ...)`.
    pub tweak: Option<Tweak>,
}

/// A change to the settings a test makes before the broker starts.
pub type Tweak = Arc<dyn Fn(&mut Settings) + Send + Sync>;

/// `AppOptions { tweak: tweak(|s| s.tokens.future_skew_secs = 0), .. }`.
pub fn tweak(f: impl Fn(&mut Settings) + Send + Sync + 'static) -> Option<Tweak> {
    Some(Arc::new(f))
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            redis_url: None,
            key_prefix: None,
            replay: ReplayBackend::Redis,
            issuer: None,
            extra_policy: String::new(),
            policy: None,
            tweak: None,
        }
    }
}

static PREFIX_COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn unique_prefix() -> String {
    format!("test-{}-{}:", std::process::id(), PREFIX_COUNTER.fetch_add(1, Ordering::SeqCst))
}

impl TestApp {
    /// The broker on a free port, against the shared Redis under its own key prefix.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(AppOptions::default()).await
    }

    pub async fn spawn_with(opts: AppOptions) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = dir.path().join("policy.toml");
        let text = opts.policy.unwrap_or_else(|| format!("{}\n{}", policy_toml(), opts.extra_policy));
        std::fs::write(&policy, text).expect("write policy");
        let mut settings = Settings::default();
        settings.server.listen = "127.0.0.1:0".into();
        settings.server.workers = Some(1);
        settings.policy.path = Some(policy.clone());
        settings.replay.backend = Some(opts.replay);
        settings.replay.redis_url = opts.redis_url.unwrap_or_else(shared_redis_url);
        settings.replay.key_prefix = opts.key_prefix.unwrap_or_else(unique_prefix);
        settings.server.issuer = opts.issuer;
        if let Some(tweak) = &opts.tweak {
            tweak(&mut settings);
        }
        // A Redis that has served for long: its replay markers exist (a new marker is a loss).
        crate::replay_support::seed_markers(&settings).await;
        let clock = OffsetClock::new();
        // Dev mode derives the issuer from the bound port and generates the signing key; the
        // policy and replay store are the ones set above.
        let app = Application::build(settings, Mode::Dev, clock.clone()).expect("broker starts");
        let base = format!("http://127.0.0.1:{}", app.port());
        let issuer = app.issuer().to_string();
        let handle = app.handle();
        let metrics_port = app.metrics_port();
        let reloader = app.reloader();
        tokio::spawn(app.run_until_stopped());
        let http = reqwest::Client::builder().no_proxy().build().expect("http client");
        TestApp {
            base,
            issuer,
            clock,
            http,
            handle,
            metrics_port,
            reloader,
            policy_path: policy,
            _policy_dir: dir,
        }
    }

    /// Stop serving (the port is free again once this returns).
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    pub fn now(&self) -> i64 {
        self.clock.now_secs()
    }

    /// An assertion for `agent` that passes every check; adjust it before signing.
    pub fn assertion(&self, agent_id: &str) -> Assertion {
        assertion_for(agent_id, &self.issuer, self.now())
    }

    pub async fn get(&self, path: &str) -> Reply {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.expect("GET");
        Reply::read(r).await
    }

    /// POST a raw form body to /token.
    pub async fn post_raw(&self, body: String, content_type: &str) -> Reply {
        let r = self
            .http
            .post(format!("{}/token", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST /token");
        Reply::read(r).await
    }

    pub async fn post_token(&self, params: &[(&str, &str)]) -> Reply {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
        self.post_raw(body, "application/x-www-form-urlencoded").await
    }

    /// The MCP SDK's client-credentials request (SEP-1046).
    pub async fn client_credentials(&self, assertion: &str, resource: &str, scope: Option<&str>) -> Reply {
        let mut p = vec![
            ("grant_type", "client_credentials"),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", assertion),
            ("resource", resource),
        ];
        if let Some(s) = scope {
            p.push(("scope", s));
        }
        self.post_token(&p).await
    }

    /// A fresh token for `agent` on `resource` (client credentials).
    /// The replay store can't be used: a token request is refused with 503 (fail closed) and
    /// `/readyz` says not ready.
    pub async fn assert_replay_store_unavailable(&self) {
        self.client_credentials(&self.assertion("bot").sign(), DOCS, None)
            .await
            .assert_error(503, "temporarily_unavailable");
        assert_eq!(self.get("/readyz").await.status, 503);
    }

    pub async fn token_for(&self, agent_id: &str, resource: &str, scope: Option<&str>) -> String {
        let r = self.client_credentials(&self.assertion(agent_id).sign(), resource, scope).await;
        r.assert_ok();
        r.access_token().to_string()
    }
}

/// An assertion for `agent_id` with `aud` = `issuer` that passes every check; adjust it
/// before signing.
pub fn assertion_for(agent_id: &str, issuer: &str, now: i64) -> Assertion {
    let a = agent(agent_id);
    let k = &a.keys[0];
    let mut header = Map::new();
    header.insert("alg".into(), json!(k.key.alg().as_str()));
    header.insert("typ".into(), json!("JWT"));
    if let Some(kid) = &k.kid {
        header.insert("kid".into(), json!(kid));
    }
    let claims = json!({
        "iss": a.id, "sub": a.id, "aud": issuer,
        "iat": now, "exp": now + 60,
        "jti": agent_sts::crypto::random_id(),
    });
    let Value::Object(claims) = claims else { unreachable!() };
    Assertion { key: &k.key, header, claims }
}

/// POST the MCP SDK's client-credentials form to `<base>/token` (for brokers other than a
/// [`TestApp`]: child processes, requests spawned onto tasks).
pub async fn post_client_credentials(
    http: &reqwest::Client,
    base: &str,
    assertion: &str,
    resource: &str,
) -> Reply {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "client_credentials"),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", assertion),
            ("resource", resource),
        ])
        .finish();
    let r = http
        .post(format!("{base}/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("POST /token is answered");
    Reply::read(r).await
}

// ---- Assertions ----------------------------------------------------------------------------

pub struct Assertion {
    key: &'static SigningKey,
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
}

impl Assertion {
    pub fn claim(mut self, name: &str, value: Value) -> Self {
        self.claims.insert(name.into(), value);
        self
    }
    pub fn without(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }
    pub fn header(mut self, name: &str, value: Value) -> Self {
        self.header.insert(name.into(), value);
        self
    }
    pub fn without_header(mut self, name: &str) -> Self {
        self.header.remove(name);
        self
    }
    pub fn signed_by(mut self, key: &'static SigningKey) -> Self {
        self.key = key;
        self
    }
    pub fn sign(&self) -> String {
        self.sign_bytes(
            Value::Object(self.header.clone()).to_string().as_bytes(),
            Value::Object(self.claims.clone()).to_string().as_bytes(),
        )
    }

    /// Sign this header and claims after `edit` rewrote their JSON text (for bytes that a
    /// JSON serializer would never write: invalid UTF-8, duplicate members, null).
    pub fn sign_edited(&self, edit: impl Fn(&str, Vec<u8>) -> Vec<u8>) -> String {
        self.sign_bytes(
            &edit("header", Value::Object(self.header.clone()).to_string().into_bytes()),
            &edit("payload", Value::Object(self.claims.clone()).to_string().into_bytes()),
        )
    }

    pub fn sign_bytes(&self, header: &[u8], payload: &[u8]) -> String {
        self.key.sign_compact(&b64url_encode(header), payload).expect("sign")
    }
}

// ---- Replies -------------------------------------------------------------------------------

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub async fn read(r: reqwest::Response) -> Reply {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, headers, body, text }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[track_caller]
    pub fn assert_ok(&self) {
        assert_eq!(self.status, 200, "expected a token, got {}", self.text);
        assert!(self.body["access_token"].is_string(), "{}", self.text);
    }

    /// An RFC 6749 §5.2 error with this status and code, no-store, and no token.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.body["error"].as_str()), (status, Some(code)), "{}", self.text);
        let d = self.body["error_description"].as_str().unwrap_or_else(|| panic!("{}", self.text));
        // RFC 6749 section 5.2: %x20-21 / %x23-5B / %x5D-7E only.
        assert!(
            d.chars().all(|c| matches!(c, '\x20'..='\x21' | '\x23'..='\x5B' | '\x5D'..='\x7E')),
            "error_description outside the RFC 6749 section 5.2 charset: {d}"
        );
        assert!(self.body.get("access_token").is_none(), "an error must carry no token");
        assert_eq!(self.header("cache-control"), Some("no-store"));
        if status == 401 {
            assert!(self.header("www-authenticate").is_some(), "401 needs WWW-Authenticate");
        }
        if status == 503 {
            assert!(self.header("retry-after").is_some(), "503 needs Retry-After");
        }
    }

    pub fn access_token(&self) -> &str {
        self.body["access_token"].as_str().expect("access_token")
    }

    /// The issued token's header and claims, decoded without verification.
    pub fn token_parts(&self) -> (Value, Value) {
        decode_unverified(self.access_token())
    }
}

pub fn decode_unverified(jwt: &str) -> (Value, Value) {
    let mut parts = jwt.split('.');
    let mut next = || {
        let bytes = b64url_decode(parts.next().expect("part")).expect("base64url");
        serde_json::from_slice::<Value>(&bytes).expect("json")
    };
    let header = next();
    let claims = next();
    (header, claims)
}

/// Poll `cond` (an async check) until it holds or `limit` passes.
pub async fn wait_until_async<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
