//! A test MCP-like upstream for the proxy tests: an OAuth resource server that accepts only
//! tokens of the broker under test made for it. It verifies each token as an MCP server
//! would (signature against the broker's `/jwks.json` with an independent JOSE library,
//! `iss`, `aud`, `exp`, and the `read` scope), answers 401 `invalid_token` otherwise, and
//! records what reached it. Streamable HTTP, simplified: `POST` answers JSON, or SSE when
//! the JSON-RPC method is `stream`; `GET` answers SSE; `DELETE` answers 204. SSE events are
//! fed by the test one at a time through [`Upstream::events`].

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use jsonwebtoken::{decode, decode_header, jwk::JwkSet, Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// What one request brought to the upstream.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Every `Authorization` header value, as received.
    pub authorization: Vec<String>,
    pub session: Option<String>,
    pub protocol_version: Option<String>,
    pub origin: Option<String>,
    /// The token's `jti` when it verified.
    pub jti: Option<String>,
    /// Why the token was refused, when it was.
    pub refused: Option<String>,
    pub body: Vec<u8>,
}

pub struct UpstreamState {
    issuer: String,
    pub resource: String,
    jwks: Mutex<Option<JwkSet>>,
    pub seen: Mutex<Vec<Seen>>,
    revoked: Mutex<HashSet<String>>,
    events: Mutex<Option<mpsc::Receiver<String>>>,
    http: reqwest::Client,
}

pub struct Upstream {
    pub url: String,
    pub state: Arc<UpstreamState>,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

impl Upstream {
    /// An upstream at `http://127.0.0.1:PORT/mcp` that accepts tokens of `issuer` whose
    /// `aud` is `resource`.
    pub fn start(issuer: &str, resource: &str) -> Upstream {
        let state = Arc::new(UpstreamState {
            issuer: issuer.to_string(),
            resource: resource.to_string(),
            jwks: Mutex::new(None),
            seen: Mutex::new(Vec::new()),
            revoked: Mutex::new(HashSet::new()),
            events: Mutex::new(None),
            http: reqwest::Client::builder().no_proxy().build().expect("client"),
        });
        let data = web::Data::from(state.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let port = listener.local_addr().expect("addr").port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(8 * 1024 * 1024))
                .route("/mcp", web::route().to(mcp))
        })
        .workers(1)
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Upstream { url: format!("http://127.0.0.1:{port}/mcp"), state, handle }
    }

    /// The sender for the next SSE response's events (each string is written as is).
    pub fn events(&self) -> mpsc::Sender<String> {
        let (tx, rx) = mpsc::channel(16);
        *self.state.events.lock().expect("lock") = Some(rx);
        tx
    }

    /// From now on, refuse the token with this `jti` as revoked (401 `invalid_token`).
    pub fn revoke(&self, jti: &str) {
        self.state.revoked.lock().expect("lock").insert(jti.to_string());
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("lock").clone()
    }
}

impl UpstreamState {
    async fn keys(&self, refresh: bool) -> Option<JwkSet> {
        if !refresh {
            if let Some(k) = self.jwks.lock().expect("lock").clone() {
                return Some(k);
            }
        }
        let r = self.http.get(format!("{}/jwks.json", self.issuer)).send().await.ok()?;
        let set: JwkSet = r.json().await.ok()?;
        *self.jwks.lock().expect("lock") = Some(set.clone());
        Some(set)
    }

    /// RFC 9068 section 4 as an MCP server applies it: signature by a key of the issuer's
    /// JWKS, `iss`, `aud` = this server, `exp`, and the scope it requires.
    async fn verify(&self, authorization: Option<&str>) -> Result<Value, String> {
        let token = authorization.and_then(|a| a.strip_prefix("Bearer ")).ok_or("no bearer token")?;
        let header = decode_header(token).map_err(|e| format!("header: {e}"))?;
        let kid = header.kid.ok_or("no kid")?;
        let mut jwk = self.keys(false).await.and_then(|k| k.find(&kid).cloned());
        if jwk.is_none() {
            jwk = self.keys(true).await.and_then(|k| k.find(&kid).cloned());
        }
        let key = DecodingKey::from_jwk(&jwk.ok_or("unknown kid")?).map_err(|e| e.to_string())?;
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[self.resource.as_str()]);
        v.set_issuer(&[self.issuer.as_str()]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = decode::<Value>(token, &key, &v).map_err(|e| e.to_string())?.claims;
        if !claims["scope"].as_str().unwrap_or("").split(' ').any(|s| s == "read") {
            return Err("scope read missing".into());
        }
        if self.revoked.lock().expect("lock").contains(claims["jti"].as_str().unwrap_or("")) {
            return Err("revoked".into());
        }
        Ok(claims)
    }
}

fn header(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers().get(name).and_then(|v| v.to_str().ok()).map(String::from)
}

async fn mcp(req: HttpRequest, body: web::Bytes, state: web::Data<UpstreamState>) -> HttpResponse {
    let authorization: Vec<String> =
        req.headers().get_all("authorization").filter_map(|v| v.to_str().ok()).map(String::from).collect();
    let verdict = state.verify(authorization.first().map(String::as_str)).await;
    state.seen.lock().expect("lock").push(Seen {
        method: req.method().to_string(),
        authorization: authorization.clone(),
        session: header(&req, "mcp-session-id"),
        protocol_version: header(&req, "mcp-protocol-version"),
        origin: header(&req, "origin"),
        jti: verdict.as_ref().ok().and_then(|c| c["jti"].as_str()).map(String::from),
        refused: verdict.as_ref().err().cloned(),
        body: body.to_vec(),
    });
    let claims = match verdict {
        Ok(c) => c,
        Err(why) => {
            return HttpResponse::Unauthorized()
                .insert_header((
                    "www-authenticate",
                    format!(
                    "Bearer error=\"invalid_token\", error_description=\"{why}\", resource_metadata=\"{}\"",
                    "http://upstream/.well-known/oauth-protected-resource/mcp"
                ),
                ))
                .finish()
        }
    };
    let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match (req.method().as_str(), message["method"].as_str()) {
        ("GET", _) | ("POST", Some("stream")) => sse(&state),
        ("POST", method) => {
            let mut r = HttpResponse::Ok();
            if method == Some("initialize") {
                r.insert_header(("mcp-session-id", "session-1"));
            }
            r.json(json!({
                "jsonrpc": "2.0",
                "id": message["id"],
                "result": {"sub": claims["sub"], "jti": claims["jti"], "body_len": body.len()},
            }))
        }
        ("DELETE", _) => HttpResponse::NoContent().finish(),
        _ => HttpResponse::MethodNotAllowed().finish(),
    }
}

/// An SSE response whose events the test sends one at a time; it ends when the test drops
/// the sender, and the receiver is dropped (the sender sees it closed) when the response
/// is dropped because the connection went away.
fn sse(state: &UpstreamState) -> HttpResponse {
    let Some(rx) = state.events.lock().expect("lock").take() else {
        return HttpResponse::InternalServerError().body("test set up no events");
    };
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, actix_web::Error>(web::Bytes::from(e)), rx))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(stream)
}
