//! Finding the broker: RFC 8414 authorization server metadata, then OpenID Connect
//! discovery, in the order MCP clients try them.

use super::token::{read_limited, TokenError};
use url::Url;

/// What the agent needs from the broker's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMetadata {
    /// Byte-identical to the issuer the agent was given; the assertion's `aud`.
    pub issuer: String,
    pub token_endpoint: String,
}

/// An http(s) URL the agent may send credentials to: https, or http only on a loopback
/// host; no user info, no fragment.
pub fn check_http_url(what: &str, text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{what} {text:?} is not a URL: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err(format!("{what} {text:?} must be https (http only on a loopback host)"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(format!("{what} {text:?} must have no user info and no fragment"));
    }
    Ok(url)
}

/// The metadata locations for an issuer, most preferred first: RFC 8414 section 3.1
/// inserts the well-known segment before the issuer's path; OpenID Connect Discovery
/// appends it (tried last, for issuers with a path).
fn well_known_urls(issuer: &Url) -> Vec<String> {
    let origin = issuer.origin().ascii_serialization();
    let path = issuer.path().trim_end_matches('/');
    let mut urls = vec![
        format!("{origin}/.well-known/oauth-authorization-server{path}"),
        format!("{origin}/.well-known/openid-configuration{path}"),
    ];
    if !path.is_empty() {
        urls.push(format!("{origin}{path}/.well-known/openid-configuration"));
    }
    urls
}

/// Fetch the broker's metadata. A 4xx moves on to the next location; a transport error
/// or a 5xx stops (the broker is down, not elsewhere). The document's `issuer` must equal
/// `issuer` byte for byte (RFC 8414 section 3.3) and its `token_endpoint` must be an
/// acceptable URL.
pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<BrokerMetadata, TokenError> {
    let parsed = check_http_url("issuer", issuer).map_err(TokenError::Config)?;
    let mut last = String::new();
    for url in well_known_urls(&parsed) {
        let resp = http
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| TokenError::unreachable(&url, &e))?;
        let status = resp.status();
        if status.is_client_error() {
            last = format!("{url} answered {status}");
            continue;
        }
        if !status.is_success() {
            return Err(TokenError::Metadata { url, reason: format!("answered {status}") });
        }
        let body = read_limited(resp, 64 * 1024).await.map_err(|e| TokenError::unreachable(&url, &e))?;
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| TokenError::Metadata { url: url.clone(), reason: format!("not JSON: {e}") })?;
        return metadata_from(issuer, &url, &doc);
    }
    Err(TokenError::Metadata { url: issuer.to_string(), reason: format!("no metadata found ({last})") })
}

fn metadata_from(issuer: &str, url: &str, doc: &serde_json::Value) -> Result<BrokerMetadata, TokenError> {
    let field = |name: &str| doc.get(name).and_then(|v| v.as_str());
    let found = field("issuer")
        .ok_or_else(|| TokenError::Metadata { url: url.to_string(), reason: "no issuer".into() })?;
    if found != issuer {
        return Err(TokenError::IssuerMismatch { expected: issuer.to_string(), found: found.to_string() });
    }
    let token_endpoint = field("token_endpoint")
        .ok_or_else(|| TokenError::Metadata { url: url.to_string(), reason: "no token_endpoint".into() })?;
    check_http_url("token_endpoint", token_endpoint)
        .map_err(|reason| TokenError::Metadata { url: url.to_string(), reason })?;
    Ok(BrokerMetadata { issuer: issuer.to_string(), token_endpoint: token_endpoint.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_locations_follow_rfc_8414_section_3_1() {
        let u = |s: &str| well_known_urls(&Url::parse(s).expect("url"));
        assert_eq!(
            u("https://sts.example"),
            [
                "https://sts.example/.well-known/oauth-authorization-server",
                "https://sts.example/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            u("http://127.0.0.1:8080/tenant/a"),
            [
                "http://127.0.0.1:8080/.well-known/oauth-authorization-server/tenant/a",
                "http://127.0.0.1:8080/.well-known/openid-configuration/tenant/a",
                "http://127.0.0.1:8080/tenant/a/.well-known/openid-configuration",
            ]
        );
    }

    #[test]
    fn only_https_or_loopback_http_urls_get_credentials() {
        for ok in ["https://sts.example", "http://127.0.0.1:1/x", "http://localhost:8080", "http://[::1]:9/"]
        {
            assert!(check_http_url("issuer", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://sts.example",
            "ftp://127.0.0.1/",
            "https://u:p@sts.example",
            "https://sts.example/#f",
            "sts",
        ] {
            assert!(check_http_url("issuer", bad).is_err(), "{bad}");
        }
    }

    /// RFC 8414 section 3.3: the issuer in the document must be the one asked for, exactly.
    #[test]
    fn metadata_issuer_must_match_byte_for_byte() {
        let doc = serde_json::json!({"issuer": "https://sts.example/", "token_endpoint": "https://sts.example/token"});
        let e = metadata_from("https://sts.example", "u", &doc).expect_err("trailing slash differs");
        assert!(matches!(e, TokenError::IssuerMismatch { .. }), "{e}");
        let doc = serde_json::json!({"issuer": "https://sts.example", "token_endpoint": "http://evil.example/token"});
        assert!(
            metadata_from("https://sts.example", "u", &doc).is_err(),
            "plain http token endpoint refused"
        );
        let doc = serde_json::json!({"issuer": "https://sts.example", "token_endpoint": "https://sts.example/token"});
        assert_eq!(
            metadata_from("https://sts.example", "u", &doc).expect("ok").token_endpoint,
            "https://sts.example/token"
        );
    }
}
