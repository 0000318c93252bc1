//! Tokens of trusted issuers (`[[issuer]]`): a CI platform's or cluster's token for
//! federation, a user's token for on-behalf-of. The same checklist as an agent's assertion
//! ([`super::checklist`]) with the issuer's keys and settings, then the single-use spend.
//!
//! What may touch the network, in order: the token is parsed and its `iss` looked up in the
//! policy; an `iss` that no `[[issuer]]` names is refused there, before any key is looked
//! for, so nothing named by an unverified token is ever fetched. Keys come from memory; only
//! a `kid` that the issuer's keys in memory lack triggers the one rate-limited, shared
//! refetch of [`crate::issuers::IssuerKeys::lookup_or_refetch`]. Keys never fetched: 503.

use super::checklist::{check_parsed, Checked, Expect, JwtError, Skew, TypRule, MAX_JTI_LEN};
use super::{AuthError, Presented};
use crate::crypto::{sha256_hex, CompactJws, VerifyingKey};
use crate::issuers::{IssuerConfig, Issuers, LookupError};
use crate::policy::{KeySelectError, Policy};
use crate::protocol::MAX_TOKEN_LEN;
use crate::replay::{AssertionTimes, ReplayKey, ReplayStore, Spend};
use std::sync::Arc;

/// A trusted issuer's token that passed every check (and, for a single-use issuer, whose
/// `jti` is now spent).
#[derive(Debug)]
pub struct IssuedToken<'p> {
    /// Index into [`Policy::issuers`].
    pub issuer: usize,
    pub config: &'p IssuerConfig,
    pub checked: Checked<()>,
}

/// What a trusted issuer's token is checked against, besides the issuer's own settings.
#[derive(Debug, Clone, Copy)]
pub struct IssuedRules<'a> {
    /// The accepted `typ` values for this use of the token.
    pub typ: TypRule,
    /// The `aud` of an issuer that configures no `audience`: this broker's issuer.
    pub default_audience: &'a str,
    pub skew: Skew,
    /// An ID-JAG: `aud` is this broker's issuer whatever the issuer's `audience`, a `jti`
    /// is required and spent whatever the issuer's `single_use`.
    pub id_jag: bool,
}

fn lookup_error(e: LookupError) -> JwtError {
    match e {
        LookupError::NotLoaded => JwtError::KeysUnavailable,
        LookupError::UnknownKid => JwtError::Key(KeySelectError::UnknownKid),
        LookupError::AlgMismatch { registered, header } => {
            JwtError::Key(KeySelectError::AlgMismatch { registered, header })
        }
        LookupError::NoKeyForAlg(a) => JwtError::Key(KeySelectError::NoKeyForAlg(a)),
        LookupError::Ambiguous(a) => JwtError::Key(KeySelectError::Ambiguous(a)),
    }
}

/// Steps 2-6 with the issuer's expectations; the key from memory, or `refetched`.
fn run(
    jws: CompactJws<'_>,
    issuer: Option<usize>,
    policy: &Policy,
    issuers: &Issuers,
    rules: &IssuedRules<'_>,
    now: i64,
    refetched: Option<Arc<VerifyingKey>>,
) -> Result<Checked<()>, JwtError> {
    let config = issuer.map(|i| &policy.issuers[i]);
    let configured = config.and_then(|c| c.audience.as_deref()).filter(|_| !rules.id_jag);
    let audience = [configured.unwrap_or(rules.default_audience)];
    let expect = Expect {
        typ: rules.typ,
        audiences: Some(&audience),
        max_lifetime_secs: None,
        max_age_secs: config.and_then(|c| c.max_token_age_secs).map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
        require_jti: rules.id_jag,
        skew: rules.skew,
    };
    check_parsed(jws, &expect, now, |header, claims| {
        // Step 4: the issuer named by the exact iss, then its key; no network here.
        let config = config.ok_or(JwtError::UnknownIssuer)?;
        if claims.iss() != Some(config.issuer.as_str()) {
            return Err(JwtError::UnknownIssuer);
        }
        let key = match refetched {
            Some(k) => k,
            None => {
                let keys = issuers.get(&config.issuer).ok_or(JwtError::KeysUnavailable)?;
                keys.lookup(header.kid.as_deref(), header.alg).map_err(lookup_error)?
            }
        };
        Ok(((), key))
    })
}

/// The whole check of a trusted issuer's token: the checklist (with at most one refetch for
/// an unknown `kid`), then, for a single-use issuer, the spend of its `jti` (or of a hash of
/// the whole token when it has none) until `exp` + the past skew.
pub async fn verify_issued<'p, S: ReplayStore>(
    presented: Presented<'_>,
    policy: &'p Policy,
    issuers: &Issuers,
    rules: &IssuedRules<'_>,
    store: &S,
    now: i64,
) -> Result<IssuedToken<'p>, AuthError> {
    // Step 1 (done by whoever presented it), and the issuer its (not yet verified) iss names,
    // to choose the expectations.
    let issuer = presented.trusted_issuer(policy);
    let raw = presented.raw;
    let jws = presented.into_jws()?;
    let (kid, alg) = (jws.header.kid.clone(), jws.header.alg);
    let checked = match run(jws, issuer, policy, issuers, rules, now, None) {
        Err(JwtError::Key(KeySelectError::UnknownKid)) => {
            // The issuer may have rotated its keys: one shared, rate-limited refetch.
            let index = issuer.ok_or(JwtError::UnknownIssuer)?;
            let keys = issuers.get(&policy.issuers[index].issuer).ok_or(JwtError::KeysUnavailable)?;
            let key = keys.lookup_or_refetch(kid.as_deref(), alg).await.map_err(lookup_error)?;
            let jws = CompactJws::parse(raw, MAX_TOKEN_LEN).map_err(JwtError::from)?;
            run(jws, issuer, policy, issuers, rules, now, Some(key))?
        }
        other => other?,
    };
    let index = issuer.ok_or(JwtError::UnknownIssuer)?;
    let config = &policy.issuers[index];
    if config.single_use || rules.id_jag {
        let id = match checked.claims.jti() {
            Some(j) if !j.is_empty() && j.len() <= MAX_JTI_LEN => format!("jti:{j}"),
            _ => format!("sha256:{}", sha256_hex(&[raw.as_bytes()])),
        };
        let until_ms = checked.exp.saturating_add(rules.skew.past_secs).saturating_mul(1000);
        let times = AssertionTimes {
            iat: checked.claims.iat(),
            nbf: checked.claims.nbf(),
            exp: checked.exp,
            lifetime_capped: false,
        };
        if store.spend(&ReplayKey::for_jti(&config.issuer, &id), until_ms, &times).await? == Spend::Replayed {
            return Err(AuthError::Replayed);
        }
    }
    Ok(IssuedToken { issuer: index, config, checked })
}
