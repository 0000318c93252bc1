//! On-behalf-of (RFC 8693, issue 8): an agent acting for a user. The `subject_token` is the
//! user's access token or ID token from a trusted `[[issuer]]`; the actor is the agent
//! authenticated by its client assertion and/or its `actor_token` (which name the same agent:
//! checked by the caller). A `[[delegation]]` rule must let that agent act for that subject;
//! `may_act` in the subject token, when present, must name the actor (RFC 8693 section 4.4).
//!
//! The token: `sub` = the user's `sub`, `act` = `{"sub": agent}` (nesting any `act` the
//! subject token already carries), `client_id` = the agent, scopes = request ∩ the rule's
//! allowance ∩ the agent's allowance (∩ the subject token's own scopes when the rule says so),
//! `exp` no later than the subject token's. Every refusal of the subject is
//! `invalid_request` (RFC 8693 section 2.2.2).

use crate::broker::{Broker, ExchangeContext};
use crate::client_auth::{Presented, Role, TypRule};
use crate::mint::Act;
use crate::policy::delegation::may_act_names;
use crate::policy::{Agent, Entitlement, Policy};
use crate::protocol::{OAuthError, TokenType};

const ISSUED: &str = "urn:ietf:params:oauth:token-type:access_token";

pub(crate) async fn on_behalf_of<'b>(
    broker: &'b Broker,
    presented: Presented<'_>,
    token_type: TokenType,
    actor: &'b Agent,
    now: i64,
) -> Result<ExchangeContext<'b>, OAuthError> {
    let role = Role::SubjectToken;
    let typ = if token_type == TokenType::IdToken { TypRule::ID_TOKEN } else { TypRule::ISSUED_TOKEN };
    let token = broker.verify_issued(presented, typ, role, now).await?;
    let claims = &token.checked.claims;
    let sub = claims.sub().filter(|s| !s.is_empty()).ok_or_else(|| role.refuse("has no sub"))?;
    may_act_names(claims.get("may_act"), &actor.id, broker.tokens.issuer()).map_err(|e| role.refuse(e))?;
    let policy = &broker.policy;
    let actor_index =
        policy.agent_index(&actor.id).ok_or_else(|| role.refuse("the actor is not an agent"))?;
    let rule = policy.delegation_rule(token.issuer, actor_index, claims.as_object()).map_err(|deny| {
        for (r, outcomes) in policy.delegation_trace(token.issuer, actor_index, claims.as_object()) {
            if let Some(failed) = outcomes.iter().find(|o| !o.holds) {
                tracing::debug!(rule = %r.id, test = %failed, "delegation rule does not match");
            }
        }
        role.refuse(deny)
    })?;
    // An act chain the subject token already carries stays, inside ours.
    let prior = match claims.get("act") {
        None => None,
        Some(v) => Some(Box::new(
            serde_json::from_value::<Act>(v.clone())
                .map_err(|_| role.refuse("its act claim is malformed"))?,
        )),
    };
    let act = Act { sub: actor.id.clone(), act: prior };
    policy.check_chain(&act).map_err(OAuthError::invalid_request)?;
    let ceiling_scopes =
        rule.limit_to_subject_scopes.then(|| Policy::subject_scopes(claims.as_object()).unwrap_or_default());
    Ok(ExchangeContext {
        agent: actor,
        sub: sub.to_string(),
        act: Some(act),
        ceiling_scopes,
        default_request: None,
        ceiling_exp: Some(token.checked.exp),
        issued_token_type: Some(ISSUED),
        issuer: Some(token.config.id.clone()),
        rule: Some(rule.id.clone()),
        entitlement: Entitlement::Delegation(rule.index),
    })
}
