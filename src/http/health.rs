//! Liveness and readiness.

use super::AppState;
use actix_web::{web, HttpResponse};

/// Alive: the process answers.
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(r#"{"status":"ok"}"#)
}

/// Ready: the replay store answers, so a token could be issued now.
pub(crate) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.broker().ready().await {
        HttpResponse::Ok().content_type("application/json").body(r#"{"status":"ready"}"#)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .content_type("application/json")
            .body(r#"{"status":"replay store unavailable"}"#)
    }
}
