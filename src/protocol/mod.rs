//! RFC vocabulary: the typed token request, the token response, token-type URNs, and the
//! one error type that knows HTTP ([`OAuthError`], RFC 6749 §5.2).

mod error;
mod request;
mod response;
mod types;

pub use error::{description_text, is_description_char, ErrorCode, OAuthError};
pub use request::{ClientAssertion, GrantRequest, TokenRequest, TypedToken, MAX_TOKEN_LEN};
pub use response::TokenResponse;
pub use types::{
    ScopeSet, TokenType, ASSERTION_TYPE_JWT_BEARER, GRANT_CLIENT_CREDENTIALS, GRANT_JWT_BEARER,
    GRANT_TOKEN_EXCHANGE,
};
