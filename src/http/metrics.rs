//! `GET /metrics`: Prometheus text exposition format 0.0.4.

use super::AppState;
use crate::broker::Shared;
use actix_web::{web, HttpResponse};

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn render(shared: &Shared) -> HttpResponse {
    if !shared.metrics.enabled() {
        return HttpResponse::NotFound().content_type("text/plain").body("metrics are disabled\n");
    }
    HttpResponse::Ok().content_type(CONTENT_TYPE).body(shared.metrics.render())
}

/// On the public listener.
pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    render(&state.shared)
}

/// On the metrics listener.
pub(crate) async fn metrics_only(shared: web::Data<Shared>) -> HttpResponse {
    render(&shared)
}
