//! Federation (issue 7): a CI job's or workload's token from a trusted issuer, mapped by
//! exactly one `[[federation]]` rule to an agent, whose `[[agent.allow]]` grants then apply.
//! It arrives as the jwt-bearer `assertion` (RFC 7523 section 2.1) or as a token exchange's
//! `subject_token` without an actor, with no client secret anywhere. The token's `sub`
//! becomes the issued token's `sub`; the agent becomes its `client_id`.

use crate::broker::{Broker, ExchangeContext};
use crate::client_auth::{Presented, Role, TypRule};
use crate::policy::{Agent, FederationDeny};
use crate::protocol::OAuthError;

/// `client`: the authenticated client, if the request carried a client assertion; not
/// needed, but when present it must be the agent the rule maps to.
pub(crate) async fn federated<'b>(
    broker: &'b Broker,
    client: Option<&Agent>,
    presented: Presented<'_>,
    role: Role,
    typ: TypRule,
    issued_token_type: Option<&'static str>,
    now: i64,
) -> Result<ExchangeContext<'b>, OAuthError> {
    let token = broker.verify_issued(presented, typ, role, now).await?;
    let claims = &token.checked.claims;
    let sub = claims.sub().filter(|s| !s.is_empty()).ok_or_else(|| role.refuse("has no sub"))?;
    let policy = &broker.policy;
    let (rule, agent) = policy.map_federated(token.issuer, claims.as_object()).map_err(|deny| {
        if let FederationDeny::NoRule { .. } = &deny {
            for (rule, outcomes) in policy.federation_trace(token.issuer, claims.as_object()).iter().take(8) {
                if let Some(failed) = outcomes.iter().find(|o| !o.holds) {
                    tracing::debug!(issuer = %token.config.id, rule = %rule.id, test = %failed, "federation rule does not match");
                }
            }
        }
        role.refuse(deny)
    })?;
    if client.is_some_and(|c| c.id != agent.id) {
        return Err(role.refuse(format!(
            "maps to agent '{}' (federation rule '{}'), not to the authenticated client",
            agent.id, rule.id
        )));
    }
    Ok(ExchangeContext {
        agent,
        sub: sub.to_string(),
        act: None,
        ceiling_scopes: None,
        default_request: None,
        ceiling_exp: None,
        issued_token_type,
        issuer: Some(token.config.id.clone()),
        rule: Some(rule.id.clone()),
        entitlement: crate::policy::Entitlement::Federation(rule.index),
    })
}
