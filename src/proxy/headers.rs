//! Which headers cross the proxy. End-to-end headers pass both ways (`Mcp-Session-Id`,
//! `MCP-Protocol-Version`, `Accept`, `Content-Type`, `Last-Event-ID`, cookies ...);
//! hop-by-hop headers (RFC 9110 section 7.6.1) and credentials do not.

use actix_web::http::header::HeaderMap as LocalHeaders;
use reqwest::header::{HeaderMap as UpstreamHeaders, HeaderName, HeaderValue};

/// Hop-by-hop headers: they describe one connection, not the message.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// Never forwarded upstream: the client's own credentials (the proxy sends its token
/// instead), `Host` (the upstream's own is set from its URL), and `Origin` (checked by
/// the proxy's guard; the upstream sees a request from the proxy, not from a page).
const REQUEST_DROP: [&str; 5] = ["authorization", "proxy-authorization", "host", "origin", "content-length"];

/// Never returned to the client: the upstream's challenges. The client is meant to see a
/// server that needs no authorization, so it must not start an OAuth flow of its own.
const RESPONSE_DROP: [&str; 3] = ["www-authenticate", "proxy-authenticate", "content-length"];

fn named_in_connection<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    values
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The client's headers as sent upstream. `Content-Length` is kept only for a body that is
/// streamed through as it arrives (a buffered body gets its own).
pub(crate) fn upstream_request(local: &LocalHeaders, keep_content_length: bool) -> UpstreamHeaders {
    let listed = named_in_connection(local.get_all("connection").map(|v| v.as_bytes()));
    let mut out = UpstreamHeaders::new();
    for (name, value) in local.iter() {
        let n = name.as_str();
        let keep = !HOP_BY_HOP.contains(&n)
            && !listed.iter().any(|l| l == n)
            && (!REQUEST_DROP.contains(&n) || (n == "content-length" && keep_content_length));
        if !keep {
            continue;
        }
        if let (Ok(k), Ok(v)) =
            (HeaderName::from_bytes(n.as_bytes()), HeaderValue::from_bytes(value.as_bytes()))
        {
            out.append(k, v);
        }
    }
    out
}

/// The upstream's response headers as returned to the client.
pub(crate) fn local_response(upstream: &UpstreamHeaders) -> Vec<(String, Vec<u8>)> {
    let listed = named_in_connection(upstream.get_all("connection").iter().map(|v| v.as_bytes()));
    upstream
        .iter()
        .filter(|(name, _)| {
            let n = name.as_str();
            !HOP_BY_HOP.contains(&n) && !RESPONSE_DROP.contains(&n) && !listed.iter().any(|l| l == n)
        })
        .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
        .collect()
}

/// RFC 6750 section 3.1: a 401 whose `Bearer` challenge says `error="invalid_token"` (the
/// token expired, was revoked, or is not for this server).
pub(crate) fn says_invalid_token(upstream: &UpstreamHeaders) -> bool {
    upstream.get_all("www-authenticate").iter().filter_map(|v| v.to_str().ok()).any(|v| {
        let v = v.to_ascii_lowercase();
        v.trim_start().starts_with("bearer")
            && (v.contains("error=\"invalid_token\"") || v.contains("error=invalid_token"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName as LName, HeaderValue as LValue};

    fn local(pairs: &[(&'static str, &'static str)]) -> LocalHeaders {
        let mut h = LocalHeaders::new();
        for (k, v) in pairs {
            h.append(LName::from_static(k), LValue::from_static(v));
        }
        h
    }

    #[test]
    fn credentials_and_hop_by_hop_headers_stay_behind() {
        let h = local(&[
            ("authorization", "Bearer client-secret"),
            ("proxy-authorization", "Basic x"),
            ("host", "127.0.0.1:9"),
            ("origin", "http://localhost:3000"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("content-length", "12"),
            ("mcp-session-id", "s-1"),
            ("mcp-protocol-version", "2025-06-18"),
            ("accept", "application/json, text/event-stream"),
            ("last-event-id", "7"),
        ]);
        let out = upstream_request(&h, false);
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "last-event-id", "mcp-protocol-version", "mcp-session-id"]);
        assert_eq!(upstream_request(&h, true).get("content-length").map(|v| v.as_bytes()), Some(&b"12"[..]));
    }

    #[test]
    fn upstream_challenges_do_not_reach_the_client() {
        let mut h = UpstreamHeaders::new();
        h.insert("www-authenticate", HeaderValue::from_static("Bearer error=\"invalid_token\""));
        h.insert("mcp-session-id", HeaderValue::from_static("s-1"));
        h.insert("content-type", HeaderValue::from_static("text/event-stream"));
        h.insert("connection", HeaderValue::from_static("close"));
        let mut names: Vec<String> = local_response(&h).into_iter().map(|(n, _)| n).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "mcp-session-id"]);
        assert!(says_invalid_token(&h));
        h.insert("www-authenticate", HeaderValue::from_static("Bearer error=\"insufficient_scope\""));
        assert!(!says_invalid_token(&h));
    }
}
