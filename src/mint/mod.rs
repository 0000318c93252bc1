//! Access tokens: RFC 9068 JWTs (`typ: at+jwt`) signed by the broker's key, and the
//! verification of our own tokens when they come back as an RFC 8693 `subject_token`.

use crate::client_auth::checklist::{check, Expect, JwtError, Skew, TypRule};
use crate::crypto::{Alg, KeyError, SigningKey, VerifyingKey};
use crate::policy::KeySelectError;
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

    /// The `act` of a token exchanged by `actor` whose subject token carried `prior`
    /// (RFC 8693 section 4.1): the new actor outermost, prior actors nested inside, never
    /// dropped or rewritten; the same actor acting again (re-scoping its own token) is not a
    /// new hop.
    pub fn nest(prior: Option<Act>, actor: &str) -> Act {
        match prior {
            Some(prior) if prior.sub == actor => prior,
            prior => Act { sub: actor.to_string(), act: prior.map(Box::new) },
        }
    }

    /// The actors, current one first.
    pub fn chain(&self) -> Vec<String> {
        let mut out = vec![self.sub.clone()];
        let mut next = self.act.as_deref();
        while let Some(a) = next {
            out.push(a.sub.clone());
            next = a.act.as_deref();
        }
        out
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
    /// What the subject may have by policy (`agent:<id>`, `federation:<rule>`,
    /// `delegation:<rule>`): caps any later exchange of this token.
    #[serde(skip_serializing_if = "Option::is_none")]
    entitlement: Option<&'a str>,
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
    pub entitlement: Option<&'a str>,
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
    #[serde(default)]
    pub entitlement: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnTokenError {
    #[error("{0}")]
    Jwt(#[from] JwtError),
    #[error("has no string claim '{0}' (RFC 9068 section 2.2)")]
    Claims(&'static str),
    #[error("has expired")]
    Expired,
    #[error("act chain is deeper than {MAX_ACT_DEPTH}")]
    ActTooDeep,
}

/// Clock tolerance for our own tokens: they never outlive `exp`; `iat` may be up to a minute
/// ahead (another broker instance's clock).
const OWN_SKEW: Skew = Skew { past_secs: 0, future_secs: 60 };

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

    /// The `kid` of the key that signs.
    pub fn kid(&self) -> &str {
        self.key.kid()
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
            entitlement: spec.entitlement,
        };
        let payload = serde_json::to_vec(&claims).map_err(|_| KeyError::Sign)?;
        let token = self.key.sign_compact(&self.encoded_header, &payload)?;
        Ok(Minted { token, jti })
    }

    /// Verify a token this broker issued, through the same checklist as every JWT
    /// ([`crate::client_auth::checklist`]): `typ` at+jwt; `iss` byte-equal to ours; a `kid` of
    /// ours whose alg is the header's; the signature; `exp` not past (no skew: `exp` = now is
    /// expired); `jti`; the `act` chain no deeper than [`MAX_ACT_DEPTH`].
    pub fn verify_own(&self, raw: &str, now: i64) -> Result<IssuedClaims, OwnTokenError> {
        let expect = Expect {
            typ: TypRule::ACCESS_TOKEN,
            audiences: None,
            max_lifetime_secs: None,
            max_age_secs: None,
            require_jti: true,
            skew: OWN_SKEW,
        };
        let checked = check(raw, &expect, now, |header, claims| {
            if claims.iss() != Some(self.issuer.as_str()) {
                return Err(JwtError::UnknownIssuer);
            }
            let kid = header.kid.as_deref().ok_or(KeySelectError::UnknownKid)?;
            let key = self.verifying.iter().find(|k| k.kid() == kid).ok_or(KeySelectError::UnknownKid)?;
            if key.alg() != header.alg {
                return Err(KeySelectError::AlgMismatch { registered: key.alg(), header: header.alg }.into());
            }
            Ok(((), key))
        })?;
        if checked.exp <= now {
            return Err(OwnTokenError::Expired);
        }
        let c = &checked.claims;
        let string = |name: &'static str| c.str(name).map(str::to_string).ok_or(OwnTokenError::Claims(name));
        let act = match c.get("act") {
            None => None,
            Some(v) => {
                Some(serde_json::from_value::<Act>(v.clone()).map_err(|_| OwnTokenError::Claims("act"))?)
            }
        };
        if act.as_ref().is_some_and(|a| a.depth() > MAX_ACT_DEPTH) {
            return Err(OwnTokenError::ActTooDeep);
        }
        Ok(IssuedClaims {
            iss: self.issuer.clone(),
            sub: string("sub")?,
            aud: string("aud")?,
            client_id: string("client_id")?,
            scope: string("scope")?,
            iat: c.iat().ok_or(OwnTokenError::Claims("iat"))?,
            exp: checked.exp,
            jti: string("jti")?,
            act,
            entitlement: c.str("entitlement").map(str::to_string),
        })
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
            entitlement: None,
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
        assert!(t.verify_own(&m.token, 1299).is_ok(), "valid in its last second");
        assert_eq!(t.verify_own(&m.token, 1300).unwrap_err(), OwnTokenError::Expired);
        // kid() (logged at start and on reload as the signing key) is the header's kid, the
        // one the JWKS publishes.
        let header = m.token.split('.').next().expect("header");
        let header: serde_json::Value =
            serde_json::from_slice(&crate::crypto::b64url_decode(header).expect("b64")).expect("json");
        assert_eq!(header["kid"], serde_json::json!(t.kid()));
        assert_eq!(t.jwks()["keys"][0]["kid"], serde_json::json!(t.kid()));
        assert!(!t.kid().is_empty());
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
            entitlement: None,
        };
        let m = b.mint(&spec).expect("mint");
        assert_eq!(
            a.verify_own(&m.token, 1).unwrap_err(),
            OwnTokenError::Jwt(JwtError::Key(KeySelectError::UnknownKid))
        );
    }

    fn spec_for<'a>(scopes: &'a ScopeSet, act: Option<&'a Act>) -> MintSpec<'a> {
        MintSpec {
            sub: "s",
            aud: "https://mcp.example",
            client_id: "c",
            scopes,
            iat: 0,
            exp: 100,
            act,
            entitlement: None,
        }
    }

    /// Each identity check of our own tokens refuses on its own: another issuer string, another
    /// `typ`, a `kid` we publish under another alg.
    #[test]
    fn refuses_foreign_issuer_typ_and_alg() {
        let t = issuer();
        let scopes = ScopeSet::parse("read").expect("scope");
        let other = TokenIssuer::new(
            "https://sts.example/other".into(),
            SigningKey::generate(Alg::ES256).expect("key"),
            vec![t.key.public_jwk().clone()],
        )
        .expect("issuer");
        let m = other.mint(&spec_for(&scopes, None)).expect("mint");
        assert_eq!(t.verify_own(&m.token, 1).unwrap_err(), OwnTokenError::Jwt(JwtError::UnknownIssuer));
        // Re-sign our own claims with our key but typ JWT: not an access token.
        let (_, payload) = m.token.split_once('.').expect("parts");
        let (payload, _) = payload.split_once('.').expect("parts");
        let claims = crate::crypto::b64url_decode(payload).expect("b64");
        let mut claims: serde_json::Value = serde_json::from_slice(&claims).expect("json");
        claims["iss"] = serde_json::json!("https://sts.example");
        let jwt = t
            .key
            .sign_compact(&t.key.encoded_header("JWT", true), claims.to_string().as_bytes())
            .expect("sign");
        assert!(matches!(t.verify_own(&jwt, 1).unwrap_err(), OwnTokenError::Jwt(JwtError::Typ(..))));
        let good = t.key.sign_compact(&t.encoded_header, claims.to_string().as_bytes()).expect("sign");
        assert!(t.verify_own(&good, 1).is_ok(), "the same claims as at+jwt pass");
    }

    #[test]
    fn act_depth_is_capped() {
        let t = issuer();
        let scopes = ScopeSet::parse("read").expect("scope");
        let mut act = Act { sub: "a0".into(), act: None };
        for i in 1..MAX_ACT_DEPTH {
            act = Act { sub: format!("a{i}"), act: Some(Box::new(act)) };
        }
        assert_eq!(act.depth(), MAX_ACT_DEPTH);
        let m = t.mint(&spec_for(&scopes, Some(&act))).expect("mint");
        assert!(t.verify_own(&m.token, 1).is_ok(), "exactly the cap passes");
        let deeper = Act { sub: "top".into(), act: Some(Box::new(act)) };
        let m = t.mint(&spec_for(&scopes, Some(&deeper))).expect("mint");
        assert_eq!(t.verify_own(&m.token, 1).unwrap_err(), OwnTokenError::ActTooDeep);
    }
}
