//! `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693).
//!
//! The authenticated agent is the actor: by client assertion, by an `actor_token` that is
//! its own assertion, or (when the subject is the agent's own assertion) by that assertion.
//! The subject is, for now, either
//! * an access token this broker issued (`access_token` or `jwt` type, `typ: at+jwt`): the
//!   agent it was issued to re-scopes it for another server it may reach; scopes and
//!   lifetime never exceed the subject token's; or
//! * the agent's own assertion (`jwt` type).
//!
//! Per RFC 8693 §2.2.2 an invalid or unacceptable `subject_token`/`actor_token` is
//! `invalid_request`.

use crate::broker::{Broker, ExchangeContext};
use crate::client_auth::{Presented, Role, TypRule};
use crate::mint::Act;
use crate::policy::Agent;
use crate::protocol::{ClientAssertion, OAuthError, ScopeSet, TokenRequest, TokenType, TypedToken};

const ISSUED: &str = "urn:ietf:params:oauth:token-type:access_token";

pub(crate) async fn token_exchange<'b>(
    broker: &'b Broker,
    req: &TokenRequest,
    subject: &TypedToken,
    actor_token: Option<&TypedToken>,
    requested: Option<TokenType>,
    now: i64,
) -> Result<ExchangeContext<'b>, OAuthError> {
    // RFC 8693 §2.1 requested_token_type: we issue access tokens (JWT) only.
    if !matches!(requested, None | Some(TokenType::AccessToken) | Some(TokenType::Jwt)) {
        return Err(OAuthError::invalid_request(
            "requested_token_type: this broker issues access tokens only",
        ));
    }

    // The actor: client authentication and/or actor_token, which must agree.
    let client = broker.authenticate_client(req, now).await?;
    let from_actor_token = match actor_token {
        None => None,
        Some(t) if t.token_type == TokenType::Jwt => {
            let a = ClientAssertion(t.token.clone());
            Some(broker.verify_assertion(&a, None, Role::ActorToken, now).await?.agent)
        }
        Some(_) => {
            return Err(OAuthError::invalid_request(
                "actor_token must be the agent's own assertion (urn:ietf:params:oauth:token-type:jwt)",
            ))
        }
    };
    let actor = match (client, from_actor_token) {
        (Some(c), Some(a)) if c.id != a.id => {
            return Err(OAuthError::invalid_request(
                "actor_token names another agent than the authenticated client",
            ))
        }
        (c, a) => c.or(a),
    };

    // Which kind of subject: by its (not yet verified) iss, which each path then checks; it
    // is parsed once, here.
    let (jwt, trusted_typ) = (TokenType::Jwt, TypRule::ISSUED_TOKEN);
    let presented = Presented::parse(&subject.token);
    match (subject_kind(broker, &presented), subject.token_type) {
        (Subject::Ours, TokenType::AccessToken | TokenType::Jwt) | (Subject::Unparsed, TokenType::AccessToken) => {
            exchange_own_token(broker, &subject.token, actor, now).await
        }
        (Subject::Trusted, TokenType::Jwt | TokenType::IdToken) if actor.is_none() => {
            let typ = if subject.token_type == jwt { trusted_typ } else { TypRule::ID_TOKEN };
            crate::grants::federated(broker, None, presented, Role::SubjectToken, typ, Some(ISSUED), now).await
        }
        (Subject::Trusted, TokenType::AccessToken | TokenType::Jwt | TokenType::IdToken) => match actor {
            Some(actor) => crate::grants::on_behalf_of(broker, presented, subject.token_type, actor, now).await,
            None => Err(OAuthError::invalid_request(
                "subject_token: a trusted issuer's access token needs an actor (client authentication or actor_token): an agent acting on behalf of its subject",
            )),
        },
        (Subject::Agent | Subject::Unparsed, TokenType::Jwt) => {
            let subject_agent =
                broker.verify_presented_assertion(presented, None, Role::SubjectToken, now).await?.agent;
            if actor.is_some_and(|act| act.id != subject_agent.id) {
                return Err(OAuthError::invalid_request(
                    "the subject assertion names another agent than the actor; delegation between agents is not allowed",
                ));
            }
            Ok(ExchangeContext {
                agent: subject_agent,
                sub: subject_agent.id.clone(),
                act: Some(Act { sub: subject_agent.id.clone(), act: None }),
                ceiling_scopes: None,
                default_request: None,
                ceiling_exp: None,
                issued_token_type: Some(ISSUED),
                issuer: None,
                rule: None,
                entitlement: broker.own_entitlement(subject_agent),
            })
        }
        (Subject::Unknown, _) => Err(OAuthError::invalid_request(
            "subject_token: iss is not this broker, a trusted issuer, or a registered agent",
        )),
        (kind, ty) => Err(OAuthError::invalid_request(format!(
            "subject_token_type {} does not fit a subject_token from {}",
            ty.urn(),
            kind.describe()
        ))),
    }
}

/// Where a subject token comes from, by its unverified `iss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    /// This broker (one of our access tokens).
    Ours,
    /// A trusted `[[issuer]]` (a platform's or an identity provider's token).
    Trusted,
    /// A registered agent (its own assertion).
    Agent,
    Unknown,
    /// Not a JWT we can read: the path its declared type leads to reports why.
    Unparsed,
}

impl Subject {
    fn describe(self) -> &'static str {
        match self {
            Subject::Ours => "this broker (use access_token or jwt)",
            Subject::Trusted => "a trusted issuer (use jwt or id_token, or access_token with an actor)",
            Subject::Agent => "an agent (use jwt)",
            Subject::Unknown => "an unknown issuer",
            Subject::Unparsed => "nowhere readable",
        }
    }
}

fn subject_kind(broker: &Broker, presented: &Presented<'_>) -> Subject {
    if !presented.parsed() {
        return Subject::Unparsed;
    }
    match presented.iss() {
        Some(iss) if iss == broker.tokens.issuer() => Subject::Ours,
        Some(iss) if broker.policy.issuer_by_iss(iss).is_some() => Subject::Trusted,
        Some(iss) if broker.policy.agent(iss).is_none() => Subject::Unknown,
        _ => Subject::Agent,
    }
}

/// A token of this broker, exchanged by the agent it was issued to (re-scoping it for
/// another server it may reach) or by the operator of its audience (carrying it one hop
/// further, for the same subject). `sub` stays; `act` nests with the new actor outermost
/// (RFC 8693 section 4.1) and is never dropped or rewritten; the chain is capped by
/// `[chains] max_actors`; scopes are capped by the subject's entitlement on the new server,
/// the actor's allowance there, the subject token's own scopes and the request; `exp` by the
/// subject token's.
async fn exchange_own_token<'b>(
    broker: &'b Broker,
    raw: &str,
    actor: Option<&'b Agent>,
    now: i64,
) -> Result<ExchangeContext<'b>, OAuthError> {
    let claims = broker
        .tokens
        .verify_own(raw, now)
        .map_err(|e| OAuthError::invalid_request(format!("subject_token: {e}")))?;
    // RFC 7009: a revoked token is not exchanged for a new one.
    broker.check_not_revoked(&claims.jti).await?;
    let actor = actor.ok_or_else(|| {
        OAuthError::invalid_client(
            "exchanging an access token needs the agent's client authentication (RFC 7523 section 2.2)",
        )
    })?;
    let policy = &broker.policy;
    if !policy.may_exchange(&actor.id, &claims.client_id, &claims.aud) {
        return Err(OAuthError::invalid_request(format!(
            "subject_token: only the agent it was issued to ('{}'), or the operator of its audience, may exchange it",
            claims.client_id
        )));
    }
    // What the subject may have, from the token; fail closed when the policy no longer has it.
    let entitlement = match &claims.entitlement {
        Some(e) => policy.entitlement_from_claim(e).ok_or_else(|| {
            OAuthError::invalid_request(format!(
                "subject_token: its entitlement '{e}' is no longer in the policy"
            ))
        })?,
        // A token from before entitlements were recorded: an agent's own token only.
        None if claims.act.is_none() && claims.sub == claims.client_id => {
            policy.agent_index(&claims.client_id).map(crate::policy::Entitlement::Agent).ok_or_else(|| {
                OAuthError::invalid_request("subject_token: its agent is no longer in the policy")
            })?
        }
        None => return Err(OAuthError::invalid_request("subject_token: records no entitlement")),
    };
    let ceiling = ScopeSet::parse(&claims.scope)
        .map_err(|_| OAuthError::invalid_request("subject_token: its scope is malformed"))?;
    let act = Act::nest(claims.act, &actor.id);
    policy.check_chain(&act).map_err(OAuthError::invalid_request)?;
    Ok(ExchangeContext {
        agent: actor,
        sub: claims.sub,
        act: Some(act),
        ceiling_scopes: Some(ceiling),
        default_request: None,
        ceiling_exp: Some(claims.exp),
        issued_token_type: Some(ISSUED),
        issuer: None,
        rule: None,
        entitlement,
    })
}
