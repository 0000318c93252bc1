//! RFC 6749 §5.2 error responses (with RFC 8693 §2.2.2 and RFC 8707 §2 codes).

use std::fmt;

/// An OAuth error code (RFC 6749 §5.2, RFC 8707 §2 `invalid_target`, RFC 6749 §4.1.2.1
/// `temporarily_unavailable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    InvalidTarget,
    TemporarilyUnavailable,
    ServerError,
    /// An agent's rate limit (policy `rate_limit`): 429 with `Retry-After`. On the wire it is
    /// `temporarily_unavailable` (RFC 6749 defines no code of its own for it); metrics and
    /// the audit log call it `rate_limited`.
    RateLimited,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::ServerError => "server_error",
            ErrorCode::RateLimited => "temporarily_unavailable",
        }
    }

    /// The name metrics and the audit log use: the wire code, except `rate_limited`.
    pub fn label(self) -> &'static str {
        match self {
            ErrorCode::RateLimited => "rate_limited",
            other => other.as_str(),
        }
    }

    /// RFC 6749 §5.2: 400 for all, except `invalid_client` (401); plus 503 for an
    /// unavailable dependency and 500 for our own faults.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidClient => 401,
            ErrorCode::TemporarilyUnavailable => 503,
            ErrorCode::ServerError => 500,
            ErrorCode::RateLimited => 429,
            _ => 400,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The only error type that reaches a client. `description` is written for the caller and
/// must never carry key material, token text or internal detail; causes go to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: String,
    /// Seconds for `Retry-After` on 429 and 503 (default 1).
    pub retry_after_secs: Option<u64>,
}

/// RFC 6749 section 5.2: `error_description` characters are `%x20-21 / %x23-5B / %x5D-7E`,
/// printable ASCII without `"` and `\`.
pub fn is_description_char(c: char) -> bool {
    matches!(c, '\x20'..='\x21' | '\x23'..='\x5B' | '\x5D'..='\x7E')
}

/// Bring a description inside the RFC 6749 section 5.2 character set. Our own texts are
/// written inside it; this is for the values they quote (a `resource`, a `typ`, a claim name),
/// which come from the request: `"` becomes `'`, `\` becomes `/`, anything else outside the
/// set becomes `?`.
pub fn description_text(d: String) -> String {
    if d.chars().all(is_description_char) {
        return d;
    }
    d.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if is_description_char(c) => c,
            _ => '?',
        })
        .collect()
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        OAuthError { code, description: description_text(description.into()), retry_after_secs: None }
    }

    /// Say when to retry (`Retry-After`, for `temporarily_unavailable`).
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, d)
    }
    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidClient, d)
    }
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidGrant, d)
    }
    pub fn invalid_scope(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidScope, d)
    }
    pub fn invalid_target(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidTarget, d)
    }
    pub fn unavailable(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::TemporarilyUnavailable, d)
    }
    /// 429: the agent's rate limit; retry after `secs`.
    pub fn rate_limited(secs: u64) -> Self {
        OAuthError {
            retry_after_secs: Some(secs.max(1)),
            ..Self::new(ErrorCode::RateLimited, "rate limit exceeded for this agent; retry later")
        }
    }
    pub fn server_error() -> Self {
        Self::new(ErrorCode::ServerError, "the server could not complete the request")
    }

    /// The JSON body: `{"error": ..., "error_description": ...}`.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            error: &'a str,
            error_description: &'a str,
        }
        serde_json::to_vec(&Body { error: self.code.as_str(), error_description: &self.description })
            .unwrap_or_default()
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.description)
    }
}

impl std::error::Error for OAuthError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_kept_inside_the_rfc6749_5_2_charset() {
        assert_eq!(description_text("plain text, with 'quotes' ok".into()), "plain text, with 'quotes' ok");
        assert_eq!(description_text("typ \"a\\b\" \u{a7}3 \u{e9}\n".into()), "typ 'a/b' ?3 ??");
        let e = OAuthError::invalid_request("x\"y");
        assert_eq!(e.description, "x'y");
        assert!(description_text((0u8..=255).map(char::from).collect()).chars().all(is_description_char));
    }
}
