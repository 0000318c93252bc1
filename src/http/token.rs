//! `POST /token` (RFC 6749 §3.2): form body ▶ [`TokenRequest`] ▶ [`Broker::exchange`] ▶ JSON.

use super::{json_error, AppState};
use crate::protocol::{OAuthError, TokenRequest};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

pub(crate) async fn token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = std::time::Instant::now();
    let www = &state.www_authenticate;
    let body = match read_form(&req, payload, state.max_body).await {
        Ok(b) => b,
        Err((status, e)) => {
            audit_refused(None, &e, started);
            let mut r = json_error(&e, Some(www));
            if let Ok(s) = actix_web::http::StatusCode::from_u16(status) {
                *r.status_mut() = s;
            }
            return r;
        }
    };
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() >= 6 && v[..6].eq_ignore_ascii_case("basic "));
    let parsed = match TokenRequest::parse(&body, basic) {
        Ok(r) => r,
        Err(e) => {
            audit_refused(None, &e, started);
            return json_error(&e, Some(www));
        }
    };
    match state.broker.exchange(&parsed).await {
        Ok(issued) => {
            tracing::info!(
                target: "agent_sts::audit",
                outcome = "issued",
                grant = parsed.grant.name(),
                client_id = %issued.client_id,
                sub = %issued.sub,
                aud = %issued.aud,
                scope = %issued.response.scope,
                jti = %issued.jti,
                expires_in = issued.response.expires_in,
                micros = started.elapsed().as_micros() as u64,
            );
            match serde_json::to_vec(&issued.response) {
                Ok(json) => HttpResponse::Ok()
                    .insert_header((header::CACHE_CONTROL, "no-store"))
                    .insert_header((header::PRAGMA, "no-cache"))
                    .content_type("application/json")
                    .body(json),
                Err(_) => json_error(&OAuthError::server_error(), None),
            }
        }
        Err(e) => {
            audit_refused(Some(parsed.grant.name()), &e, started);
            json_error(&e, Some(www))
        }
    }
}

fn audit_refused(grant: Option<&str>, e: &OAuthError, started: std::time::Instant) {
    tracing::info!(
        target: "agent_sts::audit",
        outcome = "refused",
        grant = grant.unwrap_or("-"),
        error = e.code.as_str(),
        reason = %e.description,
        micros = started.elapsed().as_micros() as u64,
    );
}

/// The body, if it is form-encoded and no larger than `max`. Errors carry their HTTP status
/// (415 wrong media type, 413 too large) beside the OAuth `invalid_request`.
async fn read_form(
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
