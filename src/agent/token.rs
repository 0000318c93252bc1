//! The token request an MCP SDK sends for client credentials with `private_key_jwt`
//! (SEP-1046, RFC 7523 section 2.2), and its answer (RFC 6749 sections 5.1 and 5.2).

use super::{error_chain, AgentKey, BrokerMetadata};
use crate::crypto::KeyError;
use std::fmt;

/// How long the assertions sent to the broker live: long enough for a slow network, short
/// enough that the replay store forgets them soon.
pub const ASSERTION_LIFETIME_SECS: i64 = 60;

const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    Config(String),
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("broker metadata at {url}: {reason}")]
    Metadata { url: String, reason: String },
    #[error("the broker's metadata names the issuer {found:?}, not {expected:?}; RFC 8414 section 3.3 requires them to be identical (check --issuer)")]
    IssuerMismatch { expected: String, found: String },
    #[error("the broker refused the token request (HTTP {status}): {error}: {description}")]
    Refused { status: u16, error: String, description: String },
    #[error("unexpected answer from the token endpoint {url}: {reason}")]
    BadResponse { url: String, reason: String },
    #[error("signing the assertion: {0}")]
    Sign(#[from] KeyError),
}

impl TokenError {
    pub(crate) fn unreachable(url: &str, e: &dyn std::error::Error) -> TokenError {
        TokenError::Unreachable { url: url.to_string(), reason: error_chain(e) }
    }
}

/// An access token. `Debug` never shows it; [`AccessToken::secret`] is for the one place
/// that needs the text (an `Authorization` header, or stdout when asked).
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}

/// What to ask for: one server (RFC 8707 `resource`) and optionally scopes.
#[derive(Debug, Clone, Copy)]
pub struct TokenRequest<'a> {
    pub resource: &'a str,
    pub scope: Option<&'a str>,
}

/// A successful token response.
pub struct IssuedToken {
    pub access_token: AccessToken,
    /// `expires_in` when the broker sent it (this broker always does).
    pub expires_in: Option<u64>,
    pub scope: Option<String>,
    /// The whole JSON response, as received (`agent-sts token --json`).
    pub response: serde_json::Value,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("access_token", &self.access_token)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Read a response body, refusing more than `limit` bytes.
pub(crate) async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, std::io::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| std::io::Error::other(error_chain(&e)))? {
        if out.len() + chunk.len() > limit {
            return Err(std::io::Error::other(format!("response larger than {limit} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Sign a fresh assertion (`aud` = the metadata's issuer) and trade it for an access token:
/// `grant_type=client_credentials`, `client_assertion_type`, `client_assertion`,
/// `resource`, and `scope` when given.
pub async fn request_token(
    http: &reqwest::Client,
    meta: &BrokerMetadata,
    key: &AgentKey,
    now_secs: i64,
    req: TokenRequest<'_>,
) -> Result<IssuedToken, TokenError> {
    let assertion = key.assertion(&meta.issuer, now_secs, ASSERTION_LIFETIME_SECS)?;
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials")
        .append_pair("client_assertion_type", CLIENT_ASSERTION_TYPE)
        .append_pair("client_assertion", &assertion)
        .append_pair("resource", req.resource);
    if let Some(scope) = req.scope {
        form.append_pair("scope", scope);
    }
    let url = &meta.token_endpoint;
    let resp = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(reqwest::header::ACCEPT, "application/json")
        .body(form.finish())
        .send()
        .await
        .map_err(|e| TokenError::unreachable(url, &e))?;
    let status = resp.status();
    let body = read_limited(resp, 64 * 1024).await.map_err(|e| TokenError::unreachable(url, &e))?;
    let bad = |reason: String| TokenError::BadResponse { url: url.clone(), reason };
    let json: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| bad(format!("HTTP {status}, and the body is not JSON ({} bytes)", body.len())))?;
    let text = |name: &str| json.get(name).and_then(|v| v.as_str());
    if !status.is_success() {
        let error = text("error").ok_or_else(|| bad(format!("HTTP {status} without an OAuth error code")))?;
        return Err(TokenError::Refused {
            status: status.as_u16(),
            error: error.to_string(),
            description: text("error_description").unwrap_or("(no description)").to_string(),
        });
    }
    let token =
        text("access_token").filter(|t| !t.is_empty()).ok_or_else(|| bad("no access_token".into()))?;
    // RFC 6749 section 7.1: the type is compared case-insensitively; only Bearer is usable.
    if !text("token_type").is_some_and(|t| t.eq_ignore_ascii_case("bearer")) {
        return Err(bad(format!("token_type is {:?}, not Bearer", json.get("token_type"))));
    }
    Ok(IssuedToken {
        access_token: AccessToken(token.to_string()),
        expires_in: json.get("expires_in").and_then(|v| v.as_u64()),
        scope: text("scope").map(String::from),
        response: json,
    })
}

/// The claims of a JWT, decoded without verification: for logging an issued token's `jti`
/// and `exp`, never for deciding anything.
pub fn token_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&crate::crypto::b64url_decode(payload).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let t = IssuedToken {
            access_token: AccessToken("eyJsecret.eyJsecret.sig".into()),
            expires_in: Some(300),
            scope: None,
            response: serde_json::json!({"access_token": "eyJsecret.eyJsecret.sig"}),
        };
        let shown = format!("{t:?}");
        assert!(!shown.contains("eyJsecret") && shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn claims_of_a_jwt_decode_and_junk_gives_none() {
        let payload = crate::crypto::b64url_encode(br#"{"jti":"abc","exp":5}"#);
        assert_eq!(token_claims(&format!("h.{payload}.s")).expect("claims")["jti"], "abc");
        assert!(token_claims("nodots").is_none() && token_claims("a.!!.c").is_none());
    }
}
