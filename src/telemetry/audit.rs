//! The audit log: one event per decision (a token issued or refused, an introspection, a
//! revocation), never a token or an assertion, only ids.
//!
//! With `log.format = "json"` each event is one JSON object on one line of stderr with a
//! fixed set of keys (absent values are `null`), written in one `write`; the schema is in
//! the README ("Audit events"). With `text` it is a `tracing` event at target
//! `agent_sts::audit`. Either way `RUST_LOG` decides whether it is written (info level).
//!
//! What the broker learns on the way (the authenticated agent, the server, the rule) is
//! noted in a task-local [`Trail`] that the HTTP handler reads when it writes the event, so
//! a refusal after authentication still names the agent.

use crate::config::LogFormat;
use serde::Serialize;
use std::cell::RefCell;
use std::sync::OnceLock;

pub const AUDIT_TARGET: &str = "agent_sts::audit";

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

pub(super) fn set_format(f: LogFormat) {
    let _ = FORMAT.set(f);
}

/// What the broker learned while answering one request.
#[derive(Debug, Default, Clone)]
pub struct Trail {
    /// The authenticated agent (the client, or the actor of an exchange).
    pub agent: Option<String>,
    /// The MCP server (policy id) the decision was about.
    pub server: Option<String>,
    /// The policy rule that permitted the token.
    pub rule: Option<String>,
}

tokio::task_local! {
    static TRAIL: RefCell<Trail>;
}

/// Run `f` with a fresh trail; return its output and what was noted.
pub async fn with_trail<F: std::future::Future>(f: F) -> (F::Output, Trail) {
    TRAIL
        .scope(RefCell::new(Trail::default()), async move {
            let out = f.await;
            let trail = TRAIL.with(|t| t.take());
            (out, trail)
        })
        .await
}

/// Note something in the current request's trail (nothing outside a request).
pub fn note(f: impl FnOnce(&mut Trail)) {
    let _ = TRAIL.try_with(|t| f(&mut t.borrow_mut()));
}

/// One audit event. Every field is always written (`null` when not known).
#[derive(Debug, Default, Serialize)]
pub struct AuditEvent<'a> {
    /// `token`, `introspect` or `revoke`.
    pub event: &'static str,
    /// token: `issued` | `refused`; introspect: `active` | `inactive` | `refused`;
    /// revoke: `revoked` | `ignored` | `refused`.
    pub outcome: &'static str,
    pub grant: Option<&'a str>,
    pub agent: Option<&'a str>,
    pub sub: Option<&'a str>,
    /// The actor chain, outermost (current) actor first.
    pub act: Option<Vec<&'a str>>,
    pub server: Option<&'a str>,
    pub aud: Option<&'a str>,
    pub scope_requested: Option<&'a str>,
    pub scope_granted: Option<&'a str>,
    pub jti: Option<&'a str>,
    pub exp: Option<i64>,
    /// The trusted issuer (policy id) whose token was presented (federation).
    pub issuer: Option<&'a str>,
    /// The policy rule that decided: `agent:<id>/allow:<server>`, or a federation or
    /// delegation rule's name.
    pub rule: Option<&'a str>,
    pub error: Option<&'static str>,
    pub reason: Option<&'a str>,
    pub trace_id: Option<&'a str>,
    pub duration_us: u64,
}

impl<'a> AuditEvent<'a> {
    pub fn with_trace(mut self, trace_id: Option<&'a str>) -> Self {
        self.trace_id = trace_id;
        self
    }
}

#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    level: &'static str,
    target: &'static str,
    #[serde(flatten)]
    event: &'a AuditEvent<'a>,
}

/// Write the event (if `RUST_LOG` lets info-level audit events through). `now_ms` is the
/// broker clock's time.
pub fn emit(e: &AuditEvent<'_>, now_ms: i64) {
    if !tracing::enabled!(target: AUDIT_TARGET, tracing::Level::INFO) {
        return;
    }
    match FORMAT.get() {
        Some(LogFormat::Json) => {
            let line = Line { ts: rfc3339_ms(now_ms), level: "INFO", target: AUDIT_TARGET, event: e };
            if let Ok(mut bytes) = serde_json::to_vec(&line) {
                bytes.push(b'\n');
                use std::io::Write;
                let _ = std::io::stderr().lock().write_all(&bytes);
            }
        }
        _ => {
            let act = e.act.as_ref().map(|a| a.join(","));
            tracing::info!(
                target: AUDIT_TARGET,
                event = e.event,
                outcome = e.outcome,
                grant = e.grant,
                agent = e.agent,
                sub = e.sub,
                act = act.as_deref(),
                server = e.server,
                aud = e.aud,
                scope_requested = e.scope_requested,
                scope_granted = e.scope_granted,
                jti = e.jti,
                exp = e.exp,
                issuer = e.issuer,
                rule = e.rule,
                error = e.error,
                reason = e.reason,
                trace_id = e.trace_id,
                duration_us = e.duration_us,
            );
        }
    }
}

/// `2026-01-02T03:04:05.678Z` from Unix milliseconds (proleptic Gregorian, UTC).
pub fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", sod / 3600, sod % 3600 / 60, sod % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_767_225_599_999), "2025-12-31T23:59:59.999Z");
    }

    #[test]
    fn every_key_is_present_in_the_json_line() {
        let e = AuditEvent {
            event: "token",
            outcome: "refused",
            error: Some("invalid_client"),
            ..Default::default()
        };
        let line = Line { ts: rfc3339_ms(0), level: "INFO", target: AUDIT_TARGET, event: &e };
        let v: serde_json::Value = serde_json::to_value(&line).expect("json");
        let keys: Vec<&str> = v.as_object().expect("object").keys().map(String::as_str).collect();
        for k in [
            "ts",
            "level",
            "target",
            "event",
            "outcome",
            "grant",
            "agent",
            "sub",
            "act",
            "server",
            "aud",
            "scope_requested",
            "scope_granted",
            "jti",
            "exp",
            "rule",
            "error",
            "reason",
            "trace_id",
            "duration_us",
        ] {
            assert!(keys.contains(&k), "missing {k}");
        }
        assert_eq!(v["agent"], serde_json::Value::Null);
    }

    #[tokio::test]
    async fn the_trail_is_per_request() {
        let ((), t) = with_trail(async { note(|t| t.agent = Some("bot".into())) }).await;
        assert_eq!(t.agent.as_deref(), Some("bot"));
        let ((), t) = with_trail(async {}).await;
        assert_eq!(t.agent, None);
        note(|t| t.agent = Some("outside".into()));
    }
}
