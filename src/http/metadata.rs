//! Discovery: RFC 8414 metadata (also served as `openid-configuration`, where MCP clients
//! look second), the JWKS, and an authorization endpoint that explains there is none.

use super::{json_error, AppState};
use crate::broker::Broker;
use crate::crypto::Alg;
use crate::protocol::{
    ErrorCode, OAuthError, GRANT_CLIENT_CREDENTIALS, GRANT_JWT_BEARER, GRANT_TOKEN_EXCHANGE,
};
use actix_web::http::header;
use actix_web::{web, HttpResponse};

pub(crate) fn document(broker: &Broker) -> web::Bytes {
    let issuer = broker.tokens.issuer();
    let algs: Vec<&str> = Alg::ALL.iter().map(|a| a.as_str()).collect();
    let scopes: Vec<&str> = broker
        .policy
        .servers
        .iter()
        .flat_map(|s| s.scopes.iter())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let doc = serde_json::json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks.json"),
        // The MCP SDKs refuse metadata without these two; the endpoint explains itself.
        "authorization_endpoint": format!("{issuer}/authorize"),
        "response_types_supported": ["code"],
        "grant_types_supported": [GRANT_CLIENT_CREDENTIALS, GRANT_JWT_BEARER, GRANT_TOKEN_EXCHANGE],
        "token_endpoint_auth_signing_alg_values_supported": algs,
        "scopes_supported": scopes,
        // RFC 7662 and RFC 7009, for MCP servers with keys in the policy (and agents, to revoke).
        "introspection_endpoint": format!("{issuer}/introspect"),
        "introspection_endpoint_auth_methods_supported": ["private_key_jwt"],
        "introspection_endpoint_auth_signing_alg_values_supported": algs,
        "revocation_endpoint": format!("{issuer}/revoke"),
        "revocation_endpoint_auth_methods_supported": ["private_key_jwt"],
        "revocation_endpoint_auth_signing_alg_values_supported": algs,
        // MCP enterprise-managed authorization: ID-JAGs are redeemed with the jwt-bearer grant.
        "authorization_grant_profiles_supported": ["urn:ietf:params:oauth:grant-profile:id-jag"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
    });
    web::Bytes::from(doc.to_string())
}

fn json(body: &web::Bytes, cache: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, cache))
        .content_type("application/json")
        .body(body.clone())
}

pub(crate) async fn metadata(state: web::Data<AppState>) -> HttpResponse {
    json(&state.current.load().metadata, "public, max-age=300")
}

pub(crate) async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    json(&state.current.load().jwks, "public, max-age=300")
}

/// There is no interactive authorization here. RFC 6749 §4.1.2.1: with no registered
/// redirect URI we must not redirect, so the error goes to the caller directly.
pub(crate) async fn authorize() -> HttpResponse {
    json_error(
        &OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "agent-sts issues tokens to non-interactive clients only (client_credentials with private_key_jwt, jwt-bearer, token-exchange); there is no authorization code flow",
        ),
        None,
    )
}
