//! The proxy's one access token: obtained from the broker with the agent's key, kept in
//! memory only, renewed at 80 % of its life or at once when the upstream calls it invalid,
//! one renewal at a time.

use crate::agent::{self, AccessToken, AgentKey, BrokerMetadata, TokenError, TokenRequest};
use crate::clock::SharedClock;
use std::sync::Arc;

/// After a failed renewal, requests are answered from what is held (or refused) for this
/// long before the broker is asked again.
const RETRY_AFTER_MS: i64 = 1000;
/// A held token this close to its expiry (or a tenth of its life, if less) is not sent any
/// more: it could expire on the way.
const EXPIRY_MARGIN_MS: i64 = 5000;
/// Assumed lifetime when a token response carries no `expires_in`.
const DEFAULT_LIFETIME_SECS: u64 = 60;

/// Why there is no token to send: the broker's answer or the network error, for the 503.
#[derive(Debug, Clone)]
pub(crate) struct Unavailable {
    pub reason: String,
    pub retry_after_secs: u64,
}

struct Held {
    token: Arc<AccessToken>,
    renew_at_ms: i64,
    /// Its expiry less the margin.
    usable_until_ms: i64,
    /// The upstream answered `invalid_token` for it: renew before using it again.
    rejected: bool,
}

#[derive(Default)]
struct State {
    metadata: Option<BrokerMetadata>,
    held: Option<Held>,
    failed_at_ms: Option<(i64, String)>,
}

pub(crate) struct TokenCache {
    http: reqwest::Client,
    issuer: String,
    key: AgentKey,
    resource: String,
    scope: Option<String>,
    clock: SharedClock,
    /// Held across a renewal, so that concurrent requests wait for that one renewal.
    state: tokio::sync::Mutex<State>,
}

impl TokenCache {
    pub fn new(
        http: reqwest::Client,
        issuer: String,
        key: AgentKey,
        resource: String,
        scope: Option<String>,
        clock: SharedClock,
    ) -> Self {
        TokenCache {
            http,
            issuer,
            key,
            resource,
            scope,
            clock,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The token to send now: the held one until 80 % of its life, else a renewed one. While
    /// the broker can't be reached, a held token is still sent until close to its expiry.
    pub async fn current(&self) -> Result<Arc<AccessToken>, Unavailable> {
        let mut st = self.state.lock().await;
        let now = self.clock.now_ms();
        if let Some(h) = st.held.as_ref().filter(|h| !h.rejected && now < h.renew_at_ms) {
            return Ok(h.token.clone());
        }
        if let Some((at, reason)) = &st.failed_at_ms {
            if now < at + RETRY_AFTER_MS {
                let reason = reason.clone();
                return usable(&st, now).ok_or(Unavailable { reason, retry_after_secs: 1 });
            }
        }
        match self.renew(&mut st, now).await {
            Ok(held) => {
                let token = held.token.clone();
                st.held = Some(held);
                st.failed_at_ms = None;
                Ok(token)
            }
            Err(e) => {
                let reason = e.to_string();
                let fallback = usable(&st, now);
                tracing::warn!(
                    issuer = %self.issuer,
                    still_holding_a_valid_token = fallback.is_some(),
                    "agent-sts proxy: no new token from the broker: {reason}"
                );
                st.failed_at_ms = Some((now, reason.clone()));
                fallback.ok_or(Unavailable { reason, retry_after_secs: 1 })
            }
        }
    }

    /// The upstream refused `token` as invalid: the next [`TokenCache::current`] renews,
    /// unless another request has already replaced it.
    pub async fn reject(&self, token: &AccessToken) {
        let mut st = self.state.lock().await;
        if let Some(h) = st.held.as_mut().filter(|h| *h.token == *token) {
            h.rejected = true;
            st.failed_at_ms = None;
        }
    }

    async fn renew(&self, st: &mut State, now_ms: i64) -> Result<Held, TokenError> {
        if st.metadata.is_none() {
            st.metadata = Some(agent::discover(&self.http, &self.issuer).await?);
        }
        let Some(meta) = st.metadata.as_ref() else {
            return Err(TokenError::Config("no broker metadata".into()));
        };
        let req = TokenRequest { resource: &self.resource, scope: self.scope.as_deref() };
        let issued = agent::request_token(&self.http, meta, &self.key, now_ms.div_euclid(1000), req).await?;
        let life_ms = i64::try_from(issued.expires_in.unwrap_or(DEFAULT_LIFETIME_SECS).saturating_mul(1000))
            .unwrap_or(i64::MAX / 2);
        let claims = agent::token_claims(issued.access_token.secret());
        tracing::info!(
            jti = claims.as_ref().and_then(|c| c["jti"].as_str()).unwrap_or("?"),
            aud = %self.resource,
            scope = issued.scope.as_deref().unwrap_or(""),
            expires_in_secs = life_ms / 1000,
            "agent-sts proxy: token obtained from the broker"
        );
        Ok(Held {
            token: Arc::new(issued.access_token),
            renew_at_ms: now_ms + life_ms / 5 * 4,
            usable_until_ms: now_ms + life_ms - EXPIRY_MARGIN_MS.min(life_ms / 10),
            rejected: false,
        })
    }
}

/// The held token if it may still be sent: not refused by the upstream, not about to expire.
fn usable(st: &State, now_ms: i64) -> Option<Arc<AccessToken>> {
    st.held.as_ref().filter(|h| !h.rejected && now_ms < h.usable_until_ms).map(|h| h.token.clone())
}
