//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523 section 2.1): the grant
//! is an agent's own assertion; a trusted issuer's token (a CI job's, a workload's) that a
//! federation rule maps to an agent; or an ID-JAG from a trusted enterprise identity
//! provider (header `typ: oauth-id-jag+jwt`). The token's `iss` tells a trusted issuer's
//! exact `iss` from an agent id (the policy refuses an agent id equal to a trusted `iss`);
//! among a trusted issuer's tokens, the typ tells an ID-JAG. Client authentication is optional (section 3.1) except for an
//! ID-JAG; when present it must name the same agent.

use crate::broker::{Broker, ExchangeContext};
use crate::client_auth::{names_trusted_issuer, Role, TypRule};
use crate::crypto::CompactJws;
use crate::protocol::{ClientAssertion, OAuthError, TokenRequest, MAX_TOKEN_LEN};

pub(crate) async fn jwt_bearer<'b>(
    broker: &'b Broker,
    req: &TokenRequest,
    assertion: &ClientAssertion,
    now: i64,
) -> Result<ExchangeContext<'b>, OAuthError> {
    let client = broker.authenticate_client(req, now).await?;
    if names_trusted_issuer(&assertion.0, &broker.policy) {
        if is_id_jag(&assertion.0) {
            return crate::grants::id_jag(broker, req, client, &assertion.0, now).await;
        }
        return crate::grants::federated(
            broker,
            client,
            &assertion.0,
            Role::Grant,
            TypRule::ISSUED_TOKEN,
            None,
            now,
        )
        .await;
    }
    let grant = broker.verify_assertion(assertion, req.client_id.as_deref(), Role::Grant, now).await?;
    if client.is_some_and(|c| c.id != grant.agent.id) {
        return Err(OAuthError::invalid_grant("the assertion's agent is not the authenticated client"));
    }
    Ok(ExchangeContext {
        agent: grant.agent,
        sub: grant.agent.id.clone(),
        act: None,
        ceiling_scopes: None,
        default_request: None,
        ceiling_exp: None,
        issued_token_type: None,
        issuer: None,
        rule: None,
        entitlement: broker.own_entitlement(grant.agent),
    })
}

/// Whether the (unverified) header says `typ: oauth-id-jag+jwt`.
fn is_id_jag(raw: &str) -> bool {
    CompactJws::parse(raw, MAX_TOKEN_LEN)
        .ok()
        .and_then(|j| j.header.typ)
        .is_some_and(|t| t.is("oauth-id-jag+jwt"))
}
