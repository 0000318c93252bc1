//! The loss window: which assertions to refuse after the replay record was lost.
//!
//! When the store tells us (through its generation marker) that everything it held before
//! time `C` may be gone, an assertion could have been spent before `C` only if the checklist
//! would have accepted it at some broker time `t <= C`. At `t` the checklist accepted only
//!
//! ```text
//! iat <= t + F,   nbf <= t + F,   exp - t <= L + F          (and exp >= t - P)
//! ```
//!
//! where `L` is the longest assertion lifetime, `F` the tolerance for `iat`/`nbf` in the future
//! (added to the lifetime cap) and `P` the leeway for an `exp` in the past. With whole seconds
//! and `Cs = floor(C / 1000)` (a spend at a millisecond before `C` ran at a second `<= Cs`),
//! an assertion spent before the loss has
//!
//! ```text
//! iat <= Cs + F,   nbf <= Cs + F,   exp <= Cs + L + F
//! ```
//!
//! So after a loss at `C` an assertion is accepted only if it proves it is newer:
//! `iat > Cs + F`, or `nbf > Cs + F`, or `exp > Cs + L + F`. Everything else is refused (503,
//! sign a new assertion). No assertion that could have been spent before `C` passes the
//! checklist after `Cs + L + F + P` (its `exp + P` has gone by), so the window closes then;
//! an assertion signed now (`iat` = now) is accepted from `Cs + F + 1` on.

/// The checklist's time tolerances, in seconds, as the broker enforces them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tolerances {
    /// `L`: how far ahead of now an assertion's `exp` may be, before the future tolerance.
    pub max_lifetime_secs: i64,
    /// `F`: how far in the future `iat` and `nbf` may be; also added to the lifetime cap.
    pub future_skew_secs: i64,
    /// `P`: how far in the past `exp` may be.
    pub past_skew_secs: i64,
}

/// The time claims of a verified assertion (JWT NumericDate, whole seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssertionTimes {
    pub iat: Option<i64>,
    pub nbf: Option<i64>,
    pub exp: i64,
    /// Whether the checklist capped this JWT's `exp - now` by the assertion lifetime `L` (an
    /// agent's assertion). A trusted issuer's token is not capped (a CI platform's token may
    /// live an hour): its `exp` proves nothing about when it was made, only `iat`/`nbf` can;
    /// and it may outlive the window of assertions, so it is judged against the loss for as
    /// long as it lives.
    pub lifetime_capped: bool,
}

/// A loss of the replay record at `lost_at_ms` (the marker's creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossWindow {
    pub lost_at_ms: i64,
    pub tolerances: Tolerances,
}

impl LossWindow {
    fn lost_at_secs(&self) -> i64 {
        self.lost_at_ms.div_euclid(1000)
    }

    /// Whether the checklist could have accepted (and so spent) this assertion before the loss.
    pub fn may_have_been_spent(&self, t: &AssertionTimes) -> bool {
        let c = self.lost_at_secs();
        let Tolerances { max_lifetime_secs: l, future_skew_secs: f, .. } = self.tolerances;
        let newer_iat = t.iat.is_some_and(|iat| iat > c.saturating_add(f));
        let newer_nbf = t.nbf.is_some_and(|nbf| nbf > c.saturating_add(f));
        let newer_exp = t.lifetime_capped && t.exp > c.saturating_add(l).saturating_add(f);
        !(newer_iat || newer_nbf || newer_exp)
    }

    /// The first second at which an assertion signed then (`iat` = that second) is accepted.
    pub fn fresh_from_secs(&self) -> i64 {
        self.lost_at_secs().saturating_add(self.tolerances.future_skew_secs).saturating_add(1)
    }

    /// The first second at which no assertion that could have been spent before the loss can
    /// pass the checklist any more: the window is over.
    pub fn ends_at_secs(&self) -> i64 {
        let Tolerances { max_lifetime_secs: l, future_skew_secs: f, past_skew_secs: p } = self.tolerances;
        self.lost_at_secs().saturating_add(l).saturating_add(f).saturating_add(p).saturating_add(1)
    }

    /// Whether refusals are still possible at `now_secs`.
    pub fn is_open(&self, now_secs: i64) -> bool {
        now_secs < self.ends_at_secs()
    }

    /// Seconds until a freshly signed assertion is accepted (at least 1): the `Retry-After`.
    pub fn retry_after_secs(&self, now_secs: i64) -> u64 {
        u64::try_from(self.fresh_from_secs().saturating_sub(now_secs)).unwrap_or(0).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Tolerances = Tolerances { max_lifetime_secs: 300, future_skew_secs: 5, past_skew_secs: 60 };

    fn window(lost_at_secs: i64) -> LossWindow {
        LossWindow { lost_at_ms: lost_at_secs * 1000 + 999, tolerances: T }
    }

    /// The checklist as the broker runs it (the acceptance conditions of the module doc).
    fn accepted_at(t: &AssertionTimes, now: i64) -> bool {
        t.iat.is_none_or(|i| i <= now + T.future_skew_secs)
            && t.nbf.is_none_or(|n| n <= now + T.future_skew_secs)
            && t.exp - now <= T.max_lifetime_secs + T.future_skew_secs
            && now <= t.exp + T.past_skew_secs
    }

    /// Exhaustive over a grid: whatever was acceptable at or before the loss is refused, and
    /// whatever is refused could indeed have been accepted at or before the loss.
    #[test]
    fn refuses_exactly_what_could_have_been_spent_before_the_loss() {
        let c = 1_000_000;
        let w = window(c);
        for iat in [None, Some(c - 400), Some(c - 1), Some(c), Some(c + 5), Some(c + 6), Some(c + 100)] {
            for nbf in [None, Some(c - 10), Some(c + 5), Some(c + 6), Some(c + 50)] {
                for exp in (c - 100..c + 420).step_by(7).chain([c + 305, c + 306]) {
                    let t = AssertionTimes { iat, nbf, exp, lifetime_capped: true };
                    let could = (c - 400..=c).any(|now| accepted_at(&t, now));
                    if could {
                        assert!(w.may_have_been_spent(&t), "{t:?} was acceptable before the loss");
                    }
                    if w.may_have_been_spent(&t) && (c..c + 400).any(|now| accepted_at(&t, now)) {
                        // Refused but still acceptable later: it must have been acceptable before.
                        assert!(could, "{t:?} refused though it could not have been spent before");
                    }
                }
            }
        }
    }

    #[test]
    fn fresh_assertions_pass_after_the_future_tolerance() {
        let w = window(1_000_000);
        let signed_at =
            |now: i64| AssertionTimes { iat: Some(now), nbf: None, exp: now + 60, lifetime_capped: true };
        assert!(w.may_have_been_spent(&signed_at(1_000_005)));
        assert!(!w.may_have_been_spent(&signed_at(1_000_006)));
        assert_eq!(w.fresh_from_secs(), 1_000_006);
        assert_eq!(w.retry_after_secs(1_000_000), 6);
        assert_eq!(w.retry_after_secs(1_000_010), 1);
    }

    #[test]
    fn window_ends_when_nothing_spent_before_can_pass() {
        let w = window(1_000_000);
        // The latest-expiring assertion acceptable at the loss: exp = c + L + F, good until + P.
        let last = AssertionTimes { iat: None, nbf: None, exp: 1_000_000 + 305, lifetime_capped: true };
        assert!(w.may_have_been_spent(&last));
        assert!(accepted_at(&last, 1_000_365));
        assert!(!accepted_at(&last, 1_000_366));
        assert_eq!(w.ends_at_secs(), 1_000_366);
        assert!(w.is_open(1_000_365));
        assert!(!w.is_open(1_000_366));
    }

    /// A trusted issuer's token (no lifetime cap): a far `exp` proves nothing, only a newer
    /// `iat` or `nbf` does, and it is judged for as long as it lives, not only in the window.
    #[test]
    fn uncapped_tokens_prove_freshness_only_by_iat_or_nbf() {
        let w = window(1_000_000);
        let old = AssertionTimes { iat: Some(999_000), nbf: None, exp: 1_003_600, lifetime_capped: false };
        assert!(w.may_have_been_spent(&old), "an hour-long token minted before the loss");
        let capped = AssertionTimes { lifetime_capped: true, ..old };
        assert!(!w.may_have_been_spent(&capped), "the same exp on an assertion proves it is newer");
        let fresh = AssertionTimes { iat: Some(1_000_006), ..old };
        assert!(!w.may_have_been_spent(&fresh));
        let no_times = AssertionTimes { iat: None, nbf: None, ..old };
        assert!(w.may_have_been_spent(&no_times), "nothing proves it newer");
    }
}
