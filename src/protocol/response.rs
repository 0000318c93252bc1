//! The successful token response (RFC 6749 §5.1, RFC 8693 §2.2.1).

use serde::Serialize;

#[derive(Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer` (the MCP Python SDK requires exactly this).
    pub token_type: &'static str,
    pub expires_in: i64,
    pub scope: String,
    /// Only for token exchange (RFC 8693 §2.2.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}
