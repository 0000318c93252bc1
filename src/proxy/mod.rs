//! `agent-sts proxy`: a local HTTP reverse proxy for MCP clients that can't sign an
//! assertion (stdio desktop apps through `mcp-remote`, IDE plugins with one static header).
//!
//! The client talks to `http://127.0.0.1:PORT/<upstream path>` with no credentials; the
//! proxy forwards each request to the one upstream MCP server with
//! `Authorization: Bearer <token>`, where the token comes from the broker for the agent's
//! key (client credentials with `private_key_jwt`, RFC 7523) and lives only in memory.
//!
//! - Streamable HTTP: `POST` (JSON or `text/event-stream` answers, streamed as they
//!   arrive), `GET` (a held-open SSE stream, with keep-alive comments while idle so that a
//!   client that left is noticed and the upstream stream closed), `DELETE`;
//!   `Mcp-Session-Id` and `MCP-Protocol-Version` pass both ways.
//! - Only the upstream's own path is served; every other path is 404, so a client that
//!   probes for OAuth metadata concludes that no authorization is needed. The upstream's
//!   `WWW-Authenticate` challenges never reach the client.
//! - The token is renewed at 80 % of its life, and at once when the upstream answers 401
//!   `invalid_token` (the request is then resent once, if its body was small enough to keep).
//! - Broker unreachable: 503 with the reason and `Retry-After`; the next request after a
//!   second tries again, so the proxy recovers by itself.
//! - Loopback only unless explicitly allowed; requests from web pages (a foreign `Origin`,
//!   or a foreign `Host` through DNS rebinding) are refused; a client's own
//!   `Authorization` header is dropped. Tokens never reach a log line (their `jti` does).

mod forward;
mod guard;
mod headers;
mod sse;
mod tokens;

use crate::agent::{check_http_url, AgentKey};
use crate::clock::SharedClock;
use actix_web::{web, App, HttpServer};
use forward::ProxyState;
use guard::LocalGuard;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;
use tokens::TokenCache;

/// Request bodies up to this size are kept so they can be resent after a 401.
pub const DEFAULT_MAX_BUFFERED_BODY: usize = 1024 * 1024;
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8090";
/// An idle SSE stream gets a keep-alive comment this often (so a client that left is noticed).
pub const DEFAULT_SSE_KEEPALIVE: Duration = Duration::from_secs(15);

pub struct ProxyConfig {
    /// The broker's issuer URL; its metadata is found from it (RFC 8414).
    pub issuer: String,
    pub key: AgentKey,
    /// The one MCP server: `https://server/mcp` (http only on loopback).
    pub upstream: String,
    /// The RFC 8707 resource to ask for (default: `upstream`, byte for byte).
    pub resource: Option<String>,
    pub scope: Option<String>,
    pub listen: String,
    /// Listen on an address other than loopback: whoever reaches it acts as the agent.
    pub allow_non_loopback: bool,
    pub max_buffered_body: usize,
    pub sse_keepalive: Duration,
    pub clock: SharedClock,
}

impl ProxyConfig {
    pub fn new(issuer: String, key: AgentKey, upstream: String, clock: SharedClock) -> Self {
        ProxyConfig {
            issuer,
            key,
            upstream,
            resource: None,
            scope: None,
            listen: DEFAULT_LISTEN.into(),
            allow_non_loopback: false,
            max_buffered_body: DEFAULT_MAX_BUFFERED_BODY,
            sse_keepalive: DEFAULT_SSE_KEEPALIVE,
            clock,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

pub struct Proxy {
    local_addr: SocketAddr,
    local_url: String,
    upstream: String,
    tokens: Arc<TokenCache>,
    server: actix_web::dev::Server,
}

impl Proxy {
    /// Check the configuration and bind the listener. Nothing is served until
    /// [`Proxy::run_until_stopped`]; the broker is not contacted until then either.
    pub fn build(config: ProxyConfig) -> Result<Proxy, ProxyError> {
        check_http_url("--issuer", &config.issuer).map_err(ProxyError::Config)?;
        let upstream = check_http_url("--upstream", &config.upstream).map_err(ProxyError::Config)?;
        if upstream.query().is_some() {
            return Err(ProxyError::Config(format!("--upstream {:?} must have no query", config.upstream)));
        }
        let resource = config.resource.unwrap_or_else(|| config.upstream.clone());
        let bind_err = |source| ProxyError::Bind { addr: config.listen.clone(), source };
        let listener = TcpListener::bind(&config.listen).map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        let loopback = local_addr.ip().is_loopback();
        if !loopback && !config.allow_non_loopback {
            return Err(ProxyError::Config(format!(
                "--listen {} is not a loopback address: anyone who can reach it would act as agent {:?}. Use 127.0.0.1, or add --allow-non-loopback if that is really meant",
                config.listen,
                config.key.agent()
            )));
        }
        let client_err = |e: reqwest::Error| ProxyError::Config(format!("HTTP client: {e}"));
        let broker_http = crate::agent::broker_http_client().map_err(client_err)?;
        // Upstream requests: no redirects (the token must not follow one elsewhere), no
        // decompression (bodies pass as they are), no overall timeout (SSE streams stay open).
        let upstream_http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .no_gzip()
            .no_brotli()
            .no_deflate()
            .no_zstd()
            .build()
            .map_err(client_err)?;
        let tokens = Arc::new(TokenCache::new(
            broker_http,
            config.issuer,
            config.key,
            resource,
            config.scope,
            config.clock,
        ));
        let local_url = format!("http://{local_addr}{}", upstream.path());
        let state = web::Data::new(ProxyState {
            tokens: tokens.clone(),
            http: upstream_http,
            upstream,
            guard: LocalGuard::new(local_addr.port(), loopback),
            max_buffered_body: config.max_buffered_body,
            sse_keepalive: config.sse_keepalive,
        });
        let server = HttpServer::new(move || {
            App::new().app_data(state.clone()).default_service(web::to(forward::forward))
        })
        .workers(1)
        .shutdown_timeout(2)
        .listen(listener)
        .map_err(bind_err)?
        .run();
        Ok(Proxy { local_addr, local_url, upstream: config.upstream, tokens, server })
    }

    /// Where MCP clients should connect: `http://127.0.0.1:PORT/<upstream path>`.
    pub fn local_url(&self) -> &str {
        &self.local_url
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Ask for the first token now, so that a wrong key or policy shows at start rather than
    /// on the first request. A failure is only reported: the proxy serves anyway and keeps
    /// trying.
    pub async fn warm_up(&self) -> Result<(), String> {
        self.tokens.current().await.map(|_| ()).map_err(|u| u.reason)
    }

    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
