//! One request through the proxy: guard, body, token, upstream, and the response streamed
//! back as it arrives (SSE events one by one; a client that goes away drops the upstream
//! response, which closes that stream upstream too).

use super::headers;
use super::tokens::{TokenCache, Unavailable};
use super::LocalGuard;
use actix_web::body::SizedStream;
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::{StreamExt, TryStreamExt};
use std::sync::Arc;

pub(crate) struct ProxyState {
    pub tokens: Arc<TokenCache>,
    pub http: reqwest::Client,
    pub upstream: url::Url,
    pub guard: LocalGuard,
    pub max_buffered_body: usize,
    pub sse_keepalive: std::time::Duration,
}

/// A request body: held in memory when small (so it can be resent after a 401), or
/// streamed through as it arrives when larger than the bound (sent once, not resent).
enum Body {
    Buffered(Bytes),
    Streamed(Option<reqwest::Body>),
}

fn text(status: StatusCode, message: String) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(("cache-control", "no-store"))
        .content_type("text/plain; charset=utf-8")
        .body(message + "\n")
}

pub(crate) async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ProxyState>,
) -> HttpResponse {
    if let Err(why) = state.guard.check(&req) {
        tracing::warn!(path = req.path(), "{why}");
        return text(StatusCode::FORBIDDEN, why);
    }
    if req.path() != state.upstream.path() {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "agent-sts proxy: only {} is forwarded (to {}); this proxy serves nothing else",
                state.upstream.path(),
                state.upstream
            ),
        );
    }
    let method = match req.method().as_str() {
        "GET" => reqwest::Method::GET,
        "POST" => reqwest::Method::POST,
        "DELETE" => reqwest::Method::DELETE,
        other => {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("agent-sts proxy: {other} is not forwarded; MCP streamable HTTP uses GET, POST and DELETE"),
            );
            r.headers_mut().insert(
                actix_web::http::header::ALLOW,
                actix_web::http::header::HeaderValue::from_static("GET, POST, DELETE"),
            );
            return r;
        }
    };
    let mut body = match read_body(payload, state.max_buffered_body).await {
        Ok(b) => b,
        Err(e) => {
            return text(StatusCode::BAD_REQUEST, format!("agent-sts proxy: reading the request body: {e}"))
        }
    };
    let mut url = state.upstream.clone();
    let query = req.query_string();
    url.set_query(if query.is_empty() { None } else { Some(query) });
    let out_headers = headers::upstream_request(req.headers(), matches!(body, Body::Streamed(_)));

    let mut token = match state.tokens.current().await {
        Ok(t) => t,
        Err(u) => return unavailable(&state, &u),
    };
    let mut retried = false;
    loop {
        let mut upstream_req = state.http.request(method.clone(), url.clone()).headers(out_headers.clone());
        upstream_req = match &mut body {
            Body::Buffered(b) if b.is_empty() && method != reqwest::Method::POST => upstream_req,
            Body::Buffered(b) => upstream_req.body(b.clone()),
            Body::Streamed(s) => match s.take() {
                Some(s) => upstream_req.body(s),
                None => upstream_req,
            },
        };
        let sent = upstream_req.bearer_auth(token.secret()).send().await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let why = crate::agent::error_chain(&e);
                tracing::warn!(upstream = %state.upstream, "agent-sts proxy: upstream unreachable: {why}");
                return text(
                    StatusCode::BAD_GATEWAY,
                    format!("agent-sts proxy: cannot reach the upstream {}: {why}", state.upstream),
                );
            }
        };
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
            tracing::debug!(%method, status = resp.status().as_u16(), "agent-sts proxy: forwarded");
            return stream_back(resp, state.sse_keepalive);
        }
        // RFC 6750 section 3.1: our token was refused. Renew at once; resend once if the
        // body is still at hand.
        let invalid = headers::says_invalid_token(resp.headers());
        if invalid && !retried {
            state.tokens.reject(&token).await;
            if matches!(body, Body::Buffered(_)) {
                token = match state.tokens.current().await {
                    Ok(t) => t,
                    Err(u) => return unavailable(&state, &u),
                };
                retried = true;
                tracing::info!(upstream = %state.upstream, "agent-sts proxy: upstream refused the token; renewed, resending");
                continue;
            }
        }
        return refused_upstream(&state, retried, invalid, matches!(body, Body::Streamed(_)));
    }
}

fn unavailable(state: &ProxyState, u: &Unavailable) -> HttpResponse {
    let mut r = text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "agent-sts proxy: no access token for {}: the broker at {} did not provide one: {}. The proxy keeps trying (next attempt on a request after {} s).",
            state.upstream,
            state.tokens.issuer(),
            u.reason,
            u.retry_after_secs
        ),
    );
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&u.retry_after_secs.to_string()) {
        r.headers_mut().insert(actix_web::http::header::RETRY_AFTER, v);
    }
    r
}

/// The upstream said 401 and resending is not possible or did not help. The client gets
/// 502 with the reason, not the 401: a client that sees a challenge would start an OAuth
/// flow of its own, and the problem is between the proxy, the broker and the upstream.
fn refused_upstream(state: &ProxyState, retried: bool, invalid: bool, streamed: bool) -> HttpResponse {
    let why = if retried {
        "it also refused a fresh token from the broker: check that the upstream trusts this broker's issuer and expects the audience the proxy asks for (--resource)".to_string()
    } else if streamed {
        format!(
            "the token has been renewed, but this request's body (over {} bytes) was streamed and cannot be resent; send it again",
            state.max_buffered_body
        )
    } else if !invalid {
        "its challenge did not say error=\"invalid_token\", so a new token would not help".to_string()
    } else {
        "no resend was possible".to_string()
    };
    tracing::warn!(upstream = %state.upstream, "agent-sts proxy: upstream answered 401: {why}");
    text(
        StatusCode::BAD_GATEWAY,
        format!("agent-sts proxy: the upstream {} answered 401; {why}", state.upstream),
    )
}

/// The upstream's response, headers filtered, body streamed chunk by chunk as it arrives.
fn stream_back(resp: reqwest::Response, sse_keepalive: std::time::Duration) -> HttpResponse {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut builder = HttpResponse::build(status);
    for (name, value) in headers::local_response(resp.headers()) {
        builder.append_header((name, value));
    }
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return builder.finish();
    }
    let length = resp.content_length();
    let event_stream = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/event-stream"));
    let stream = resp.bytes_stream().map_err(|e| {
        tracing::warn!(
            "agent-sts proxy: upstream response ended with an error: {}",
            crate::agent::error_chain(&e)
        );
        std::io::Error::other("upstream response failed")
    });
    match length {
        Some(n) => builder.body(SizedStream::new(n, stream)),
        None if event_stream => {
            builder.streaming(super::sse::with_keepalive(Box::pin(stream), sse_keepalive))
        }
        None => builder.streaming(stream),
    }
}

/// Read up to `limit` bytes into memory; past that, stream the rest (what was read first,
/// then the remaining payload) through a channel, since the local payload lives on this
/// worker's thread and the upstream body must be `Send`.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Body, actix_web::error::PayloadError> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk?;
        if buf.len() + chunk.len() <= limit {
            buf.extend_from_slice(&chunk);
            continue;
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let first = buf.freeze();
        actix_web::rt::spawn(async move {
            for piece in [first, chunk] {
                if tx.send(Ok(piece)).await.is_err() {
                    return;
                }
            }
            while let Some(next) = payload.next().await {
                let item = next.map_err(|e| std::io::Error::other(e.to_string()));
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        let stream =
            futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        return Ok(Body::Streamed(Some(reqwest::Body::wrap_stream(stream))));
    }
    Ok(Body::Buffered(buf.freeze()))
}
