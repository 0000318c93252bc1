//! The OTLP exporter's HTTP client: the broker's own reqwest (blocking, native TLS), so the
//! exporter needs neither a second reqwest nor gRPC. The batch span processor calls it from
//! its own thread, never from a request worker.

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use std::io::Read;

/// Largest collector answer read (it is normally empty).
const MAX_RESPONSE_BYTES: u64 = 1024 * 1024;

#[derive(Debug)]
pub struct OtlpHttpClient(reqwest::blocking::Client);

impl OtlpHttpClient {
    /// Build outside any tokio runtime (the blocking client runs one of its own).
    pub fn new(timeout: std::time::Duration) -> Result<OtlpHttpClient, String> {
        reqwest::blocking::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("agent-sts/", env!("CARGO_PKG_VERSION")))
            .build()
            .map(OtlpHttpClient)
            .map_err(|e| format!("otel: cannot build the HTTP client: {e}"))
    }
}

#[async_trait::async_trait]
impl HttpClient for OtlpHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request: reqwest::blocking::Request = request.try_into()?;
        let response = self.0.execute(request)?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        response.take(MAX_RESPONSE_BYTES).read_to_end(&mut body)?;
        let mut out = Response::builder().status(status).body(Bytes::from(body))?;
        *out.headers_mut() = headers;
        Ok(out)
    }
}
