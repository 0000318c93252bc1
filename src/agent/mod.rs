//! The agent's side of the protocol, for clients that use this crate rather than an MCP SDK:
//! sign an RFC 7523 client assertion with the agent's key, find the broker through its
//! RFC 8414 metadata, and trade the assertion for an access token (client credentials,
//! SEP-1046). `agent-sts assert`, `agent-sts token` and `agent-sts proxy` are built on it.

mod assertion;
mod discovery;
mod token;

pub use assertion::{AgentKey, AgentKeyError};
pub use discovery::{check_http_url, discover, BrokerMetadata};
pub use token::{request_token, token_claims, AccessToken, IssuedToken, TokenError, TokenRequest};

use std::time::Duration;

/// The HTTP client for talking to the broker: bounded waits, no redirects (the token
/// endpoint is taken from metadata; a redirect would carry the assertion elsewhere).
pub fn broker_http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .no_gzip()
        .user_agent(concat!("agent-sts/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// An error and its causes on one line (`reqwest` keeps "connection refused" in the source).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
