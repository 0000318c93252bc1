//! The agent's key and the client assertions it signs (RFC 7523 section 3).

use crate::crypto::{self, Alg, KeyError, SigningKey};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum AgentKeyError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0}: not a PEM private key of a supported type")]
    UnknownType(String),
    #[error("{path}: {source}")]
    Key { path: String, source: KeyError },
}

/// An agent id and its private key. `Debug` never shows the key.
#[derive(Debug)]
pub struct AgentKey {
    agent: String,
    key: SigningKey,
    send_kid: bool,
}

impl AgentKey {
    /// Read a PKCS#8 PEM private key. The algorithm is inferred from the key unless given
    /// (RSA keys: RS256). `kid` goes into every assertion header when given; without it the
    /// broker uses the agent's only registered key for the algorithm.
    pub fn load(
        agent: &str,
        path: &Path,
        kid: Option<&str>,
        alg: Option<Alg>,
    ) -> Result<Self, AgentKeyError> {
        let shown = path.display().to_string();
        let pem =
            std::fs::read(path).map_err(|source| AgentKeyError::Read { path: shown.clone(), source })?;
        let alg = match alg {
            Some(a) => a,
            None => crypto::detect_alg(&pem).ok_or_else(|| AgentKeyError::UnknownType(shown.clone()))?,
        };
        let key = SigningKey::from_pem(alg, &pem, kid)
            .map_err(|source| AgentKeyError::Key { path: shown, source })?;
        Ok(AgentKey { agent: agent.to_string(), key, send_kid: kid.is_some() })
    }

    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// A client assertion: `iss` = `sub` = the agent, `aud` = `audience` (the broker's
    /// issuer, exactly as its metadata says it), `iat` = now, `exp` = now + lifetime, a
    /// random `jti`; header `{alg, typ: "JWT"}` plus `kid` when one was given.
    pub fn assertion(&self, audience: &str, now_secs: i64, lifetime_secs: i64) -> Result<String, KeyError> {
        let claims = serde_json::json!({
            "iss": self.agent,
            "sub": self.agent,
            "aud": audience,
            "iat": now_secs,
            "exp": now_secs + lifetime_secs,
            "jti": crypto::random_id(),
        });
        let header = self.key.encoded_header("JWT", self.send_kid);
        self.key.sign_compact(&header, claims.to_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assertion_has_the_rfc_7523_claims_and_kid_only_when_asked() {
        let dir = tempfile::tempdir().expect("tmp");
        let pair = crypto::generate_key_pair(Alg::ES256, Some("k1")).expect("keygen");
        let path = dir.path().join("a.pem");
        std::fs::write(&path, pair.private_pem.0.as_bytes()).expect("write");
        let decode = |jwt: &str, i: usize| -> serde_json::Value {
            let part = jwt.split('.').nth(i).expect("part");
            serde_json::from_slice(&crypto::b64url_decode(part).expect("b64")).expect("json")
        };
        let key = AgentKey::load("bot", &path, None, None).expect("load");
        let jwt = key.assertion("https://sts.example", 1000, 60).expect("sign");
        let (header, claims) = (decode(&jwt, 0), decode(&jwt, 1));
        assert_eq!(header, serde_json::json!({"alg": "ES256", "typ": "JWT"}));
        assert_eq!(
            (&claims["iss"], &claims["sub"], &claims["aud"], &claims["iat"], &claims["exp"]),
            (&"bot".into(), &"bot".into(), &"https://sts.example".into(), &1000.into(), &1060.into())
        );
        assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
        let with_kid = AgentKey::load("bot", &path, Some("k1"), None).expect("load");
        assert_eq!(decode(&with_kid.assertion("x", 0, 1).expect("sign"), 0)["kid"], "k1");
        assert!(!format!("{key:?}").contains("PRIVATE"), "Debug redacts the key");
    }

    #[test]
    fn unreadable_or_foreign_key_files_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let missing = dir.path().join("none.pem");
        let e = AgentKey::load("bot", &missing, None, None).expect_err("missing");
        assert!(e.to_string().contains("none.pem"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a key").expect("write");
        let e = AgentKey::load("bot", &junk, None, None).expect_err("junk");
        assert!(e.to_string().contains("junk.pem") && e.to_string().contains("not a PEM"), "{e}");
    }
}
