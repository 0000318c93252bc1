//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523 section 2.1): the grant
//! is an agent's own assertion; a trusted issuer's token (a CI job's, a workload's) that a
//! federation rule maps to an agent; or an ID-JAG from a trusted enterprise identity
//! provider (header `typ: oauth-id-jag+jwt`). The token's `iss` tells a trusted issuer's
//! exact `iss` from an agent id (the policy refuses an agent id equal to a trusted `iss`);
//! among a trusted issuer's tokens, the typ tells an ID-JAG. Client authentication is optional (section 3.1) except for an
//! ID-JAG; when present it must name the same agent.

use crate::broker::{Broker, ExchangeContext};
use crate::client_auth::{Presented, Role, TypRule};
use crate::protocol::{ClientAssertion, OAuthError, TokenRequest};

pub(crate) async fn jwt_bearer<'b>(
    broker: &'b Broker,
    req: &TokenRequest,
    assertion: &ClientAssertion,
    now: i64,
) -> Result<ExchangeContext<'b>, OAuthError> {
    let client = broker.authenticate_client(req, now).await?;
    // Parsed once: its unverified iss and typ choose the path, which then checks it.
    let presented = Presented::parse(&assertion.0);
    if presented.trusted_issuer(&broker.policy).is_some() {
        if presented.typ_is("oauth-id-jag+jwt") {
            return crate::grants::id_jag(broker, req, client, presented, now).await;
        }
        return crate::grants::federated(
            broker,
            client,
            presented,
            Role::Grant,
            TypRule::ISSUED_TOKEN,
            None,
            now,
        )
        .await;
    }
    let grant =
        broker.verify_presented_assertion(presented, req.client_id.as_deref(), Role::Grant, now).await?;
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
