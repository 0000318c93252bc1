//! Access tokens: RFC 9068 JWTs (`typ: at+jwt`) signed by the broker's key, and the
//! verification of our own tokens when they come back as an RFC 8693 `subject_token`.

use crate::crypto::{Alg, CompactJws, KeyError, SigningKey, VerifyingKey};
use crate::protocol::ScopeSet;
use serde::{Deserialize, Serialize};

/// RFC 8693 §4.1 actor claim: the current actor, with prior actors nested inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Act {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Act>>,
}

impl Act {
    pub fn depth(&self) -> usize {
        1 + self.act.as_ref().map_or(0, |a| a.depth())
    }
}

/// The deepest `act` chain accepted in a token we verify.
pub const MAX_ACT_DEPTH: usize = 16;

#[derive(Serialize)]
struct AccessTokenClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    client_id: &'a str,
    scope: String,
    iat: i64,
    exp: i64,
    jti: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    act: Option<&'a Act>,
}

/// What to put in a token.
#[derive(Debug)]
pub struct MintSpec<'a> {
    pub sub: &'a str,
    pub aud: &'a str,
    pub client_id: &'a str,
    pub scopes: &'a ScopeSet,
    pub iat: i64,
    pub exp: i64,
    pub act: Option<&'a Act>,
}

pub struct Minted {
    pub token: String,
    pub jti: String,
}

/// The claims of a token this broker issued.
#[derive(Debug, Deserialize)]
pub struct IssuedClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    #[serde(default)]
    pub act: Option<Act>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnTokenError {
    #[error("{0}")]
    Compact(#[from] crate::crypto::CompactError),
    #[error("subject_token is not an access token of this broker (typ must be at+jwt)")]
    Typ,
    #[error("subject_token is not signed by a key of this broker")]
    Key,
    #[error("subject_token signature does not verify")]
    Signature,
    #[error("subject_token claims are malformed")]
    Claims,
    #[error("subject_token was not issued by this broker")]
    Issuer,
    #[error("subject_token has expired")]
    Expired,
    #[error("subject_token act chain is deeper than {MAX_ACT_DEPTH}")]
    ActTooDeep,
}

/// Signs tokens with the active key; verifies with the active key and any published
/// verify-only keys (rotation).
pub struct TokenIssuer {
    issuer: String,
    key: SigningKey,
    encoded_header: String,
    verifying: Vec<VerifyingKey>,
    jwks: serde_json::Value,
}

impl TokenIssuer {
    pub fn new(
        issuer: String,
        key: SigningKey,
        extra_public: Vec<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Self, KeyError> {
        let encoded_header = key.encoded_header("at+jwt", true);
        let mut verifying = vec![key.verifying_key()?];
        let mut published = vec![serde_json::Value::Object(key.public_jwk().clone())];
        for jwk in extra_public {
            verifying.push(VerifyingKey::from_jwk(&jwk)?);
            published.push(serde_json::Value::Object(jwk));
        }
        let jwks = serde_json::json!({ "keys": published });
        Ok(TokenIssuer { issuer, key, encoded_header, verifying, jwks })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn alg(&self) -> Alg {
        self.key.alg()
    }

    /// The JWK Set (RFC 7517 §5) of every key a token of ours may be signed with.
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }

    /// Sign an RFC 9068 access token with a fresh 128-bit `jti`.
    pub fn mint(&self, spec: &MintSpec<'_>) -> Result<Minted, KeyError> {
        let jti = crate::crypto::random_id();
        let claims = AccessTokenClaims {
            iss: &self.issuer,
            sub: spec.sub,
            aud: spec.aud,
            client_id: spec.client_id,
            scope: spec.scopes.to_string(),
            iat: spec.iat,
            exp: spec.exp,
            jti: &jti,
            act: spec.act,
        };
        let payload = serde_json::to_vec(&claims).map_err(|_| KeyError::Sign)?;
        let token = self.key.sign_compact(&self.encoded_header, &payload)?;
        Ok(Minted { token, jti })
    }

    /// Verify a token this broker issued: `typ` at+jwt, a `kid` of ours with its own alg,
    /// the signature, `iss` byte-equal to ours, and `exp` not past.
    pub fn verify_own(&self, raw: &str, now: i64) -> Result<IssuedClaims, OwnTokenError> {
        let jws = CompactJws::parse(raw, crate::protocol::MAX_TOKEN_LEN)?;
        let h = &jws.header;
        if !h.typ.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("at+jwt")) {
            return Err(OwnTokenError::Typ);
        }
        if h.crit.is_some() || h.b64.is_some() || h.key_reference_member().is_some() {
            return Err(OwnTokenError::Key);
        }
        let alg: Alg = h.alg.parse().map_err(|_| OwnTokenError::Key)?;
        let kid = h.kid.as_deref().ok_or(OwnTokenError::Key)?;
        let key =
            self.verifying.iter().find(|k| k.kid() == kid && k.alg() == alg).ok_or(OwnTokenError::Key)?;
        if !key.verify(jws.signing_input.as_bytes(), &jws.signature) {
            return Err(OwnTokenError::Signature);
        }
        let claims: IssuedClaims = serde_json::from_slice(&jws.payload).map_err(|_| OwnTokenError::Claims)?;
        if claims.iss != self.issuer {
            return Err(OwnTokenError::Issuer);
        }
        if claims.exp <= now {
            return Err(OwnTokenError::Expired);
        }
        if claims.act.as_ref().is_some_and(|a| a.depth() > MAX_ACT_DEPTH) {
            return Err(OwnTokenError::ActTooDeep);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> TokenIssuer {
        TokenIssuer::new("https://sts.example".into(), SigningKey::generate(Alg::ES256).expect("key"), vec![])
            .expect("issuer")
    }

    #[test]
    fn mints_rfc9068_claims_and_verifies_them() {
        let t = issuer();
        let scopes = ScopeSet::parse("read write").expect("scope");
        let act = Act { sub: "bot".into(), act: Some(Box::new(Act { sub: "first".into(), act: None })) };
        let spec = MintSpec {
            sub: "user",
            aud: "https://mcp.example",
            client_id: "bot",
            scopes: &scopes,
            iat: 1000,
            exp: 1300,
            act: Some(&act),
        };
        let m = t.mint(&spec).expect("mint");
        let c = t.verify_own(&m.token, 1100).expect("verifies");
        assert_eq!(
            (c.sub.as_str(), c.aud.as_str(), c.scope.as_str()),
            ("user", "https://mcp.example", "read write")
        );
        assert_eq!(c.act, Some(act));
        assert_eq!(c.jti, m.jti);
        assert_eq!(crate::crypto::b64url_decode(&c.jti).expect("b64").len(), 16);
        assert_eq!(t.verify_own(&m.token, 1300).unwrap_err(), OwnTokenError::Expired);
    }

    #[test]
    fn refuses_tokens_of_another_key() {
        let (a, b) = (issuer(), issuer());
        let scopes = ScopeSet::parse("read").expect("scope");
        let spec = MintSpec {
            sub: "s",
            aud: "https://mcp.example",
            client_id: "c",
            scopes: &scopes,
            iat: 0,
            exp: 100,
            act: None,
        };
        let m = b.mint(&spec).expect("mint");
        assert_eq!(a.verify_own(&m.token, 1).unwrap_err(), OwnTokenError::Key);
    }
}
