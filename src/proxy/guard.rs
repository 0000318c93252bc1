//! Only local programs may use the proxy's token. A web page in the user's browser can
//! reach a loopback port too: with a cross-site request (the browser adds `Origin`) or
//! through DNS rebinding (its own host name in `Host`). Both are refused, as the MCP
//! transport spec asks of local servers.

use actix_web::HttpRequest;

#[derive(Debug, Clone)]
pub(crate) struct LocalGuard {
    port: u16,
    /// Listening on loopback: `Host` must name loopback. Off when the user chose to listen
    /// elsewhere (`--allow-non-loopback`), where the host names are not known here.
    check_host: bool,
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl LocalGuard {
    pub fn new(port: u16, check_host: bool) -> Self {
        LocalGuard { port, check_host }
    }

    pub fn check(&self, req: &HttpRequest) -> Result<(), String> {
        if self.check_host {
            let host = req.headers().get("host").and_then(|v| v.to_str().ok()).unwrap_or("");
            if !self.host_ok(host) {
                return Err(format!(
                    "agent-sts proxy: Host {host:?} is not this proxy's loopback address (port {}); refused (DNS rebinding protection)",
                    self.port
                ));
            }
        }
        if let Some(origin) = req.headers().get("origin") {
            let text = origin.to_str().unwrap_or("");
            if !origin_ok(text) {
                return Err(format!(
                    "agent-sts proxy: requests from the web origin {text:?} are refused; only local programs may use this proxy"
                ));
            }
        }
        Ok(())
    }

    fn host_ok(&self, host: &str) -> bool {
        // Host = host [ ":" port ]; an IPv6 literal is bracketed.
        let (name, port) = match host.rsplit_once(':') {
            Some((n, p)) if !p.contains(']') => (n, p.parse::<u16>().ok()),
            _ => (host, Some(80)),
        };
        port == Some(self.port) && is_loopback_host(name)
    }
}

/// No `Origin` (a program, not a browser) passes; a browser page passes only when it is
/// itself served from loopback.
fn origin_ok(origin: &str) -> bool {
    url::Url::parse(origin)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(is_loopback_host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn loopback_host_and_origin_pass_others_are_refused() {
        let g = LocalGuard::new(8090, true);
        let ok = |host: &str, origin: Option<&str>| {
            let mut r = TestRequest::default().insert_header(("host", host));
            if let Some(o) = origin {
                r = r.insert_header(("origin", o));
            }
            g.check(&r.to_http_request()).is_ok()
        };
        assert!(ok("127.0.0.1:8090", None) && ok("localhost:8090", None) && ok("[::1]:8090", None));
        assert!(ok("LOCALHOST:8090", Some("http://localhost:5173")));
        assert!(!ok("evil.example:8090", None), "DNS rebinding: a foreign name for our address");
        assert!(!ok("127.0.0.1:8091", None) && !ok("127.0.0.1", None) && !ok("", None));
        assert!(!ok("127.0.0.1:8090", Some("https://evil.example")), "cross-site request");
        assert!(!ok("127.0.0.1:8090", Some("null")));
        let open = LocalGuard::new(8090, false);
        let r = TestRequest::default().insert_header(("host", "proxy.internal:8090")).to_http_request();
        assert!(open.check(&r).is_ok(), "host names are not checked off loopback");
    }
}
