//! Prometheus metrics: a small registry of atomic counters and fixed-bucket histograms,
//! rendered in the text exposition format (version 0.0.4) at `GET /metrics`.
//!
//! Every label takes values from a closed set (grant type, outcome, OAuth error code, a result)
//! or from the policy (server ids); nothing a request sends becomes a label value. A request
//! costs a handful of relaxed atomic adds; with `metrics.enabled = false` it costs one load.

use crate::protocol::ErrorCode;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::RwLock;
use std::time::Duration;

/// Grant label values; index 3 is a request whose grant could not be parsed.
pub const GRANTS: [&str; 4] = ["client_credentials", "jwt_bearer", "token_exchange", "unknown"];

/// The `error` label values of `agent_sts_token_requests_total`: "none" for an issued token,
/// then every error code. `rate_limited` is the 429 answer (its wire code is
/// `temporarily_unavailable`, like the 503 of an unavailable store).
pub const ERRORS: [&str; 11] = [
    "none",
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_target",
    "temporarily_unavailable",
    "server_error",
    "rate_limited",
];

fn error_index(code: Option<ErrorCode>) -> usize {
    let label = code.map_or("none", ErrorCode::label);
    ERRORS.iter().position(|e| *e == label).unwrap_or(0)
}

/// Token request latency buckets (seconds): the broker answers in 0.1-5 ms when healthy;
/// the long tail is a slow replay store (bounded by its command timeout).
const LATENCY_BUCKETS: [f64; 12] =
    [0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024];
/// Replay store round trips (seconds).
const STORE_BUCKETS: [f64; 10] = [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.064, 0.256];

/// A histogram with fixed buckets; observations in microseconds, summed as such.
pub struct Histogram<const N: usize> {
    bounds: &'static [f64; N],
    bounds_us: [u64; N],
    counts: [AtomicU64; N],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    fn new(bounds: &'static [f64; N]) -> Self {
        Histogram {
            bounds,
            bounds_us: bounds.map(|b| (b * 1e6).round() as u64),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        // Counts are per bucket (not cumulative) here; rendering accumulates them.
        if let Some(i) = self.bounds_us.iter().position(|b| us <= *b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Counters keyed by a policy server id: the set changes only when the policy does.
#[derive(Default)]
struct ServerCounters(RwLock<Vec<(String, AtomicU64)>>);

impl ServerCounters {
    fn inc(&self, server: &str) {
        if let Ok(list) = self.0.read() {
            if let Some((_, c)) = list.iter().find(|(s, _)| s == server) {
                c.fetch_add(1, Relaxed);
                return;
            }
        }
        if let Ok(mut list) = self.0.write() {
            match list.iter().find(|(s, _)| s == server) {
                Some((_, c)) => {
                    c.fetch_add(1, Relaxed);
                }
                None => list.push((server.to_string(), AtomicU64::new(1))),
            }
        }
    }
}

/// The broker's metrics. One per process (shared by the policy snapshots across reloads).
pub struct Metrics {
    enabled: AtomicBool,
    requests: [[AtomicU64; ERRORS.len()]; GRANTS.len()],
    latency: [Histogram<{ LATENCY_BUCKETS.len() }>; GRANTS.len()],
    issued_by_server: ServerCounters,
    replay_refusals: AtomicU64,
    replay_errors: AtomicU64,
    replay_latency: Histogram<{ STORE_BUCKETS.len() }>,
    rate_limited: AtomicU64,
    issuer_key_fetches: [AtomicU64; 2],
    policy_reloads: [AtomicU64; 2],
    policy_loaded_at_ms: AtomicU64,
    introspections: [AtomicU64; 2],
    revocations: AtomicU64,
}

/// `result` label values.
const RESULTS: [&str; 2] = ["ok", "failed"];

impl Metrics {
    pub fn new(enabled: bool) -> Metrics {
        Metrics {
            enabled: AtomicBool::new(enabled),
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency: std::array::from_fn(|_| Histogram::new(&LATENCY_BUCKETS)),
            issued_by_server: ServerCounters::default(),
            replay_refusals: AtomicU64::new(0),
            replay_errors: AtomicU64::new(0),
            replay_latency: Histogram::new(&STORE_BUCKETS),
            rate_limited: AtomicU64::new(0),
            issuer_key_fetches: [AtomicU64::new(0), AtomicU64::new(0)],
            policy_reloads: [AtomicU64::new(0), AtomicU64::new(0)],
            policy_loaded_at_ms: AtomicU64::new(0),
            introspections: [AtomicU64::new(0), AtomicU64::new(0)],
            revocations: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    /// One answered token request. `grant` is an index into [`GRANTS`]; `error` is `None`
    /// when a token was issued.
    pub fn token_request(&self, grant: usize, error: Option<ErrorCode>, took: Duration) {
        if !self.enabled() {
            return;
        }
        let g = grant.min(GRANTS.len() - 1);
        self.requests[g][error_index(error)].fetch_add(1, Relaxed);
        self.latency[g].observe(took);
    }

    pub fn token_issued(&self, server_id: &str) {
        if self.enabled() {
            self.issued_by_server.inc(server_id);
        }
    }

    pub fn replay_refused(&self) {
        if self.enabled() {
            self.replay_refusals.fetch_add(1, Relaxed);
        }
    }

    /// One replay store call: its latency, and whether it failed (unavailable, timeout, full).
    pub fn replay_call(&self, took: Duration, failed: bool) {
        if !self.enabled() {
            return;
        }
        self.replay_latency.observe(took);
        if failed {
            self.replay_errors.fetch_add(1, Relaxed);
        }
    }

    pub fn rate_limited(&self) {
        if self.enabled() {
            self.rate_limited.fetch_add(1, Relaxed);
        }
    }

    /// A trusted issuer's JWKS fetch (for `src/issuers/`).
    pub fn issuer_key_fetch(&self, ok: bool) {
        if self.enabled() {
            self.issuer_key_fetches[usize::from(!ok)].fetch_add(1, Relaxed);
        }
    }

    /// A policy (and signing key) reload; `loaded_at_ms` is set on success.
    pub fn policy_reload(&self, ok: bool, now_ms: i64) {
        self.policy_reloads[usize::from(!ok)].fetch_add(1, Relaxed);
        if ok {
            self.policy_loaded(now_ms);
        }
    }

    pub fn policy_loaded(&self, now_ms: i64) {
        self.policy_loaded_at_ms.store(u64::try_from(now_ms).unwrap_or(0), Relaxed);
    }

    pub fn introspection(&self, active: bool) {
        if self.enabled() {
            self.introspections[usize::from(active)].fetch_add(1, Relaxed);
        }
    }

    pub fn revocation(&self) {
        if self.enabled() {
            self.revocations.fetch_add(1, Relaxed);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let o = &mut out;
        header(o, "agent_sts_build_info", "gauge", "Always 1; the version label says which build runs.");
        let _ = writeln!(o, "agent_sts_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));

        header(
            o,
            "agent_sts_token_requests_total",
            "counter",
            "Token requests answered, by grant type, outcome and OAuth error code (none when issued).",
        );
        for (g, grant) in GRANTS.iter().enumerate() {
            for (e, error) in ERRORS.iter().enumerate() {
                let outcome = if e == 0 { "issued" } else { "refused" };
                let n = self.requests[g][e].load(Relaxed);
                let _ = writeln!(
                    o,
                    "agent_sts_token_requests_total{{grant=\"{grant}\",outcome=\"{outcome}\",error=\"{error}\"}} {n}"
                );
            }
        }
        header(
            o,
            "agent_sts_token_request_duration_seconds",
            "histogram",
            "Time from the request's arrival to its answer, by grant type.",
        );
        for (g, grant) in GRANTS.iter().enumerate() {
            self.latency[g].render(
                o,
                "agent_sts_token_request_duration_seconds",
                &format!("grant=\"{grant}\""),
            );
        }
        header(
            o,
            "agent_sts_tokens_issued_total",
            "counter",
            "Access tokens issued, by MCP server id (from the policy).",
        );
        if let Ok(list) = self.issued_by_server.0.read() {
            for (server, n) in list.iter() {
                let _ = writeln!(
                    o,
                    "agent_sts_tokens_issued_total{{server=\"{}\"}} {}",
                    escape(server),
                    n.load(Relaxed)
                );
            }
        }
        counter(
            o,
            "agent_sts_replay_refusals_total",
            "Assertions refused because their jti was already spent.",
            &self.replay_refusals,
        );
        counter(
            o,
            "agent_sts_replay_store_errors_total",
            "Replay store calls that failed or timed out (the request was refused with 503).",
            &self.replay_errors,
        );
        header(
            o,
            "agent_sts_replay_store_duration_seconds",
            "histogram",
            "Replay store round trips (the atomic jti spend).",
        );
        self.replay_latency.render(o, "agent_sts_replay_store_duration_seconds", "");
        counter(
            o,
            "agent_sts_rate_limited_total",
            "Token requests refused with 429 by an agent's rate limit.",
            &self.rate_limited,
        );
        header(
            o,
            "agent_sts_issuer_key_fetches_total",
            "counter",
            "JWKS fetches from trusted issuers, by result.",
        );
        for (i, r) in RESULTS.iter().enumerate() {
            let _ = writeln!(
                o,
                "agent_sts_issuer_key_fetches_total{{result=\"{r}\"}} {}",
                self.issuer_key_fetches[i].load(Relaxed)
            );
        }
        header(
            o,
            "agent_sts_policy_reloads_total",
            "counter",
            "Policy and signing key reloads, by result; a failed one keeps the previous policy.",
        );
        for (i, r) in RESULTS.iter().enumerate() {
            let _ = writeln!(
                o,
                "agent_sts_policy_reloads_total{{result=\"{r}\"}} {}",
                self.policy_reloads[i].load(Relaxed)
            );
        }
        header(
            o,
            "agent_sts_policy_loaded_timestamp_seconds",
            "gauge",
            "When the policy now serving was loaded (Unix time).",
        );
        let _ = writeln!(
            o,
            "agent_sts_policy_loaded_timestamp_seconds {}",
            self.policy_loaded_at_ms.load(Relaxed) / 1000
        );
        header(o, "agent_sts_introspections_total", "counter", "RFC 7662 introspection answers, by active.");
        for (i, a) in ["false", "true"].iter().enumerate() {
            let _ = writeln!(
                o,
                "agent_sts_introspections_total{{active=\"{a}\"}} {}",
                self.introspections[i].load(Relaxed)
            );
        }
        counter(o, "agent_sts_revocations_total", "Tokens revoked (RFC 7009 or the CLI).", &self.revocations);
        out
    }
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(o: &mut String, name: &str, help: &str, v: &AtomicU64) {
    header(o, name, "counter", help);
    let _ = writeln!(o, "{name} {}", v.load(Relaxed));
}

/// Label value escaping (exposition format): backslash, double quote, newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no line {prefix}"))
    }

    #[test]
    fn counts_and_renders_cumulative_buckets() {
        let m = Metrics::new(true);
        m.token_request(0, None, Duration::from_micros(300));
        m.token_request(0, Some(ErrorCode::InvalidClient), Duration::from_millis(3));
        m.token_issued("docs");
        m.token_issued("docs");
        let text = m.render();
        assert!(text.ends_with('\n'));
        assert_eq!(
            line(&text, "agent_sts_token_requests_total{grant=\"client_credentials\",outcome=\"issued\""),
            "agent_sts_token_requests_total{grant=\"client_credentials\",outcome=\"issued\",error=\"none\"} 1"
        );
        assert!(text.contains("outcome=\"refused\",error=\"invalid_client\"} 1"));
        assert!(text.contains(
            "agent_sts_token_request_duration_seconds_bucket{grant=\"client_credentials\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains(
            "agent_sts_token_request_duration_seconds_bucket{grant=\"client_credentials\",le=\"0.004\"} 2"
        ));
        assert!(
            text.contains("agent_sts_token_request_duration_seconds_count{grant=\"client_credentials\"} 2")
        );
        assert!(text.contains("agent_sts_tokens_issued_total{server=\"docs\"} 2"));
    }

    #[test]
    fn disabled_counts_nothing() {
        let m = Metrics::new(false);
        m.token_request(0, None, Duration::from_micros(1));
        assert!(m.render().contains("error=\"none\"} 0"));
    }

    #[test]
    fn every_error_code_has_a_label() {
        use ErrorCode::*;
        for c in [
            InvalidRequest,
            InvalidClient,
            InvalidGrant,
            UnauthorizedClient,
            UnsupportedGrantType,
            InvalidScope,
            InvalidTarget,
            TemporarilyUnavailable,
            ServerError,
            RateLimited,
        ] {
            assert_ne!(error_index(Some(c)), 0, "{c:?}");
        }
    }
}
