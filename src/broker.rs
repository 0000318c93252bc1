//! The broker: one token request in, one token (or one OAuth error) out. No HTTP here; the
//! handler in `http/` and the in-process benchmarks both call [`Broker::exchange`].

use crate::client_auth::{
    self, AssertionRules, IssuedRules, IssuedToken, Presented, Role, TypRule, VerifiedAssertion,
};
use crate::clock::SharedClock;
use crate::issuers::Issuers;
use crate::mint::{Act, MintSpec, TokenIssuer};
use crate::policy::{decide, Agent, Decision, Entitlement, Lifetimes, Policy};
use crate::protocol::{ClientAssertion, OAuthError, ScopeSet, TokenRequest, TokenResponse};
use crate::ratelimit::{RateLimiter, Verdict};
use crate::replay::{AnyReplayStore, AssertionTimes, Readiness, ReplayError, ReplayKey, ReplayStore, Spend};
use crate::revocation::Revocations;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::{audit, SPAN_TARGET};
use std::sync::Arc;
use tracing::Instrument;

/// One policy snapshot with its keys. A reload builds a new `Broker` and swaps it in
/// (`crate::reload`); a request keeps the `Arc<Broker>` it started with until it ends.
pub struct Broker {
    pub policy: Arc<Policy>,
    pub tokens: TokenIssuer,
    pub replay: Arc<AnyReplayStore>,
    /// Trusted issuers' keys (`[[issuer]]`), fetched and cached; one registry per process,
    /// reconciled with each reloaded policy.
    pub issuers: Arc<Issuers>,
    pub clock: SharedClock,
    pub rules: AssertionRules,
    pub lifetimes: Lifetimes,
    /// What outlives a reload: metrics (and the operational stores).
    pub shared: Arc<Shared>,
}

/// State shared by every policy snapshot of one process.
pub struct Shared {
    pub metrics: Metrics,
    /// Revoked token ids (RFC 7009), in the replay store's backend.
    pub revocations: Revocations,
    /// Per-agent rate limits, in the replay store's backend.
    pub limiter: RateLimiter,
}

impl Shared {
    pub fn new(metrics_enabled: bool, replay: Arc<AnyReplayStore>, clock: SharedClock) -> Shared {
        Shared {
            metrics: Metrics::new(metrics_enabled),
            revocations: Revocations::new(replay.clone(), clock.clone()),
            limiter: RateLimiter::new(replay, clock),
        }
    }
}

/// The replay store as the token path sees it: each spend in a span, timed and counted.
struct Instrumented<'a> {
    store: &'a AnyReplayStore,
    metrics: &'a Metrics,
}

impl ReplayStore for Instrumented<'_> {
    async fn spend(
        &self,
        key: &ReplayKey,
        expires_at_ms: i64,
        times: &AssertionTimes,
    ) -> Result<Spend, ReplayError> {
        let span = tracing::info_span!(target: SPAN_TARGET, "replay.spend", backend = self.store.kind());
        let started = std::time::Instant::now();
        let r = self.store.spend(key, expires_at_ms, times).instrument(span).await;
        self.metrics.replay_call(started.elapsed(), r.is_err());
        if let Err(e) = &r {
            log_store_failure(e);
        }
        r
    }

    async fn readiness(&self) -> Result<Readiness, ReplayError> {
        self.store.readiness().await
    }
}

/// The cause of a failed spend, for the operator (the client's 503 says only what it can do):
/// at WARN, at most once a second per process so that an outage does not flood the log (the
/// metrics count every failure). A lost record is logged where it is found, once per loss.
fn log_store_failure(e: &ReplayError) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    static LAST: AtomicU64 = AtomicU64::new(u64::MAX);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    if matches!(e, ReplayError::RecordLost { .. }) {
        return;
    }
    let second = START.get_or_init(std::time::Instant::now).elapsed().as_secs();
    if LAST.swap(second, Ordering::Relaxed) == second {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
    tracing::warn!(error = %e, suppressed, "replay spend failed; the request was refused (503)");
}

/// A token issued, with what the audit log records about it (never the token itself).
#[derive(Debug)]
pub struct Issued {
    pub response: TokenResponse,
    pub client_id: String,
    pub sub: String,
    pub aud: String,
    pub jti: String,
    /// The trusted issuer (policy id) whose token was presented, if any.
    pub issuer: Option<String>,
    /// The federation or delegation rule that mapped it.
    pub rule: Option<String>,
    /// The server's policy id, the token's `exp` and `act`.
    pub server: String,
    pub exp: i64,
    pub act: Option<Act>,
    /// The actor chain, current actor first (`act`, RFC 8693 section 4.1), for the audit.
    pub actors: Vec<String>,
}

/// What a grant handler hands to the policy decision and the mint.
pub(crate) struct ExchangeContext<'p> {
    /// The agent whose allowance applies: the client, or the actor of an exchange.
    pub agent: &'p Agent,
    pub sub: String,
    pub act: Option<Act>,
    /// For exchanges: the result is never wider or longer-lived than the subject token.
    pub ceiling_scopes: Option<ScopeSet>,
    /// What counts as requested when the request names no scope (an ID-JAG: its own scope);
    /// `None`: the agent's default scopes.
    pub default_request: Option<ScopeSet>,
    pub ceiling_exp: Option<i64>,
    /// `issued_token_type` (RFC 8693 §2.2.1), for exchanges only.
    pub issued_token_type: Option<&'static str>,
    /// For the audit event: the trusted issuer (policy id) and the rule that mapped its token.
    pub issuer: Option<String>,
    pub rule: Option<String>,
    /// What the subject may have by policy, recorded in the issued token (claim
    /// `entitlement`) so that any later exchange is capped by it; when it is not the agent's
    /// own, it caps this decision too.
    pub entitlement: Entitlement,
}

impl Broker {
    /// Run one token request through authentication, the grant, the policy and the mint.
    pub async fn exchange(&self, req: &TokenRequest) -> Result<Issued, OAuthError> {
        use crate::protocol::GrantRequest as G;
        let now = self.clock.now_secs();
        let ctx = match &req.grant {
            G::ClientCredentials => crate::grants::client_credentials(self, req, now).await?,
            G::JwtBearer { assertion } => crate::grants::jwt_bearer(self, req, assertion, now).await?,
            G::TokenExchange { subject, actor, requested_token_type } => {
                crate::grants::token_exchange(self, req, subject, actor.as_ref(), *requested_token_type, now)
                    .await?
            }
        };
        self.rate_limit(ctx.agent).await?;
        self.issue(req, ctx, now)
    }

    /// The agent's rate limit, if the policy sets one. Called once per request, after every
    /// credential in it has verified (signature, claims, replay): only an authenticated
    /// request spends the agent's budget. 429 with `Retry-After` when it is spent; the
    /// store unreachable is 503, like the replay spend.
    async fn rate_limit(&self, agent: &Agent) -> Result<(), OAuthError> {
        let Some(limit) = agent.rate_limit else { return Ok(()) };
        let span = tracing::info_span!(target: SPAN_TARGET, "rate_limit.check");
        match self.shared.limiter.check(&agent.id, limit).instrument(span).await {
            Ok(Verdict::Allowed) => Ok(()),
            Ok(Verdict::Limited { retry_after_ms }) => {
                self.shared.metrics.rate_limited();
                Err(OAuthError::rate_limited(retry_after_ms.div_ceil(1000)))
            }
            Err(e) => {
                tracing::warn!(error = %e, "rate limit store unavailable");
                Err(OAuthError::unavailable("the rate limit store is unavailable; retry shortly"))
            }
        }
    }

    /// Whether the token with this `jti` was revoked (RFC 7009). The store unreachable is
    /// 503: a token that might be revoked is not accepted.
    pub(crate) async fn check_not_revoked(&self, jti: &str) -> Result<(), OAuthError> {
        match self.shared.revocations.is_revoked(jti).await {
            Ok(false) => Ok(()),
            Ok(true) => Err(OAuthError::invalid_request("subject_token: has been revoked")),
            Err(e) => {
                tracing::warn!(error = %e, "revocation store unavailable");
                Err(OAuthError::unavailable("the revocation store is unavailable; retry shortly"))
            }
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Verify an agent assertion in the given role; the `jti` is spent on success.
    pub(crate) async fn verify_assertion(
        &self,
        assertion: &ClientAssertion,
        client_id: Option<&str>,
        role: Role,
        now: i64,
    ) -> Result<VerifiedAssertion<'_>, OAuthError> {
        self.verify_presented_assertion(Presented::parse(&assertion.0), client_id, role, now).await
    }

    /// As [`Broker::verify_assertion`], for a JWT a grant already parsed to look at.
    pub(crate) async fn verify_presented_assertion(
        &self,
        presented: Presented<'_>,
        client_id: Option<&str>,
        role: Role,
        now: i64,
    ) -> Result<VerifiedAssertion<'_>, OAuthError> {
        let store = Instrumented { store: &self.replay, metrics: &self.shared.metrics };
        let span = tracing::info_span!(target: SPAN_TARGET, "assertion.verify", role = role.parameter());
        let verified = client_auth::verify(presented, client_id, &self.policy, &self.rules, &store, now)
            .instrument(span)
            .await
            .map_err(|e| {
                if matches!(e, client_auth::AuthError::Replayed) {
                    self.shared.metrics.replay_refused();
                }
                tracing::debug!(role = role.parameter(), reason = %e, "assertion refused");
                e.to_oauth(role)
            })?;
        audit::note(|t| t.agent = Some(verified.agent.id.clone()));
        Ok(verified)
    }

    /// Verify a trusted issuer's token in the given role (single-use issuers: spent here).
    pub(crate) async fn verify_issued(
        &self,
        presented: Presented<'_>,
        typ: TypRule,
        role: Role,
        now: i64,
    ) -> Result<IssuedToken<'_>, OAuthError> {
        // An ID-JAG is always single use, with a jti, for this broker's issuer.
        let id_jag = typ == TypRule::ID_JAG;
        let rules =
            IssuedRules { typ, default_audience: self.tokens.issuer(), skew: self.rules.skew, id_jag };
        let store = Instrumented { store: &self.replay, metrics: &self.shared.metrics };
        let span = tracing::info_span!(target: SPAN_TARGET, "issued_token.verify", role = role.parameter());
        client_auth::verify_issued(presented, &self.policy, &self.issuers, &rules, &store, now)
            .instrument(span)
            .await
            .map_err(|e| {
                if matches!(e, client_auth::AuthError::Replayed) {
                    self.shared.metrics.replay_refused();
                }
                tracing::debug!(role = role.parameter(), reason = %e, "trusted issuer's token refused");
                e.to_oauth(role)
            })
    }

    /// Client authentication (RFC 7523 §2.2), when the request carries a client assertion.
    pub(crate) async fn authenticate_client(
        &self,
        req: &TokenRequest,
        now: i64,
    ) -> Result<Option<&Agent>, OAuthError> {
        match &req.client_assertion {
            None => Ok(None),
            Some(a) => Ok(Some(
                self.verify_assertion(a, req.client_id.as_deref(), Role::ClientAuth, now).await?.agent,
            )),
        }
    }

    /// The entitlement of an agent acting as itself.
    pub(crate) fn own_entitlement(&self, agent: &Agent) -> Entitlement {
        // The agent came from this policy, so its id is indexed.
        Entitlement::Agent(self.policy.agent_index(&agent.id).unwrap_or_default())
    }

    fn issue(&self, req: &TokenRequest, ctx: ExchangeContext<'_>, now: i64) -> Result<Issued, OAuthError> {
        let decision = Decision {
            agent: ctx.agent,
            resources: &req.resources,
            audiences: &req.audiences,
            requested: req.scope.as_ref().or(ctx.default_request.as_ref()),
            ceiling: ctx.ceiling_scopes.as_ref(),
            subject: match ctx.entitlement {
                Entitlement::Agent(a) if self.policy.agents[a].id == ctx.agent.id => None,
                other => Some(other),
            },
        };
        audit::note(|t| {
            if t.agent.as_deref() != Some(ctx.agent.id.as_str()) {
                t.agent = Some(ctx.agent.id.clone());
            }
        });
        let permit = tracing::info_span!(target: SPAN_TARGET, "policy.decide")
            .in_scope(|| decide(&self.policy, &decision, self.lifetimes))
            .map_err(|d| d.to_oauth())?;
        audit::note(|t| {
            t.server = Some(permit.server.id.clone());
            // A federation or delegation rule when one mapped the token, else the agent's
            // allowance for the server.
            t.rule = Some(match &ctx.rule {
                Some(r) => r.clone(),
                None => format!("agent:{}/allow:{}", ctx.agent.id, permit.server.id),
            });
        });
        let lifetime = i64::try_from(permit.lifetime_secs).unwrap_or(i64::MAX);
        let exp =
            ctx.ceiling_exp.map_or(now.saturating_add(lifetime), |c| c.min(now.saturating_add(lifetime)));
        if exp <= now {
            return Err(OAuthError::invalid_request(
                "the subject_token expires now; nothing is left to exchange",
            ));
        }
        let entitlement = self.policy.entitlement_claim(ctx.entitlement);
        let spec = MintSpec {
            entitlement: Some(&entitlement),
            sub: &ctx.sub,
            aud: &permit.server.resource,
            client_id: &ctx.agent.id,
            scopes: &permit.scopes,
            iat: now,
            exp,
            act: ctx.act.as_ref(),
        };
        let minted = tracing::info_span!(target: SPAN_TARGET, "token.sign", alg = self.tokens.alg().as_str())
            .in_scope(|| self.tokens.mint(&spec))
            .map_err(|e| {
                tracing::error!(error = %e, "signing failed");
                OAuthError::server_error()
            })?;
        self.shared.metrics.token_issued(&permit.server.id);
        Ok(Issued {
            response: TokenResponse {
                access_token: minted.token,
                token_type: "Bearer",
                expires_in: exp - now,
                scope: permit.scopes.to_string(),
                issued_token_type: ctx.issued_token_type,
            },
            client_id: ctx.agent.id.clone(),
            sub: ctx.sub,
            aud: permit.server.resource.clone(),
            jti: minted.jti,
            issuer: ctx.issuer,
            rule: ctx.rule,
            server: permit.server.id.clone(),
            exp,
            actors: ctx.act.as_ref().map(Act::chain).unwrap_or_default(),
            act: ctx.act,
        })
    }

    /// Whether the replay store answers (for `/readyz`).
    pub async fn ready(&self) -> bool {
        self.replay.ping().await.is_ok()
    }
}
