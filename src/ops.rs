//! Operator commands that talk to a running broker or its stores: `healthcheck` (the
//! container image has no curl) and, with revocation, `revoke`.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// `GET` an `http://host:port/path` URL and succeed on a 200 answer within `timeout`.
/// Plain HTTP only: the probe runs inside the container, against the local listener.
pub fn healthcheck(url: &str, timeout: Duration) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    if parsed.scheme() != "http" {
        return Err(format!("{url}: only http:// URLs (the probe talks to the local listener)"));
    }
    let host = parsed.host_str().ok_or_else(|| format!("{url}: no host"))?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}:{port}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\nUser-Agent: agent-sts-healthcheck\r\n\r\n",
        parsed.path()
    );
    stream.write_all(request.as_bytes()).map_err(|e| format!("{addr}: {e}"))?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(|e| format!("{addr}: {e}"))?;
    match &head {
        b"HTTP/1.1 200" | b"HTTP/1.0 200" => Ok(()),
        other => Err(format!("{url}: answered {:?}", String::from_utf8_lossy(other))),
    }
}

/// `agent-sts revoke`: mark a token revoked in the shared store (Redis), as `POST /revoke`
/// would, for an operator who holds the token or knows its `jti` and `exp`. With `--token`
/// the token is verified against the configured signing keys first.
pub fn revoke(
    settings: &crate::config::Settings,
    token: Option<&str>,
    jti: Option<&str>,
    exp: Option<i64>,
) -> Result<String, String> {
    use crate::clock::{SharedClock, SystemClock};
    use crate::replay::{AnyReplayStore, RedisStore};
    use std::sync::Arc;
    if settings.replay.backend == Some(crate::config::ReplayBackend::Memory) {
        return Err(
            "replay.backend is memory: revoked tokens live in the broker process; use POST /revoke".into()
        );
    }
    let clock: SharedClock = Arc::new(SystemClock);
    let now = clock.now_secs();
    let (jti, exp) = match (token, jti, exp) {
        (Some(t), None, None) => {
            let issuer =
                settings.server.issuer.as_deref().ok_or("server.issuer is required to verify --token")?;
            let tokens = crate::startup::token_issuer(settings, issuer, &crate::startup::DevKey::none())
                .map_err(|e| e.to_string())?;
            let claims = tokens.verify_own(t, now).map_err(|e| format!("--token: {e}"))?;
            (claims.jti, claims.exp)
        }
        (None, Some(j), Some(e)) => (j.to_string(), e),
        _ => return Err("give --token, or --jti with --exp".into()),
    };
    if exp <= now {
        return Ok(format!("token {jti} has already expired; nothing to revoke"));
    }
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let config = crate::startup::redis_config(settings).map_err(|e| e.to_string())?;
        let store = RedisStore::new(&config, clock.clone()).map_err(|e| format!("replay: {e}"))?;
        let store = Arc::new(AnyReplayStore::Redis(Box::new(store)));
        crate::revocation::Revocations::new(store, clock).revoke(&jti, exp).await.map_err(|e| e.to_string())
    })?;
    Ok(format!("revoked token {jti} (until its exp {exp})"))
}
