//! Routes only: thin handlers that parse, call one function, and map the error.

mod health;
mod introspect;
mod metadata;
mod metrics;
mod token;

use crate::broker::{Broker, Shared};
use crate::config::Settings;
use crate::protocol::{ErrorCode, OAuthError};
use crate::reload::{Current, Served};
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, App, HttpResponse, HttpServer};
use std::net::TcpListener;
use std::sync::Arc;

pub(crate) use metadata::document as metadata_document;

pub(crate) struct AppState {
    /// The policy snapshot now serving (swapped on reload).
    pub current: Arc<Current>,
    pub shared: Arc<Shared>,
    pub max_body: usize,
    pub www_authenticate: HeaderValue,
}

impl AppState {
    /// The snapshot this request runs under, start to end.
    pub fn served(&self) -> Arc<Served> {
        self.current.load_full()
    }

    pub fn broker(&self) -> Arc<Broker> {
        self.current.load().broker.clone()
    }
}

/// The public listener: token endpoint, discovery, health; `/metrics` too when
/// `metrics_here` (no separate metrics listener). Signals are the caller's.
pub(crate) fn server(
    listener: TcpListener,
    current: Arc<Current>,
    shared: Arc<Shared>,
    settings: &Settings,
    metrics_here: bool,
) -> std::io::Result<actix_web::dev::Server> {
    let issuer = current.load().broker.tokens.issuer().to_string();
    let state = web::Data::new(AppState {
        www_authenticate: HeaderValue::from_str(&format!(
            "Bearer realm=\"{issuer}\", error=\"invalid_client\""
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_client\"")),
        max_body: settings.server.max_body_bytes,
        current,
        shared,
    });
    let mut server = HttpServer::new(move || {
        let app = App::new().app_data(state.clone());
        let app = if metrics_here { app.service(readable("/metrics", metrics::metrics)) } else { app };
        app.service(
            web::resource("/token")
                .route(web::post().to(token::token))
                .default_service(web::to(|| method_not_allowed("POST"))),
        )
        .service(
            web::resource("/introspect")
                .route(web::post().to(introspect::introspect))
                .default_service(web::to(|| method_not_allowed("POST"))),
        )
        .service(
            web::resource("/revoke")
                .route(web::post().to(introspect::revoke))
                .default_service(web::to(|| method_not_allowed("POST"))),
        )
        .service(readable("/.well-known/oauth-authorization-server", metadata::metadata))
        .service(readable("/.well-known/openid-configuration", metadata::metadata))
        .service(readable("/jwks.json", metadata::jwks))
        .route("/authorize", web::route().to(metadata::authorize))
        .service(readable("/healthz", health::healthz))
        .service(readable("/readyz", health::readyz))
        .default_service(web::to(not_found))
    })
    .listen(listener)?
    .disable_signals()
    .shutdown_timeout(settings.server.shutdown_timeout_secs);
    if let Some(workers) = settings.server.workers {
        server = server.workers(workers.max(1));
    }
    Ok(server.run())
}

/// The metrics listener (`metrics.listen`): `/metrics` and `/healthz` only.
pub(crate) fn metrics_server(
    listener: TcpListener,
    shared: Arc<Shared>,
    settings: &Settings,
) -> std::io::Result<actix_web::dev::Server> {
    let shared = web::Data::from(shared);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .service(readable("/metrics", metrics::metrics_only))
            .service(readable("/healthz", health::healthz))
            .default_service(web::to(not_found))
    })
    .listen(listener)?
    .workers(1)
    .disable_signals()
    .shutdown_timeout(settings.server.shutdown_timeout_secs)
    .run())
}

/// A resource that answers GET and HEAD, and 405 with `Allow` to any other method.
fn readable<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(web::to(|| method_not_allowed("GET, HEAD")))
}

/// RFC 9110 section 15.5.6: 405 with the methods the resource does support.
async fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let e = OAuthError::invalid_request(format!("method not allowed here; use {allow}"));
    let mut r = json_error(&e, None).customize_status(405);
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

async fn not_found() -> HttpResponse {
    json_error(&OAuthError::invalid_request("no such endpoint"), None).customize_status(404)
}

trait CustomizeStatus {
    fn customize_status(self, status: u16) -> HttpResponse;
}

impl CustomizeStatus for HttpResponse {
    fn customize_status(mut self, status: u16) -> HttpResponse {
        if let Ok(s) = actix_web::http::StatusCode::from_u16(status) {
            *self.status_mut() = s;
        }
        self
    }
}

/// An RFC 6749 §5.2 error response: JSON, `no-store`, `WWW-Authenticate` on 401 and
/// `Retry-After` on 503.
pub(crate) fn json_error(e: &OAuthError, www_authenticate: Option<&HeaderValue>) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(e.code.status())
        .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    let mut res = HttpResponse::build(status);
    res.insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .content_type("application/json");
    match e.code {
        ErrorCode::InvalidClient => {
            let v = www_authenticate
                .cloned()
                .unwrap_or_else(|| HeaderValue::from_static("Bearer error=\"invalid_client\""));
            res.insert_header((header::WWW_AUTHENTICATE, v));
        }
        ErrorCode::TemporarilyUnavailable | ErrorCode::RateLimited => {
            res.insert_header((header::RETRY_AFTER, e.retry_after_secs.unwrap_or(1).to_string()));
        }
        _ => {}
    }
    res.body(e.to_json())
}
