//! `POST /token` (RFC 6749 §3.2): form body ▶ [`TokenRequest`] ▶ [`Broker::exchange`] ▶ JSON.

use super::{json_error, AppState};
use crate::broker::{Broker, Issued};
use crate::protocol::{GrantRequest, OAuthError, TokenRequest};
use crate::telemetry::metrics::GRANTS;
use crate::telemetry::{audit, trace};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use tracing::Instrument;

pub(crate) async fn token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = std::time::Instant::now();
    let span = trace::request_span("POST /token", req.headers());
    // The snapshot this request runs under, whatever reloads happen meanwhile.
    let served = state.served();
    let broker = &served.broker;
    // Boxed: the exchange's state machine is ~9 KB (the Redis client's futures are large),
    // and unboxed it was carried, and copied, three times over by the wrappers around it
    // (the task-local trail, actix's boxed handler future): a 27 KB memcpy per request.
    let (answer, trail) =
        audit::with_trail(Box::pin(answer(&req, payload, &state, broker).instrument(span.clone()))).await;
    let took = started.elapsed();
    let grant = answer.grant.map_or(GRANTS.len() - 1, |g| g);
    let error = answer.result.as_ref().err().map(|(_, e)| e.code);
    broker.metrics().token_request(grant, error, took);

    let trace_id = trace::trace_id(&span, req.headers());
    let issued = answer.result.as_ref().ok();
    let refused = answer.result.as_ref().err().map(|(_, e)| e);
    if !span.is_disabled() {
        span.record("grant", GRANTS[grant]);
        span.record("outcome", if issued.is_some() { "issued" } else { "refused" });
        if let Some(a) = trail.agent.as_deref() {
            span.record("agent", a);
        }
        if let Some(s) = trail.server.as_deref() {
            span.record("server", s);
        }
        if let Some(r) = trail.rule.as_deref() {
            span.record("rule", r);
        }
        if let Some(e) = refused {
            span.record("error", e.code.label());
            if e.code.status() >= 500 {
                span.record("otel.status_code", "ERROR");
            }
        }
    }
    let act: Option<Vec<&str>> = issued.and_then(|i| i.act.as_ref()).map(|a| {
        let mut chain = Vec::with_capacity(a.depth());
        let mut cur = Some(a);
        while let Some(x) = cur {
            chain.push(x.sub.as_str());
            cur = x.act.as_deref();
        }
        chain
    });
    audit::emit(
        &audit::AuditEvent {
            event: "token",
            outcome: if issued.is_some() { "issued" } else { "refused" },
            grant: answer.grant.map(|g| GRANTS[g]),
            agent: trail.agent.as_deref(),
            sub: issued.map(|i| i.sub.as_str()),
            act,
            server: trail.server.as_deref(),
            aud: issued.map(|i| i.aud.as_str()),
            scope_requested: answer.scope_requested.as_deref(),
            scope_granted: issued.map(|i| i.response.scope.as_str()),
            jti: issued.map(|i| i.jti.as_str()),
            exp: issued.map(|i| i.exp),
            issuer: issued.and_then(|i| i.issuer.as_deref()),
            rule: trail.rule.as_deref(),
            error: refused.map(|e| e.code.label()),
            reason: refused.map(|e| e.description.as_str()),
            trace_id: trace_id.as_deref(),
            duration_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        },
        broker.clock.now_ms(),
    );
    match answer.result {
        Ok(issued) => match serde_json::to_vec(&issued.response) {
            Ok(json) => HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .insert_header((header::PRAGMA, "no-cache"))
                .content_type("application/json")
                .body(json),
            Err(_) => json_error(&OAuthError::server_error(), None),
        },
        Err((status, e)) => {
            let mut r = json_error(&e, Some(&state.www_authenticate));
            if let Some(s) = status.and_then(|s| actix_web::http::StatusCode::from_u16(s).ok()) {
                *r.status_mut() = s;
            }
            r
        }
    }
}

/// What one request came to, before it is counted, audited and written.
struct Answer {
    /// Index into [`GRANTS`]; `None` when the request did not parse.
    grant: Option<usize>,
    scope_requested: Option<String>,
    /// An error carries its HTTP status when it is not the code's own (413).
    result: Result<Issued, (Option<u16>, OAuthError)>,
}

async fn answer(req: &HttpRequest, payload: web::Payload, state: &AppState, broker: &Broker) -> Answer {
    let refused = |status, e| Answer { grant: None, scope_requested: None, result: Err((status, e)) };
    let body = match read_form(req, payload, state.max_body).await {
        Ok(b) => b,
        Err((status, e)) => return refused(Some(status), e),
    };
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() >= 6 && v[..6].eq_ignore_ascii_case("basic "));
    let parsed = match TokenRequest::parse(&body, basic) {
        Ok(r) => r,
        Err(e) => return refused(None, e),
    };
    let grant = match parsed.grant {
        GrantRequest::ClientCredentials => 0,
        GrantRequest::JwtBearer { .. } => 1,
        GrantRequest::TokenExchange { .. } => 2,
    };
    Answer {
        grant: Some(grant),
        scope_requested: parsed.scope.as_ref().map(|s| s.to_string()),
        result: broker.exchange(&parsed).await.map_err(|e| (None, e)),
    }
}

/// The body, if it is form-encoded and no larger than `max`. Errors carry their HTTP status
/// (415 wrong media type, 413 too large) beside the OAuth `invalid_request`.
pub(super) async fn read_form(
    req: &HttpRequest,
    mut payload: web::Payload,
    max: usize,
) -> Result<web::Bytes, (u16, OAuthError)> {
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form {
        return Err((
            400,
            OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded (RFC 6749 section 3.2)",
            ),
        ));
    }
    let too_large =
        || (413, OAuthError::invalid_request(format!("the request body is larger than {max} bytes")));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(max));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| (400, OAuthError::invalid_request("the request body could not be read")))?;
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
