//! Liveness and readiness.

use super::AppState;
use crate::replay::{ReplayStore, GROUPS};
use actix_web::{web, HttpResponse};

/// Alive: the process answers.
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(r#"{"status":"ok"}"#)
}

/// Ready: the replay store answers, so a token could be issued now. While a loss of the
/// replay record is being closed (fresh assertions pass, ones that could have been spent
/// before the loss are refused) the broker is ready, and says so with the window.
pub(crate) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let broker = state.broker();
    match broker.replay.readiness().await {
        Ok(r) => {
            let mut body = serde_json::json!({"status": "ready"});
            // Trusted issuers whose keys are not known yet: their tokens get 503 until they
            // are, but agents work, so the broker is ready; said here for operators.
            let issuers: Vec<serde_json::Value> = broker
                .issuers
                .status()
                .into_iter()
                .map(|i| {
                    serde_json::json!({
                        "id": i.id, "keys_loaded": i.loaded, "keys": i.keys,
                        "fetched_at": i.fetched_at, "last_error": i.last_error,
                    })
                })
                .collect();
            if !issuers.is_empty() {
                body["issuers"] = serde_json::Value::Array(issuers);
            }
            if let Some(lost) = r.lost {
                let now = broker.clock.now_secs();
                body["replay_record_lost"] = serde_json::json!({
                    "lost_at_ms": lost.lost_at_ms,
                    "groups_affected": lost.groups_affected,
                    "groups": GROUPS,
                    "fresh_assertions_accepted_from": lost.fresh_from_secs,
                    "window_ends_at": lost.ends_at_secs,
                    "window_seconds_left": (lost.ends_at_secs - now).max(0),
                    "meaning": "the replay store lost its record of spent assertions; until window_ends_at, \
                                assertions that could have been spent before lost_at_ms are refused (503) \
                                and freshly signed ones are accepted",
                });
            }
            HttpResponse::Ok().content_type("application/json").body(body.to_string())
        }
        Err(e) => {
            tracing::debug!(error = %e, "not ready");
            HttpResponse::ServiceUnavailable()
                .insert_header(("Retry-After", "1"))
                .content_type("application/json")
                .body(r#"{"status":"replay store unavailable"}"#)
        }
    }
}
