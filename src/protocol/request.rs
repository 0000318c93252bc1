//! The token request (RFC 6749 §3.2, §4.4; RFC 7523 §2.1, §2.2; RFC 8693 §2.1; RFC 8707 §2),
//! parsed from the form body into a grant-tagged type. Nothing downstream sees the raw form.

use super::types::{
    ScopeSet, TokenType, ASSERTION_TYPE_JWT_BEARER, GRANT_CLIENT_CREDENTIALS, GRANT_JWT_BEARER,
    GRANT_TOKEN_EXCHANGE,
};
use super::OAuthError;
use std::fmt;

/// The largest JWT accepted in any form field (assertion, subject or actor token).
pub const MAX_TOKEN_LEN: usize = 8192;

/// A `client_assertion` (RFC 7523 §2.2). Its text never reaches a log line.
pub struct ClientAssertion(pub String);

impl fmt::Debug for ClientAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientAssertion([redacted])")
    }
}

/// A token with its declared type (RFC 8693 §2.1 `subject_token`/`actor_token`).
pub struct TypedToken {
    pub token: String,
    pub token_type: TokenType,
}

impl fmt::Debug for TypedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TypedToken({:?}, [redacted])", self.token_type)
    }
}

#[derive(Debug)]
pub enum GrantRequest {
    /// RFC 6749 §4.4 (client authentication required, RFC 7523 §2.2).
    ClientCredentials,
    /// RFC 7523 §2.1: the assertion is the grant.
    JwtBearer { assertion: ClientAssertion },
    /// RFC 8693 §2.1.
    TokenExchange { subject: TypedToken, actor: Option<TypedToken>, requested_token_type: Option<TokenType> },
}

impl GrantRequest {
    pub fn name(&self) -> &'static str {
        match self {
            GrantRequest::ClientCredentials => GRANT_CLIENT_CREDENTIALS,
            GrantRequest::JwtBearer { .. } => GRANT_JWT_BEARER,
            GrantRequest::TokenExchange { .. } => GRANT_TOKEN_EXCHANGE,
        }
    }
}

#[derive(Debug)]
pub struct TokenRequest {
    pub grant: GrantRequest,
    /// `client_assertion` with `client_assertion_type` jwt-bearer (RFC 7523 §2.2).
    pub client_assertion: Option<ClientAssertion>,
    /// `client_id`, when the client sends it (RFC 7521 §4.2: optional).
    pub client_id: Option<String>,
    /// `resource` values (RFC 8707 §2), in order.
    pub resources: Vec<String>,
    /// `audience` values (RFC 8693 §2.1), in order.
    pub audiences: Vec<String>,
    /// `scope`; `None` when absent or empty (RFC 6749 §3.1).
    pub scope: Option<ScopeSet>,
}

/// The parameters we read. Any other parameter is ignored (RFC 6749 §3.2).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Param {
    GrantType,
    ClientAssertionType,
    ClientAssertion,
    ClientId,
    ClientSecret,
    Assertion,
    Scope,
    Resource,
    Audience,
    SubjectToken,
    SubjectTokenType,
    ActorToken,
    ActorTokenType,
    RequestedTokenType,
}

const PARAMS: [(&str, Param); 14] = [
    ("grant_type", Param::GrantType),
    ("client_assertion_type", Param::ClientAssertionType),
    ("client_assertion", Param::ClientAssertion),
    ("client_id", Param::ClientId),
    ("client_secret", Param::ClientSecret),
    ("assertion", Param::Assertion),
    ("scope", Param::Scope),
    ("resource", Param::Resource),
    ("audience", Param::Audience),
    ("subject_token", Param::SubjectToken),
    ("subject_token_type", Param::SubjectTokenType),
    ("actor_token", Param::ActorToken),
    ("actor_token_type", Param::ActorTokenType),
    ("requested_token_type", Param::RequestedTokenType),
];

#[derive(Default)]
struct Form {
    single: [Option<String>; 14],
    resources: Vec<String>,
    audiences: Vec<String>,
}

impl Form {
    /// RFC 6749 §3.2: "Request and response parameters MUST NOT be included more than once."
    /// `resource` (RFC 8707 §2) and `audience` (RFC 8693 §2.1) may repeat by their own RFCs.
    fn parse(body: &[u8]) -> Result<Form, OAuthError> {
        let mut form = Form::default();
        for (name, value) in form_urlencoded::parse(body) {
            let Some(&(pname, param)) = PARAMS.iter().find(|(n, _)| *n == name) else {
                continue;
            };
            match param {
                Param::Resource => form.resources.push(value.into_owned()),
                Param::Audience => form.audiences.push(value.into_owned()),
                _ => {
                    let slot = &mut form.single[param as usize];
                    if slot.is_some() {
                        return Err(OAuthError::invalid_request(format!(
                            "parameter `{pname}` is repeated (RFC 6749 section 3.2)"
                        )));
                    }
                    *slot = Some(value.into_owned());
                }
            }
        }
        // RFC 6749 §3.1: parameters sent without a value are treated as omitted.
        form.resources.retain(|v| !v.is_empty());
        form.audiences.retain(|v| !v.is_empty());
        Ok(form)
    }

    fn take(&mut self, p: Param) -> Option<String> {
        self.single[p as usize].take().filter(|v| !v.is_empty())
    }
}

fn required(form: &mut Form, p: Param, name: &str, grant: &str) -> Result<String, OAuthError> {
    form.take(p)
        .ok_or_else(|| OAuthError::invalid_request(format!("`{name}` is required for grant_type {grant}")))
}

fn token_type(value: &str, name: &str) -> Result<TokenType, OAuthError> {
    TokenType::parse(value).ok_or_else(|| {
        OAuthError::invalid_request(format!(
            "`{name}` is not a token type this broker accepts (RFC 8693 section 3)"
        ))
    })
}

impl TokenRequest {
    /// Parse a form-encoded token request. `basic_auth` is true when the request carried an
    /// `Authorization: Basic` header, which this broker does not accept.
    pub fn parse(body: &[u8], basic_auth: bool) -> Result<TokenRequest, OAuthError> {
        let mut form = Form::parse(body)?;

        // Client authentication: private_key_jwt only (RFC 7523 §2.2).
        if basic_auth || form.take(Param::ClientSecret).is_some() {
            return Err(OAuthError::invalid_client(
                "client secrets are not accepted; authenticate with a client assertion (private_key_jwt, RFC 7523 section 2.2)",
            ));
        }
        let assertion_type = form.take(Param::ClientAssertionType);
        let client_assertion = match (assertion_type, form.take(Param::ClientAssertion)) {
            (None, None) => None,
            (Some(t), Some(a)) if t == ASSERTION_TYPE_JWT_BEARER => Some(ClientAssertion(a)),
            (Some(_), Some(_)) => {
                return Err(OAuthError::invalid_client(format!(
                    "client_assertion_type must be {ASSERTION_TYPE_JWT_BEARER} (RFC 7523 section 2.2)"
                )))
            }
            (Some(_), None) => {
                return Err(OAuthError::invalid_request("client_assertion_type without client_assertion"))
            }
            (None, Some(_)) => {
                return Err(OAuthError::invalid_request("client_assertion without client_assertion_type"))
            }
        };

        let scope = match form.take(Param::Scope) {
            None => None,
            Some(s) => {
                let set = ScopeSet::parse(&s).map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
                (!set.is_empty()).then_some(set)
            }
        };
        if form.resources.iter().any(|r| r.contains('#')) {
            return Err(OAuthError::invalid_target(
                "a resource must not contain a fragment (RFC 8707 section 2)",
            ));
        }

        let grant_type = form
            .take(Param::GrantType)
            .ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
        let grant = match grant_type.as_str() {
            GRANT_CLIENT_CREDENTIALS => GrantRequest::ClientCredentials,
            GRANT_JWT_BEARER => GrantRequest::JwtBearer {
                assertion: ClientAssertion(required(&mut form, Param::Assertion, "assertion", GRANT_JWT_BEARER)?),
            },
            GRANT_TOKEN_EXCHANGE => {
                let g = GRANT_TOKEN_EXCHANGE;
                let token = required(&mut form, Param::SubjectToken, "subject_token", g)?;
                let ty = required(&mut form, Param::SubjectTokenType, "subject_token_type", g)?;
                let subject = TypedToken { token, token_type: token_type(&ty, "subject_token_type")? };
                let actor = match (form.take(Param::ActorToken), form.take(Param::ActorTokenType)) {
                    (None, None) => None,
                    (Some(token), Some(ty)) => {
                        Some(TypedToken { token, token_type: token_type(&ty, "actor_token_type")? })
                    }
                    _ => {
                        return Err(OAuthError::invalid_request(
                            "actor_token and actor_token_type go together (RFC 8693 section 2.1)",
                        ))
                    }
                };
                let requested_token_type = match form.take(Param::RequestedTokenType) {
                    None => None,
                    Some(t) => Some(token_type(&t, "requested_token_type")?),
                };
                GrantRequest::TokenExchange { subject, actor, requested_token_type }
            }
            _ => {
                return Err(OAuthError::new(
                    super::ErrorCode::UnsupportedGrantType,
                    "supported grant types: client_credentials, urn:ietf:params:oauth:grant-type:jwt-bearer, urn:ietf:params:oauth:grant-type:token-exchange",
                ))
            }
        };

        Ok(TokenRequest {
            grant,
            client_assertion,
            client_id: form.take(Param::ClientId),
            resources: std::mem::take(&mut form.resources),
            audiences: std::mem::take(&mut form.audiences),
            scope,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    fn parse(body: &str) -> Result<TokenRequest, OAuthError> {
        TokenRequest::parse(body.as_bytes(), false)
    }

    const CC: &str = "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=a.b.c";

    #[test]
    fn parses_client_credentials() {
        let r =
            parse(&format!("{CC}&resource=https%3A%2F%2Fmcp.example%2F&scope=read%20write")).expect("valid");
        assert!(matches!(r.grant, GrantRequest::ClientCredentials));
        assert_eq!(r.client_assertion.expect("assertion").0, "a.b.c");
        assert_eq!(r.resources, vec!["https://mcp.example/"]);
        assert_eq!(r.scope.expect("scope").to_string(), "read write");
    }

    /// `GrantRequest::name` gives back the `grant_type` that was parsed (the fuzz target's
    /// round trip rebuilds forms with it).
    #[test]
    fn grant_name_is_the_parsed_grant_type() {
        let te = format!(
            "grant_type={}&subject_token=s.t.u&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt",
            GRANT_TOKEN_EXCHANGE
        );
        let jb = format!("grant_type={GRANT_JWT_BEARER}&assertion=a.b.c");
        for (body, grant) in [
            (CC, GRANT_CLIENT_CREDENTIALS),
            (jb.as_str(), GRANT_JWT_BEARER),
            (te.as_str(), GRANT_TOKEN_EXCHANGE),
        ] {
            assert_eq!(parse(body).expect("valid").grant.name(), grant);
        }
    }

    /// Assertions and tokens never reach a log line: a request's `Debug` shows where they
    /// were, redacted, never their text.
    #[test]
    fn debug_output_redacts_assertions_and_tokens() {
        let r = parse(&format!("{CC}&resource=https%3A%2F%2Fmcp.example%2F")).expect("valid");
        let shown = format!("{r:?}");
        assert!(shown.contains("ClientAssertion([redacted])") && !shown.contains("a.b.c"), "{shown}");
        let body = format!(
            "grant_type={GRANT_TOKEN_EXCHANGE}&subject_token=sub.ject.tok&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&actor_token=act.or.tok&actor_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt"
        );
        let shown = format!("{:?}", parse(&body).expect("valid"));
        assert_eq!(shown.matches("TypedToken(Jwt, [redacted])").count(), 2, "{shown}");
        assert!(!shown.contains("sub.ject.tok") && !shown.contains("act.or.tok"), "{shown}");
    }

    /// RFC 6749 §3.2: a repeated parameter is invalid_request.
    #[test]
    fn rfc6749_3_2_repeated_parameter_is_invalid_request() {
        let e = parse(&format!("{CC}&scope=a&scope=b")).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        let e = parse(&format!("{CC}&grant_type=client_credentials")).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
    }

    /// RFC 6749 §3.1: empty parameters count as omitted.
    #[test]
    fn empty_parameters_are_omitted() {
        let r = parse(&format!("{CC}&scope=&resource=")).expect("valid");
        assert!(r.scope.is_none());
        assert!(r.resources.is_empty());
    }

    #[test]
    fn unknown_grant_is_unsupported_grant_type() {
        let e = parse("grant_type=authorization_code&code=x").unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedGrantType);
        assert_eq!(parse("scope=a").unwrap_err().code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn client_secret_and_wrong_assertion_type_are_invalid_client() {
        assert_eq!(parse(&format!("{CC}&client_secret=s")).unwrap_err().code, ErrorCode::InvalidClient);
        let e =
            parse("grant_type=client_credentials&client_assertion_type=x&client_assertion=a").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidClient);
        assert_eq!(TokenRequest::parse(CC.as_bytes(), true).unwrap_err().code, ErrorCode::InvalidClient);
    }

    #[test]
    fn token_exchange_needs_subject_and_known_types() {
        let g = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange";
        assert_eq!(parse(g).unwrap_err().code, ErrorCode::InvalidRequest);
        let e = parse(&format!("{g}&subject_token=t&subject_token_type=urn:x")).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        let e = parse(&format!(
            "{g}&subject_token=t&subject_token_type=urn:ietf:params:oauth:token-type:jwt&actor_token=a"
        ))
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        let r = parse(&format!("{g}&subject_token=t&subject_token_type=urn:ietf:params:oauth:token-type:access_token&audience=docs&audience=x")).expect("valid");
        assert_eq!(r.audiences, vec!["docs", "x"]);
    }

    #[test]
    fn debug_redacts_tokens() {
        let r = parse(CC).expect("valid");
        assert!(!format!("{r:?}").contains("a.b.c"));
    }
}
