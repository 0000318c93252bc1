//! `grant_type=client_credentials` with `private_key_jwt` client authentication
//! (RFC 6749 §4.4, RFC 7523 §2.2; the MCP client-credentials extension, SEP-1046).

use crate::broker::{Broker, ExchangeContext};
use crate::protocol::{OAuthError, TokenRequest};

pub(crate) async fn client_credentials<'b>(
    broker: &'b Broker,
    req: &TokenRequest,
    now: i64,
) -> Result<ExchangeContext<'b>, OAuthError> {
    // RFC 6749 §4.4.2: "The client MUST authenticate with the authorization server".
    let agent = broker.authenticate_client(req, now).await?.ok_or_else(|| {
        OAuthError::invalid_client(
            "client authentication is required: send client_assertion (private_key_jwt, RFC 7523 section 2.2)",
        )
    })?;
    Ok(ExchangeContext {
        agent,
        sub: agent.id.clone(),
        act: None,
        ceiling_scopes: None,
        default_request: None,
        ceiling_exp: None,
        issued_token_type: None,
        issuer: None,
        rule: None,
        entitlement: broker.own_entitlement(agent),
    })
}
