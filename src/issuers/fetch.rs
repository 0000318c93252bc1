//! The only network code of the issuers: bounded GETs of discovery documents and JWK Sets.
//!
//! - https only, plain http only to a loopback host (checked on every URL, also on a
//!   `jwks_uri` that discovery returned);
//! - no redirects: a 3xx is a failed fetch (a redirect could lead anywhere, including to
//!   plain http; an issuer that moved its keys is re-configured, not followed);
//! - one bound on time (connect, TLS, headers and body) and one on size, enforced while the
//!   body streams in, so a huge or endless body costs at most the cap in memory;
//! - a JSON content type (or none);
//! - one `reqwest::Client`, built once and shared by every issuer. It honours the usual
//!   `HTTPS_PROXY`/`NO_PROXY` environment, like any egress from the broker.

use super::config::check_url;
use crate::config::IssuerFetchSettings;
use reqwest::header::{HeaderMap, ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The `[issuers]` settings as durations.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    pub timeout: Duration,
    pub max_bytes: usize,
    pub min_refresh: Duration,
    pub max_refresh: Duration,
    pub default_refresh: Duration,
    pub unknown_kid_refetch: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Extra root certificates (PEM bundle).
    pub ca_pem: Option<Vec<u8>>,
}

impl FetchSettings {
    /// From the checked `[issuers]` section; reads `ca_file`.
    pub fn from_config(s: &IssuerFetchSettings) -> Result<FetchSettings, String> {
        let ca_pem = match &s.ca_file {
            Some(path) => {
                Some(std::fs::read(path).map_err(|e| format!("issuers.ca_file {}: {e}", path.display()))?)
            }
            None => None,
        };
        Ok(FetchSettings {
            timeout: Duration::from_millis(s.fetch_timeout_ms),
            max_bytes: s.max_jwks_bytes,
            min_refresh: Duration::from_secs(s.min_refresh_secs),
            max_refresh: Duration::from_secs(s.max_refresh_secs),
            default_refresh: Duration::from_secs(s.default_refresh_secs),
            unknown_kid_refetch: Duration::from_secs(s.unknown_kid_refetch_secs),
            retry_initial: Duration::from_millis(s.retry_initial_ms),
            retry_max: Duration::from_secs(s.retry_max_secs),
            ca_pem,
        })
    }

    /// How long to keep a fetched set: its `max-age` within the bounds, else the default.
    pub fn refresh_after(&self, max_age: Option<Duration>) -> Duration {
        max_age.map_or(self.default_refresh, |a| a.clamp(self.min_refresh, self.max_refresh))
    }

    /// Back-off after the `failures`-th failure in a row: `retry_initial` doubling up to
    /// `retry_max`, with "equal jitter" (half fixed, half random) so that brokers that
    /// failed together don't retry together.
    pub fn backoff(&self, failures: u32) -> Duration {
        let exp = self.retry_initial.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        let full = exp.min(self.retry_max);
        let half = full / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

impl Default for FetchSettings {
    fn default() -> Self {
        // The defaults of the `[issuers]` section, which always convert.
        let d = IssuerFetchSettings::default();
        FetchSettings {
            timeout: Duration::from_millis(d.fetch_timeout_ms),
            max_bytes: d.max_jwks_bytes,
            min_refresh: Duration::from_secs(d.min_refresh_secs),
            max_refresh: Duration::from_secs(d.max_refresh_secs),
            default_refresh: Duration::from_secs(d.default_refresh_secs),
            unknown_kid_refetch: Duration::from_secs(d.unknown_kid_refetch_secs),
            retry_initial: Duration::from_millis(d.retry_initial_ms),
            retry_max: Duration::from_secs(d.retry_max_secs),
            ca_pem: None,
        }
    }
}

/// A fetched JSON document and how long the server said to cache it.
#[derive(Debug)]
pub struct Document {
    pub body: Vec<u8>,
    /// `Cache-Control: max-age` (zero for `no-cache`/`no-store`), unclamped.
    pub max_age: Option<Duration>,
}

/// Shared HTTP client with the fetch bounds.
///
/// The `reqwest::Client` is built on first use, on a blocking thread: with native-tls it
/// loads the system's CA bundle, which takes tens of milliseconds, so neither start-up nor
/// a broker with no fetched issuer pays for it. The CA file is checked at once.
#[derive(Debug)]
pub struct Fetcher {
    client: Arc<OnceLock<Result<reqwest::Client, String>>>,
    timeout: Duration,
    extra_roots: Vec<reqwest::Certificate>,
    max_bytes: usize,
    /// Told the result of every key refresh (metrics: `agent_sts_issuer_key_fetches_total`).
    observer: std::sync::OnceLock<Observer>,
}

/// A callback with a `Debug` that says what it is.
pub struct Observer(Box<dyn Fn(bool) + Send + Sync>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

impl Fetcher {
    pub fn new(settings: &FetchSettings) -> Result<Fetcher, String> {
        let extra_roots = match &settings.ca_pem {
            Some(pem) => {
                let certs = reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| format!("issuers.ca_file: not a PEM certificate bundle: {e}"))?;
                if certs.is_empty() {
                    return Err("issuers.ca_file: no certificate in the file".into());
                }
                certs
            }
            None => Vec::new(),
        };
        Ok(Fetcher {
            client: Arc::new(OnceLock::new()),
            timeout: settings.timeout,
            extra_roots,
            max_bytes: settings.max_bytes,
            observer: std::sync::OnceLock::new(),
        })
    }

    /// Set the observer of refresh results (once; later calls are ignored).
    pub fn observe(&self, f: Box<dyn Fn(bool) + Send + Sync>) {
        let _ = self.observer.set(Observer(f));
    }

    /// Report one refresh's result to the observer.
    pub fn report(&self, ok: bool) {
        if let Some(f) = self.observer.get() {
            (f.0)(ok);
        }
    }

    async fn client(&self) -> Result<reqwest::Client, String> {
        if let Some(built) = self.client.get() {
            return built.clone();
        }
        let (cell, timeout, roots) = (self.client.clone(), self.timeout, self.extra_roots.clone());
        let build = move || {
            cell.get_or_init(|| {
                let mut builder = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .connect_timeout(timeout)
                    .timeout(timeout)
                    .user_agent(concat!("agent-sts/", env!("CARGO_PKG_VERSION")));
                for c in roots {
                    builder = builder.add_root_certificate(c);
                }
                builder.build().map_err(|e| format!("cannot build the HTTP client: {}", chain(&e)))
            })
            .clone()
        };
        tokio::task::spawn_blocking(build).await.map_err(|e| format!("cannot build the HTTP client: {e}"))?
    }

    /// GET a JSON document within the bounds. The error says why, for logs and status (it
    /// names the URL, never a body).
    pub async fn get_json(&self, url: &str) -> Result<Document, String> {
        check_url(url, false).map_err(|e| format!("{url} {e}"))?;
        let mut resp = self
            .client()
            .await?
            .get(url)
            .header(ACCEPT, "application/jwk-set+json, application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", chain(&e)))?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(format!("GET {url}: HTTP {status}: redirects are not followed"));
        }
        if status != reqwest::StatusCode::OK {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        check_content_type(resp.headers()).map_err(|e| format!("GET {url}: {e}"))?;
        if resp.content_length().is_some_and(|n| n > self.max_bytes as u64) {
            return Err(format!("GET {url}: body larger than {} bytes (Content-Length)", self.max_bytes));
        }
        let max_age = max_age(resp.headers());
        let mut body = Vec::with_capacity(resp.content_length().map_or(8192, |n| n as usize));
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: {}", chain(&e)))? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(format!("GET {url}: body larger than {} bytes", self.max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Document { body, max_age })
    }
}

/// Not an HTML or XML page (a login page, a proxy's error page, a captive portal): those are
/// refused by name. Anything else is judged by parsing the body as a JWK Set: JWKS files are
/// commonly served as `application/json`, `application/jwk-set+json`, but also as
/// `text/plain` or `application/octet-stream` from static hosting (object stores), and the
/// parse, not the label, decides whether the document is one.
fn check_content_type(headers: &HeaderMap) -> Result<(), String> {
    let Some(value) = headers.get(CONTENT_TYPE) else { return Ok(()) };
    let text = value.to_str().map_err(|_| "Content-Type is not ASCII".to_string())?;
    let essence = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let page = essence == "text/html" || essence.ends_with("/xml") || essence.ends_with("+xml");
    if page {
        Err(format!(
            "Content-Type {} is not JSON (a web page, not a key set)",
            super::jwks::sanitize(&essence)
        ))
    } else {
        Ok(())
    }
}

/// `max-age` from `Cache-Control` (RFC 9111 section 5.2.2.1); `no-cache`/`no-store` count
/// as zero (the lower bound then applies).
fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut found = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(text) = value.to_str() else { continue };
        for directive in text.split(',') {
            let directive = directive.trim();
            if directive.eq_ignore_ascii_case("no-cache") || directive.eq_ignore_ascii_case("no-store") {
                return Some(Duration::ZERO);
            }
            if let Some((name, v)) = directive.split_once('=') {
                if name.trim().eq_ignore_ascii_case("max-age") {
                    if let Ok(secs) = v.trim().trim_matches('"').parse::<u64>() {
                        found = Some(Duration::from_secs(secs));
                    }
                }
            }
        }
    }
    found
}

/// An error and its sources on one line (reqwest's own text is only "error sending request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(reqwest::header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn cache_control_max_age() {
        assert_eq!(
            max_age(&headers(&[(CACHE_CONTROL, "public, max-age=600")])),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            max_age(&headers(&[(CACHE_CONTROL, "Max-Age=\"30\", must-revalidate")])),
            Some(Duration::from_secs(30))
        );
        assert_eq!(max_age(&headers(&[(CACHE_CONTROL, "no-store")])), Some(Duration::ZERO));
        assert_eq!(max_age(&headers(&[(CACHE_CONTROL, "max-age=abc")])), None);
        assert_eq!(max_age(&headers(&[])), None);
    }

    #[test]
    fn refresh_interval_is_clamped() {
        let s = FetchSettings::default();
        assert_eq!(s.refresh_after(None), Duration::from_secs(300));
        assert_eq!(s.refresh_after(Some(Duration::ZERO)), Duration::from_secs(60));
        assert_eq!(s.refresh_after(Some(Duration::from_secs(3600))), Duration::from_secs(3600));
        assert_eq!(s.refresh_after(Some(Duration::from_secs(10_000_000))), Duration::from_secs(86_400));
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let s = FetchSettings::default();
        for (failures, full) in [(1, 1u64), (2, 2), (3, 4), (9, 256), (10, 300), (40, 300)] {
            for _ in 0..20 {
                let d = s.backoff(failures);
                let full = Duration::from_secs(full);
                assert!(
                    d >= full / 2 && d <= full,
                    "failure {failures}: {d:?} not in [{:?}, {full:?}]",
                    full / 2
                );
            }
        }
    }

    #[test]
    fn web_pages_are_not_key_sets_other_labels_are_parsed() {
        assert!(check_content_type(&headers(&[])).is_ok());
        assert!(check_content_type(&headers(&[(CONTENT_TYPE, "application/json; charset=utf-8")])).is_ok());
        assert!(check_content_type(&headers(&[(CONTENT_TYPE, "application/jwk-set+json")])).is_ok());
        assert!(check_content_type(&headers(&[(CONTENT_TYPE, "text/html")])).is_err());
        assert!(check_content_type(&headers(&[(CONTENT_TYPE, "application/xhtml+xml")])).is_err());
        // Static hosting labels JSON files loosely; the parse decides.
        assert!(check_content_type(&headers(&[(CONTENT_TYPE, "application/octet-stream")])).is_ok());
        assert!(check_content_type(&headers(&[(CONTENT_TYPE, "text/plain; charset=utf-8")])).is_ok());
    }
}
