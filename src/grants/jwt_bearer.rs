//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`: the agent's own assertion is
//! the grant (RFC 7523 §2.1). Client authentication is optional (§3.1); when present it must
//! name the same agent.

use crate::broker::{Broker, ExchangeContext};
use crate::client_auth::Role;
use crate::protocol::{ClientAssertion, OAuthError, TokenRequest};

pub(crate) async fn jwt_bearer<'b>(
    broker: &'b Broker,
    req: &TokenRequest,
    assertion: &ClientAssertion,
    now: i64,
) -> Result<ExchangeContext<'b>, OAuthError> {
    let client = broker.authenticate_client(req, now).await?;
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
    })
}
