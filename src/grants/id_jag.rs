//! Identity Assertion JWT Authorization Grant (ID-JAG; draft-ietf-oauth-identity-assertion-
//! authz-grant, the MCP "enterprise-managed authorization" extension): an enterprise
//! identity provider, trusted with `id_jag = true`, grants a client access to a resource on a
//! user's behalf; the client redeems the grant here with the jwt-bearer grant type.
//!
//! Checked: the shared checklist with the issuer's keys, `typ` `oauth-id-jag+jwt` (required),
//! `aud` this broker's issuer, a `jti` spent once (whatever the issuer's `single_use`, so
//! also across broker instances); the client authenticated, and equal to the grant's
//! `client_id`; the requested `resource` among the grant's, the requested scope within the
//! grant's. The token: `sub` = the grant's `sub`, `client_id` = the agent, scopes = request
//! ∩ the grant's ∩ the agent's allowance. Refusals are `invalid_grant` (RFC 7523 section 3.1),
//! `invalid_target` and `invalid_scope`.

use crate::broker::{Broker, ExchangeContext};
use crate::client_auth::{Presented, Role, TypRule};
use crate::policy::Agent;
use crate::protocol::{OAuthError, ScopeSet, TokenRequest};
use serde_json::Value;

pub(crate) async fn id_jag<'b>(
    broker: &'b Broker,
    req: &TokenRequest,
    client: Option<&'b Agent>,
    presented: Presented<'_>,
    now: i64,
) -> Result<ExchangeContext<'b>, OAuthError> {
    let role = Role::Grant;
    // Only an issuer trusted with ID-JAGs may issue one (told from the unverified iss; the
    // checklist then verifies it).
    let issuer = presented.trusted_issuer(&broker.policy).map(|i| &broker.policy.issuers[i]);
    if let Some(config) = issuer.filter(|c| !c.id_jag) {
        return Err(role.refuse(format!(
            "typ oauth-id-jag+jwt: issuer '{}' is not trusted to issue ID-JAGs (id_jag = true in its [[issuer]])",
            config.id
        )));
    }
    let client = client.ok_or_else(|| {
        OAuthError::invalid_client(
            "redeeming an ID-JAG needs client authentication: send client_assertion (private_key_jwt, RFC 7523 section 2.2)",
        )
    })?;
    let token = broker.verify_issued(presented, TypRule::ID_JAG, role, now).await?;
    let claims = &token.checked.claims;
    if claims.str("client_id") != Some(client.id.as_str()) {
        return Err(role.refuse("its client_id is not the authenticated client"));
    }
    let sub = claims.sub().filter(|s| !s.is_empty()).ok_or_else(|| role.refuse("has no sub"))?;
    // The resource(s) the grant is for: the request may only name those.
    let granted_resources: Option<Vec<&str>> = match claims.get("resource") {
        None => None,
        Some(Value::String(r)) => Some(vec![r.as_str()]),
        Some(Value::Array(a)) => Some(a.iter().filter_map(Value::as_str).collect()),
        Some(_) => return Err(role.refuse("its resource claim must be a string or an array of strings")),
    };
    if let Some(granted) = &granted_resources {
        let asked = req.resources.iter().chain(req.audiences.iter().filter_map(|a| {
            // An audience may name a server by id: compare its resource URI.
            broker.policy.server_by_audience(a).map(|i| &broker.policy.servers[i].resource)
        }));
        if let Some(r) = asked.into_iter().find(|r| !granted.contains(&r.as_str())) {
            return Err(OAuthError::invalid_target(format!(
                "the ID-JAG does not grant resource '{r}' (it grants: {})",
                granted.join(", ")
            )));
        }
    }
    // The scope it grants: the request may only ask within it.
    let granted_scope = match claims.str("scope") {
        None => ScopeSet::default(),
        Some(s) => ScopeSet::parse(s).map_err(|_| role.refuse("its scope claim is malformed"))?,
    };
    if let Some(asked) = &req.scope {
        if !asked.is_subset(&granted_scope) {
            return Err(OAuthError::invalid_scope(format!(
                "the requested scope is not within the ID-JAG's scope '{granted_scope}'"
            )));
        }
    }
    Ok(ExchangeContext {
        agent: client,
        sub: sub.to_string(),
        act: None,
        ceiling_scopes: Some(granted_scope.clone()),
        default_request: Some(granted_scope),
        ceiling_exp: None,
        issued_token_type: None,
        issuer: Some(token.config.id.clone()),
        rule: None,
        entitlement: broker.own_entitlement(client),
    })
}
