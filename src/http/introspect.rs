//! `POST /introspect` (RFC 7662) and `POST /revoke` (RFC 7009): form ▶ [`EndpointForm`] ▶
//! the broker ▶ JSON, with one audit event each.

use super::token::read_form;
use super::{json_error, AppState};
use crate::introspection::EndpointForm;
use crate::protocol::OAuthError;
use crate::telemetry::{audit, trace};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use tracing::Instrument;

async fn form(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<EndpointForm, (u16, OAuthError)> {
    let body = read_form(req, payload, state.max_body).await?;
    EndpointForm::parse(&body).map_err(|e| (400, e))
}

fn error(state: &AppState, status: u16, e: &OAuthError) -> HttpResponse {
    let mut r = json_error(e, Some(&state.www_authenticate));
    if status != e.code.status() {
        if let Ok(s) = actix_web::http::StatusCode::from_u16(status) {
            *r.status_mut() = s;
        }
    }
    r
}

fn refused_event<'a>(
    event: &'static str,
    e: &'a OAuthError,
    trace_id: Option<&'a str>,
    started: std::time::Instant,
) -> audit::AuditEvent<'a> {
    audit::AuditEvent {
        event,
        outcome: "refused",
        error: Some(e.code.label()),
        reason: Some(&e.description),
        duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        ..Default::default()
    }
    .with_trace(trace_id)
}

pub(crate) async fn introspect(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = std::time::Instant::now();
    let span = trace::request_span("POST /introspect", req.headers());
    let broker = state.broker();
    let trace_id = trace::trace_id(&span, req.headers());
    // Boxed, as in token.rs: the unboxed state machine (~7 KB) was copied into actix's box.
    let result = Box::pin(
        async {
            let f = form(&req, payload, &state).await?;
            broker.introspect(&f).await.map_err(|e| (e.code.status(), e))
        }
        .instrument(span),
    )
    .await;
    let now_ms = broker.clock.now_ms();
    match result {
        Ok(i) => {
            broker.metrics().introspection(i.active);
            audit::emit(
                &audit::AuditEvent {
                    event: "introspect",
                    outcome: if i.active { "active" } else { "inactive" },
                    agent: i.client_id.as_deref(),
                    sub: i.sub.as_deref(),
                    server: Some(&i.caller),
                    jti: i.jti.as_deref(),
                    reason: i.why_inactive,
                    trace_id: trace_id.as_deref(),
                    duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    ..Default::default()
                },
                now_ms,
            );
            HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .insert_header((header::PRAGMA, "no-cache"))
                .content_type("application/json")
                .body(i.body.to_string())
        }
        Err((status, e)) => {
            audit::emit(&refused_event("introspect", &e, trace_id.as_deref(), started), now_ms);
            error(&state, status, &e)
        }
    }
}

pub(crate) async fn revoke(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = std::time::Instant::now();
    let span = trace::request_span("POST /revoke", req.headers());
    let broker = state.broker();
    let trace_id = trace::trace_id(&span, req.headers());
    // Boxed, as in token.rs: the unboxed state machine (~7 KB) was copied into actix's box.
    let result = Box::pin(
        async {
            let f = form(&req, payload, &state).await?;
            broker.revoke(&f).await.map_err(|e| (e.code.status(), e))
        }
        .instrument(span),
    )
    .await;
    let now_ms = broker.clock.now_ms();
    match result {
        Ok(r) => {
            audit::emit(
                &audit::AuditEvent {
                    event: "revoke",
                    outcome: if r.jti.is_some() { "revoked" } else { "ignored" },
                    agent: Some(&r.caller),
                    jti: r.jti.as_deref(),
                    exp: r.exp,
                    reason: r.jti.is_none().then_some("not a valid, unexpired token of this broker"),
                    trace_id: trace_id.as_deref(),
                    duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    ..Default::default()
                },
                now_ms,
            );
            // RFC 7009 section 2.2: 200 with an empty body, revoked or not ours.
            HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).finish()
        }
        Err((status, e)) => {
            audit::emit(&refused_event("revoke", &e, trace_id.as_deref(), started), now_ms);
            error(&state, status, &e)
        }
    }
}
