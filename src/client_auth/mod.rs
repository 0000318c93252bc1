//! Authentication of the JWTs presented to the token endpoint.
//!
//! [`checklist`] is the one ordered checklist for every JWT we accept; this module applies
//! it to an agent's own assertion (RFC 7523): the key comes from the agent's registration in
//! the policy, `aud` is this broker's issuer, and the `jti` is spent once. The same checklist
//! serves client authentication (RFC 7523 section 2.2, `private_key_jwt`), the jwt-bearer
//! grant (section 2.1) and an agent assertion presented in a token exchange; only the error
//! code differs ([`Role`]).

pub mod checklist;
mod issued;
mod presented;

pub use checklist::{check, check_parsed, Checked, Expect, JwtError, Skew, TypRule};
pub use issued::{verify_issued, IssuedRules, IssuedToken};
pub use presented::Presented;

use crate::crypto::VerifyingKey;
use crate::policy::{Agent, Policy};
use crate::protocol::OAuthError;
use crate::replay::{AssertionTimes, ReplayError, ReplayKey, ReplayStore, Spend};

/// Where a JWT was presented; it decides the error code of a refusal and names the
/// parameter in the description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `client_assertion` (RFC 7523 section 3.2): `invalid_client`.
    ClientAuth,
    /// `assertion` of the jwt-bearer grant (RFC 7523 section 3.1): `invalid_grant`.
    Grant,
    /// `subject_token` of a token exchange (RFC 8693 section 2.2.2): `invalid_request`.
    SubjectToken,
    /// `actor_token` of a token exchange (RFC 8693 section 2.2.2): `invalid_request`.
    ActorToken,
}

impl Role {
    /// The refusal of a JWT presented in this role, for `reason`: `invalid_client` for client
    /// authentication, `invalid_grant` for the jwt-bearer grant, `invalid_request` in a token
    /// exchange (RFC 8693 section 2.2.2); the description names the parameter.
    pub fn refuse(self, reason: impl std::fmt::Display) -> OAuthError {
        let description = format!("{}: {reason}", self.parameter());
        match self {
            Role::ClientAuth => {
                OAuthError::invalid_client(format!("client authentication failed: {description}"))
            }
            Role::Grant => OAuthError::invalid_grant(description),
            Role::SubjectToken | Role::ActorToken => OAuthError::invalid_request(description),
        }
    }

    pub fn parameter(self) -> &'static str {
        match self {
            Role::ClientAuth => "client_assertion",
            Role::Grant => "assertion",
            Role::SubjectToken => "subject_token",
            Role::ActorToken => "actor_token",
        }
    }
}

/// Why a presented JWT was refused: a checklist failure, or the replay step.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Jwt(#[from] JwtError),
    #[error("was already used (jti replayed)")]
    Replayed,
    #[error(transparent)]
    Store(#[from] ReplayError),
}

impl AuthError {
    pub fn to_oauth(&self, role: Role) -> OAuthError {
        match self {
            AuthError::Store(e) => return e.to_oauth(),
            AuthError::Jwt(JwtError::KeysUnavailable) => {
                return OAuthError::unavailable(format!(
                    "{}: the keys of its issuer are not available yet (fail closed); retry shortly",
                    role.parameter()
                ))
            }
            _ => {}
        }
        let description = format!("{}: {self}", role.parameter());
        match role {
            Role::ClientAuth => {
                OAuthError::invalid_client(format!("client authentication failed: {description}"))
            }
            Role::Grant => OAuthError::invalid_grant(description),
            Role::SubjectToken | Role::ActorToken => OAuthError::invalid_request(description),
        }
    }
}

/// What an agent assertion is checked against.
#[derive(Debug, Clone)]
pub struct AssertionRules {
    /// Accepted `aud` values: the issuer; the token endpoint URL too only when the operator
    /// turned on `tokens.accept_token_endpoint_audience` (for Authlib).
    pub audiences: Vec<String>,
    pub max_lifetime_secs: i64,
    pub skew: Skew,
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

/// Steps 1-6 for an agent assertion. The resolver (step 4): `iss` names a registered,
/// enabled agent; `client_id`, if sent, equals it; its key by `kid` (whose registered alg
/// must equal the header's) or its only key for the header's alg. After the checklist:
/// `sub` = `iss` (RFC 7523 section 3 item 2).
pub fn check_assertion<'p>(
    raw: &str,
    client_id: Option<&str>,
    policy: &'p Policy,
    rules: &AssertionRules,
    now: i64,
) -> Result<Checked<&'p Agent>, JwtError> {
    check_assertion_presented(Presented::parse(raw), client_id, policy, rules, now)
}

/// As [`check_assertion`], for a JWT already parsed (step 1) by whoever looked at it first.
pub fn check_assertion_presented<'p>(
    presented: Presented<'_>,
    client_id: Option<&str>,
    policy: &'p Policy,
    rules: &AssertionRules,
    now: i64,
) -> Result<Checked<&'p Agent>, JwtError> {
    let audiences: Vec<&str> = rules.audiences.iter().map(String::as_str).collect();
    let expect = Expect {
        typ: TypRule::ASSERTION,
        audiences: Some(&audiences),
        max_lifetime_secs: Some(rules.max_lifetime_secs),
        max_age_secs: None,
        require_jti: true,
        skew: rules.skew,
    };
    let checked = check_parsed(presented.into_jws()?, &expect, now, |header, claims| {
        let iss = claims.iss().unwrap_or_default();
        if client_id.is_some_and(|c| c != iss) {
            return Err(JwtError::ClientIdMismatch);
        }
        let agent = policy.agent(iss).ok_or(JwtError::UnknownAgent)?;
        if agent.disabled {
            return Err(JwtError::Disabled);
        }
        let key: &VerifyingKey = agent.key_for(header.kid.as_deref(), header.alg)?;
        Ok((agent, key))
    })?;
    if checked.claims.sub() != checked.claims.iss() {
        return Err(JwtError::SubMismatch);
    }
    Ok(checked)
}

/// Step 7: spend `id` (a `jti`, namespaced by `issuer`, hashed) until the JWT could no longer
/// be accepted (the end of the second `exp` + the past skew, [`Skew::refused_from_ms`]).
/// `lifetime_capped`: whether the checklist capped its
/// lifetime (an agent's assertion), which decides what its `exp` proves after a loss of the
/// replay record ([`crate::replay::window`]).
pub(crate) async fn spend<S: ReplayStore, T>(
    store: &S,
    issuer: &str,
    id: &str,
    checked: &Checked<T>,
    skew: Skew,
    lifetime_capped: bool,
) -> Result<Spend, ReplayError> {
    let until_ms = skew.refused_from_ms(checked.exp);
    let c = &checked.claims;
    let times = AssertionTimes { iat: c.iat(), nbf: c.nbf(), exp: checked.exp, lifetime_capped };
    store.spend(&ReplayKey::for_jti(issuer, id), until_ms, &times).await
}

/// The whole checklist for an agent assertion: [`check_assertion`], then step 7, the atomic
/// replay check. The `jti` (namespaced by issuer, hashed) is spent until the assertion could
/// no longer be accepted (`exp` + the past skew).
pub async fn verify<'p, S: ReplayStore>(
    presented: Presented<'_>,
    client_id: Option<&str>,
    policy: &'p Policy,
    rules: &AssertionRules,
    store: &S,
    now: i64,
) -> Result<VerifiedAssertion<'p>, AuthError> {
    let checked = check_assertion_presented(presented, client_id, policy, rules, now)?;
    let agent = checked.who;
    let jti = checked.claims.jti().unwrap_or_default().to_string();
    // 7.
    match spend(store, &agent.id, &jti, &checked, rules.skew, true).await? {
        Spend::Fresh => Ok(VerifiedAssertion {
            agent,
            jti,
            exp: checked.exp,
            iat: checked.claims.iat(),
            nbf: checked.claims.nbf(),
        }),
        Spend::Replayed => Err(AuthError::Replayed),
    }
}
