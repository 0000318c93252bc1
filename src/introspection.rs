//! Token introspection (RFC 7662) and revocation (RFC 7009) for tokens this broker issued.
//!
//! Callers authenticate like agents do at the token endpoint, with `private_key_jwt`
//! (RFC 7523 section 2.2) through the same checklist: an MCP server with its own key
//! (`keys` on its `[[server]]`), for introspection and revocation; an agent, for revoking
//! the tokens issued to it. A server sees only tokens whose `aud` is its own resource: any
//! other token is `active: false` to it, as are expired, revoked and unknown tokens and the
//! tokens of an agent the policy disables or removes (the kill switch, also for every agent
//! in a delegated token's `act` chain).

use crate::broker::Broker;
use crate::client_auth::{check, AuthError, Expect, JwtError, Role, TypRule};
use crate::policy::{Agent, Server};
use crate::protocol::{OAuthError, MAX_TOKEN_LEN};
use crate::replay::Spend;
use crate::telemetry::SPAN_TARGET;
use serde_json::{Map, Value};
use tracing::Instrument;

const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The form of `/introspect` and `/revoke` (RFC 7662 section 2.1, RFC 7009 section 2.1):
/// parameters appear at most once (RFC 6749 section 3.2); unknown ones are ignored.
#[derive(Debug, Default)]
pub struct EndpointForm {
    pub token: Option<String>,
    pub token_type_hint: Option<String>,
    pub client_id: Option<String>,
    pub client_assertion_type: Option<String>,
    pub client_assertion: Option<String>,
}

impl EndpointForm {
    pub fn parse(body: &[u8]) -> Result<EndpointForm, OAuthError> {
        let mut f = EndpointForm::default();
        for (k, v) in form_urlencoded::parse(body) {
            let slot = match k.as_ref() {
                "token" => &mut f.token,
                "token_type_hint" => &mut f.token_type_hint,
                "client_id" => &mut f.client_id,
                "client_assertion_type" => &mut f.client_assertion_type,
                "client_assertion" => &mut f.client_assertion,
                _ => continue,
            };
            if slot.is_some() {
                return Err(OAuthError::invalid_request(format!(
                    "parameter '{k}' appears more than once (RFC 6749 section 3.2)"
                )));
            }
            if v.len() > MAX_TOKEN_LEN {
                return Err(OAuthError::invalid_request(format!("parameter '{k}' is too long")));
            }
            *slot = Some(v.into_owned());
        }
        Ok(f)
    }
}

/// Who called.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'p> {
    Server(&'p Server),
    Agent(&'p Agent),
}

impl Caller<'_> {
    pub fn id(&self) -> &str {
        match self {
            Caller::Server(s) => &s.id,
            Caller::Agent(a) => &a.id,
        }
    }
}

/// An introspection answer, with what the audit event records.
#[derive(Debug)]
pub struct Introspection {
    /// The RFC 7662 section 2.2 response.
    pub body: Value,
    pub active: bool,
    pub caller: String,
    /// Known when the token verified (even if it is inactive for this caller).
    pub jti: Option<String>,
    pub sub: Option<String>,
    pub client_id: Option<String>,
    pub why_inactive: Option<&'static str>,
}

/// A revocation's outcome (the answer is 200 either way, RFC 7009 section 2.2).
#[derive(Debug)]
pub struct Revocation {
    pub caller: String,
    /// The revoked token's `jti`, or `None` when the token was not a valid token of ours.
    pub jti: Option<String>,
    pub exp: Option<i64>,
}

impl Broker {
    /// RFC 7523 section 2.2 client authentication for `/introspect` (servers) and `/revoke`
    /// (servers and agents): the checklist, `sub` = `iss`, then the `jti` spent.
    async fn authenticate_caller(
        &self,
        form: &EndpointForm,
        agents_too: bool,
        now: i64,
    ) -> Result<Caller<'_>, OAuthError> {
        let raw = form.client_assertion.as_deref().ok_or_else(|| {
            OAuthError::invalid_client(
                "client authentication is required: send client_assertion (private_key_jwt)",
            )
        })?;
        if form.client_assertion_type.as_deref() != Some(JWT_BEARER_ASSERTION) {
            return Err(OAuthError::invalid_client(format!(
                "client_assertion_type must be '{JWT_BEARER_ASSERTION}'"
            )));
        }
        let audiences: Vec<&str> = self.rules.audiences.iter().map(String::as_str).collect();
        let expect = Expect {
            typ: TypRule::ASSERTION,
            audiences: Some(&audiences),
            max_lifetime_secs: Some(self.rules.max_lifetime_secs),
            max_age_secs: None,
            require_jti: true,
            skew: self.rules.skew,
        };
        let policy = &self.policy;
        let client_id = form.client_id.as_deref();
        let refused = |e: AuthError| e.to_oauth(Role::ClientAuth);
        let checked = check(raw, &expect, now, |header, claims| {
            let iss = claims.iss().unwrap_or_default();
            if client_id.is_some_and(|c| c != iss) {
                return Err(JwtError::ClientIdMismatch);
            }
            if agents_too {
                if let Some(agent) = policy.agent(iss) {
                    if agent.disabled {
                        return Err(JwtError::Disabled);
                    }
                    return Ok((Caller::Agent(agent), agent.key_for(header.kid.as_deref(), header.alg)?));
                }
            }
            match policy.server(iss) {
                Some(server) if !server.keys.is_empty() => {
                    Ok((Caller::Server(server), server.key_for(header.kid.as_deref(), header.alg)?))
                }
                _ => Err(JwtError::UnknownAgent),
            }
        })
        .map_err(|e| refused(e.into()))?;
        if checked.claims.sub() != checked.claims.iss() {
            return Err(refused(JwtError::SubMismatch.into()));
        }
        let namespace = match checked.who {
            Caller::Agent(a) => a.id.clone(),
            Caller::Server(s) => format!("server:{}", s.id),
        };
        let jti = checked.claims.jti().unwrap_or_default();
        let span = tracing::info_span!(target: SPAN_TARGET, "replay.spend", backend = self.replay.kind());
        let spent =
            crate::client_auth::spend(&*self.replay, &namespace, jti, &checked, self.rules.skew, true);
        match spent.instrument(span).await {
            Ok(Spend::Fresh) => Ok(checked.who),
            Ok(Spend::Replayed) => {
                self.shared.metrics.replay_refused();
                Err(refused(AuthError::Replayed))
            }
            Err(e) => Err(refused(AuthError::Store(e))),
        }
    }

    /// RFC 7662: is this token active, and what does it say? Only for the server it was
    /// issued to (its `aud`).
    pub async fn introspect(&self, form: &EndpointForm) -> Result<Introspection, OAuthError> {
        let now = self.clock.now_secs();
        let caller = self.authenticate_caller(form, false, now).await?;
        let Caller::Server(server) = caller else {
            return Err(OAuthError::invalid_client("only an MCP server may introspect tokens"));
        };
        let raw = form.token.as_deref().ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        let mut out = Introspection {
            body: serde_json::json!({ "active": false }),
            active: false,
            caller: server.id.clone(),
            jti: None,
            sub: None,
            client_id: None,
            why_inactive: None,
        };
        let claims = match self.tokens.verify_own(raw, now) {
            Ok(c) => c,
            Err(_) => {
                out.why_inactive = Some("not a valid, unexpired token of this broker");
                return Ok(out);
            }
        };
        out.jti = Some(claims.jti.clone());
        out.sub = Some(claims.sub.clone());
        out.client_id = Some(claims.client_id.clone());
        if claims.aud != server.resource {
            out.why_inactive = Some("issued for another server");
            return Ok(out);
        }
        // The kill switch: the client, and every agent in a delegation chain, must still be
        // enabled in the policy now serving.
        let mut agents = vec![claims.client_id.as_str()];
        let mut act = claims.act.as_ref();
        while let Some(a) = act {
            agents.push(a.sub.as_str());
            act = a.act.as_deref();
        }
        let disabled = |id: &str| self.policy.agent(id).is_some_and(|a| a.disabled);
        if self.policy.agent(&claims.client_id).is_none() || agents.iter().any(|id| disabled(id)) {
            out.why_inactive = Some("its agent is disabled or no longer in the policy");
            return Ok(out);
        }
        match self.shared.revocations.is_revoked(&claims.jti).await {
            Ok(false) => {}
            Ok(true) => {
                out.why_inactive = Some("revoked");
                return Ok(out);
            }
            Err(e) => {
                tracing::warn!(error = %e, "revocation store unavailable");
                return Err(OAuthError::unavailable("the revocation store is unavailable; retry shortly"));
            }
        }
        // RFC 7662 section 2.2, with the act claim (RFC 8693 section 4.1) as issued.
        let mut body = Map::new();
        body.insert("active".into(), Value::Bool(true));
        body.insert("iss".into(), Value::String(claims.iss.clone()));
        body.insert("sub".into(), Value::String(claims.sub.clone()));
        body.insert("aud".into(), Value::String(claims.aud.clone()));
        body.insert("client_id".into(), Value::String(claims.client_id.clone()));
        body.insert("scope".into(), Value::String(claims.scope.clone()));
        body.insert("token_type".into(), Value::String("Bearer".into()));
        body.insert("iat".into(), Value::from(claims.iat));
        body.insert("exp".into(), Value::from(claims.exp));
        body.insert("jti".into(), Value::String(claims.jti.clone()));
        if let Some(act) = raw_claim(raw, "act") {
            body.insert("act".into(), act);
        }
        out.body = Value::Object(body);
        out.active = true;
        Ok(out)
    }

    /// RFC 7009: revoke a token of ours. The agent it was issued to, or the server it is
    /// for, may revoke it; a token that is not ours (or has expired) is answered the same
    /// as a revoked one (section 2.2).
    pub async fn revoke(&self, form: &EndpointForm) -> Result<Revocation, OAuthError> {
        let now = self.clock.now_secs();
        let caller = self.authenticate_caller(form, true, now).await?;
        let raw = form.token.as_deref().ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        let mut out = Revocation { caller: caller.id().to_string(), jti: None, exp: None };
        let Ok(claims) = self.tokens.verify_own(raw, now) else { return Ok(out) };
        let may = match caller {
            Caller::Agent(a) => a.id == claims.client_id,
            Caller::Server(s) => s.resource == claims.aud,
        };
        if !may {
            // RFC 7009 section 2.1: the token must have been issued to the client asking.
            return Err(OAuthError::new(
                crate::protocol::ErrorCode::UnauthorizedClient,
                "this client may revoke only the tokens issued to it or for its own resource",
            ));
        }
        if let Err(e) = self.shared.revocations.revoke(&claims.jti, claims.exp).await {
            tracing::warn!(error = %e, "revocation store unavailable");
            return Err(OAuthError::unavailable("the revocation store is unavailable; retry shortly"));
        }
        self.shared.metrics.revocation();
        out.jti = Some(claims.jti);
        out.exp = Some(claims.exp);
        Ok(out)
    }
}

/// One claim of a JWS's payload as JSON (the token has been verified by the caller).
fn raw_claim(raw: &str, name: &str) -> Option<Value> {
    crate::crypto::CompactJws::parse(raw, MAX_TOKEN_LEN).ok()?.payload.get(name).cloned()
}
