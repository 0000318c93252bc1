//! RFC 7523 assertion verification: an agent's self-signed JWT ▶ a [`VerifiedAssertion`].
//!
//! The same checklist serves client authentication (RFC 7523 §2.2, `private_key_jwt`), the
//! jwt-bearer grant (§2.1) and an agent assertion presented in a token exchange; only the
//! error code differs ([`Role`]).

mod claims;

pub use claims::{AssertionClaims, Audience, NumericDate};

use crate::crypto::{Alg, CompactError, CompactJws};
use crate::policy::{Agent, KeySelectError, Policy};
use crate::protocol::{OAuthError, MAX_TOKEN_LEN};
use crate::replay::{AssertionTimes, ReplayError, ReplayKey, ReplayStore, Spend};

/// Where the assertion was presented; it decides the error code of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `client_assertion` (RFC 7523 §3.2): `invalid_client`.
    ClientAuth,
    /// `assertion` of the jwt-bearer grant (RFC 7523 §3.1): `invalid_grant`.
    Grant,
    /// `subject_token`/`actor_token` of a token exchange (RFC 8693 §2.2.2): `invalid_request`.
    ExchangeToken,
}

/// What an assertion is checked against.
#[derive(Debug, Clone)]
pub struct AssertionRules {
    /// Accepted `aud` values: the issuer and the token endpoint URL.
    pub audiences: [String; 2],
    pub max_lifetime_secs: i64,
    pub skew_secs: i64,
}

/// An assertion that passed every check and whose `jti` is now spent.
#[derive(Debug)]
pub struct VerifiedAssertion<'p> {
    pub agent: &'p Agent,
    pub jti: String,
    pub exp: i64,
    pub iat: Option<i64>,
    pub nbf: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error("{0}")]
    Compact(#[from] CompactError),
    #[error("assertion alg {0:?} is not accepted (ES256, ES384, EdDSA, RS256, PS256)")]
    Alg(String),
    #[error("assertion typ {0:?} is not a JWT assertion")]
    Typ(String),
    #[error("assertion header carries {0}; keys come only from the policy (RFC 8725 §3.10)")]
    KeyReference(&'static str),
    #[error("assertion header names critical extensions; none are supported (RFC 7515 §4.1.11)")]
    Crit,
    #[error("assertion claims are not a JSON object of registered claims: {0}")]
    Claims(String),
    #[error("assertion has no iss")]
    NoIssuer,
    #[error("client_id does not match the assertion's iss and sub")]
    ClientIdMismatch,
    #[error("assertion iss is not a registered agent")]
    UnknownAgent,
    #[error("agent is disabled")]
    Disabled,
    #[error("no key of the agent verifies this assertion: {0}")]
    Key(#[from] KeySelectError),
    #[error("assertion signature does not verify")]
    Signature,
    #[error("assertion sub must equal iss (RFC 7523 §3)")]
    SubMismatch,
    #[error("assertion aud must be this broker's issuer or token endpoint (RFC 7523 §3)")]
    Audience,
    #[error("assertion has no exp (RFC 7523 §3)")]
    NoExpiry,
    #[error("assertion has expired")]
    Expired,
    #[error("assertion lives too long: exp may be at most {0} s ahead")]
    TooLongLived(i64),
    #[error("assertion is not valid yet (nbf)")]
    NotYetValid,
    #[error("assertion iat is in the future")]
    IssuedInFuture,
    #[error("assertion has no jti (RFC 7523 §3)")]
    NoJti,
    #[error("assertion jti is longer than 256 bytes")]
    JtiTooLong,
    #[error("assertion was already used (jti replayed)")]
    Replayed,
    #[error(transparent)]
    Store(#[from] ReplayError),
}

impl AssertionError {
    pub fn to_oauth(&self, role: Role) -> OAuthError {
        if let AssertionError::Store(e) = self {
            return e.to_oauth();
        }
        let description = self.to_string();
        match role {
            Role::ClientAuth => {
                OAuthError::invalid_client(format!("client authentication failed: {description}"))
            }
            Role::Grant => OAuthError::invalid_grant(description),
            Role::ExchangeToken => OAuthError::invalid_request(description),
        }
    }
}

const ACCEPTED_TYP: [&str; 3] = ["JWT", "client-authentication+jwt", "application/jwt"];

/// Steps 1–6 of the checklist (everything but replay), in order. No I/O.
///
/// 1. size and JWS compact parse;
/// 2. header: `alg` on the allow-list, `typ` a plain JWT, no `crit`, no `jku`/`x5u`/`jwk`/`x5c`;
/// 3. claims parse; `iss` names a registered, enabled agent; `client_id`, if sent, equals it;
/// 4. key by `kid` (its registered alg must equal the header's) or the only key for the alg;
/// 5. signature;
/// 6. claims: `sub` = `iss`, `aud`, `exp` present and not past, lifetime cap, `nbf`, `iat`, `jti`.
pub fn check<'p>(
    raw: &str,
    client_id: Option<&str>,
    policy: &'p Policy,
    rules: &AssertionRules,
    now: i64,
) -> Result<(VerifiedAssertion<'p>, String), AssertionError> {
    // 1.
    let jws = CompactJws::parse(raw, MAX_TOKEN_LEN)?;
    // 2.
    let h = &jws.header;
    let alg: Alg = h.alg.parse().map_err(|_| AssertionError::Alg(h.alg.chars().take(16).collect()))?;
    if let Some(typ) = &h.typ {
        if !ACCEPTED_TYP.iter().any(|t| t.eq_ignore_ascii_case(typ)) {
            return Err(AssertionError::Typ(typ.chars().take(32).collect()));
        }
    }
    if h.crit.is_some() || h.b64.is_some() {
        return Err(AssertionError::Crit);
    }
    if let Some(member) = h.key_reference_member() {
        return Err(AssertionError::KeyReference(member));
    }
    // 3.
    let claims: AssertionClaims =
        serde_json::from_slice(&jws.payload).map_err(|e| AssertionError::Claims(e.classify_str()))?;
    let iss = claims.iss.as_deref().ok_or(AssertionError::NoIssuer)?;
    if client_id.is_some_and(|c| c != iss) {
        return Err(AssertionError::ClientIdMismatch);
    }
    let agent = policy.agent(iss).ok_or(AssertionError::UnknownAgent)?;
    if agent.disabled {
        return Err(AssertionError::Disabled);
    }
    // 4.
    let key = agent.key_for(h.kid.as_deref(), alg)?;
    // 5.
    if !key.verify(jws.signing_input.as_bytes(), &jws.signature) {
        return Err(AssertionError::Signature);
    }
    // 6.
    if claims.sub.as_deref() != Some(iss) {
        return Err(AssertionError::SubMismatch);
    }
    let accepted = [rules.audiences[0].as_str(), rules.audiences[1].as_str()];
    if !claims.aud.as_ref().is_some_and(|a| a.contains_any(&accepted)) {
        return Err(AssertionError::Audience);
    }
    let exp = claims.exp.ok_or(AssertionError::NoExpiry)?.0;
    if now > exp.saturating_add(rules.skew_secs) {
        return Err(AssertionError::Expired);
    }
    let max_ahead = rules.max_lifetime_secs + rules.skew_secs;
    if exp.saturating_sub(now) > max_ahead {
        return Err(AssertionError::TooLongLived(max_ahead));
    }
    if claims.nbf.is_some_and(|nbf| nbf.0 > now.saturating_add(rules.skew_secs)) {
        return Err(AssertionError::NotYetValid);
    }
    if claims.iat.is_some_and(|iat| iat.0 > now.saturating_add(rules.skew_secs)) {
        return Err(AssertionError::IssuedInFuture);
    }
    let jti = claims.jti.filter(|j| !j.is_empty()).ok_or(AssertionError::NoJti)?;
    if jti.len() > 256 {
        return Err(AssertionError::JtiTooLong);
    }
    let iss = iss.to_string();
    let (iat, nbf) = (claims.iat.map(|d| d.0), claims.nbf.map(|d| d.0));
    Ok((VerifiedAssertion { agent, jti, exp, iat, nbf }, iss))
}

/// The whole checklist: [`check`], then step 7, the atomic replay check. The `jti`
/// (namespaced by issuer, hashed) is spent until the assertion could no longer be accepted.
pub async fn verify<'p, S: ReplayStore>(
    raw: &str,
    client_id: Option<&str>,
    policy: &'p Policy,
    rules: &AssertionRules,
    store: &S,
    now: i64,
) -> Result<VerifiedAssertion<'p>, AssertionError> {
    let (verified, iss) = check(raw, client_id, policy, rules, now)?;
    // 7.
    let until_ms = verified.exp.saturating_add(rules.skew_secs).saturating_mul(1000);
    let times = AssertionTimes { iat: verified.iat, nbf: verified.nbf, exp: verified.exp };
    match store.spend(&ReplayKey::for_jti(&iss, &verified.jti), until_ms, &times).await? {
        Spend::Fresh => Ok(verified),
        Spend::Replayed => Err(AssertionError::Replayed),
    }
}

trait ClassifyStr {
    fn classify_str(&self) -> String;
}

impl ClassifyStr for serde_json::Error {
    fn classify_str(&self) -> String {
        match self.classify() {
            serde_json::error::Category::Data => "a claim has the wrong type or appears twice".into(),
            _ => "not valid JSON".into(),
        }
    }
}
