//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523 section 2.1): the grant
//! is an agent's own assertion, or a trusted issuer's token (a CI job's, a workload's) that a
//! federation rule maps to an agent. Which one is told by the token's `iss`: a trusted
//! issuer's exact `iss`, or else an agent id (the policy refuses an agent id equal to a
//! trusted `iss`). Client authentication is optional (section 3.1); when present it must name
//! the same agent.

use crate::broker::{Broker, ExchangeContext};
use crate::client_auth::{names_trusted_issuer, Role, TypRule};
use crate::protocol::{ClientAssertion, OAuthError, TokenRequest};

pub(crate) async fn jwt_bearer<'b>(
    broker: &'b Broker,
    req: &TokenRequest,
    assertion: &ClientAssertion,
    now: i64,
) -> Result<ExchangeContext<'b>, OAuthError> {
    let client = broker.authenticate_client(req, now).await?;
    if names_trusted_issuer(&assertion.0, &broker.policy) {
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
        ceiling_exp: None,
        issued_token_type: None,
        issuer: None,
        rule: None,
    })
}
