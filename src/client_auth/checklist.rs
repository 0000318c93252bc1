//! The one ordered checklist every JWT this broker accepts goes through: an agent's
//! assertion, a CI platform's token, a user's token from an identity provider, an ID-JAG.
//! What differs between them is a parameter: where the key comes from (the `resolve`
//! closure), which `typ` and `aud` are expected and the time limits ([`Expect`]); the error
//! code of a refusal is the caller's ([`super::Role`]).
//!
//! 1. size, JWS compact form, base64url, UTF-8, strict JSON, header rules, `alg` on the
//!    allow-list ([`CompactJws::parse`]);
//! 2. `typ` one of the expected media types ([`TypRule`]);
//! 3. the registered claims typed and not null ([`Claims::from_object`]); `iss` present;
//! 4. the key: the resolver finds the issuer (a registered agent, a trusted issuer) and its
//!    key by `kid`, whose registered algorithm must equal the header's;
//! 5. the signature;
//! 6. the claims: `aud` exactly one expected value; `exp` present and not past (past skew);
//!    the lifetime cap (`exp` - now); `nbf` and `iat` not in the future (future skew); the
//!    maximum age (now - `iat`); `jti` present and at most 256 bytes when required.
//!
//! The replay spend (step 7) is the caller's, once everything else has passed.

use crate::crypto::{ClaimError, Claims, CompactError, CompactJws, JoseHeader, VerifyingKey};
use crate::policy::KeySelectError;
use crate::protocol::MAX_TOKEN_LEN;
use std::ops::Deref;

/// Clock tolerance. `past_secs` is how long after `exp` a JWT is still accepted;
/// `future_secs` how far in the future `iat` and `nbf` may be, and what a lifetime cap
/// tolerates beyond itself. They are separate because the future tolerance also bounds how
/// long fresh assertions are refused after the replay store lost its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skew {
    pub past_secs: i64,
    pub future_secs: i64,
}

impl Skew {
    /// The first Unix millisecond at which step 6 refuses a JWT that expires at `exp`. Step 6
    /// works in whole seconds (`now` is the clock's milliseconds floored): it accepts while
    /// `now <= exp + past`, so up to the last millisecond of that second. A replay record
    /// must live until this instant; one that ended at `(exp + past) * 1000` would leave the
    /// JWT's last second of acceptance open to a replay.
    pub fn refused_from_ms(self, exp: i64) -> i64 {
        exp.saturating_add(self.past_secs).saturating_add(1).saturating_mul(1000)
    }
}

/// Which `typ` header values a kind of JWT may carry, as bare lower-case media types
/// (compared per RFC 7515 section 4.1.9, see [`crate::crypto::Typ`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypRule {
    pub absent_ok: bool,
    pub accepted: &'static [&'static str],
}

impl TypRule {
    /// Agent assertions (RFC 7523): absent, `JWT`, or `client-authentication+jwt`
    /// (draft-ietf-oauth-rfc7523bis). Never `at+jwt`: an access token is not an assertion.
    pub const ASSERTION: TypRule =
        TypRule { absent_ok: true, accepted: &["jwt", "client-authentication+jwt"] };
    /// Our own access tokens (RFC 9068 section 2.1): `at+jwt`, required.
    pub const ACCESS_TOKEN: TypRule = TypRule { absent_ok: false, accepted: &["at+jwt"] };
    /// Tokens of trusted issuers presented as a platform or subject token: absent, `JWT`, or
    /// `at+jwt` (an IdP's RFC 9068 access token). Never an assertion's or an ID-JAG's type.
    pub const ISSUED_TOKEN: TypRule = TypRule { absent_ok: true, accepted: &["jwt", "at+jwt"] };
    /// An OpenID Connect ID token presented as `subject_token` (`...:token-type:id_token`):
    /// absent or `JWT`.
    pub const ID_TOKEN: TypRule = TypRule { absent_ok: true, accepted: &["jwt"] };
    /// Identity Assertion JWT Authorization Grants: `oauth-id-jag+jwt`, required.
    pub const ID_JAG: TypRule = TypRule { absent_ok: false, accepted: &["oauth-id-jag+jwt"] };

    fn admits(&self, header: &JoseHeader) -> bool {
        match &header.typ {
            None => self.absent_ok,
            Some(t) => self.accepted.iter().any(|a| t.is(a)),
        }
    }

    fn describe(&self) -> String {
        let mut s = self.accepted.join(", ");
        if self.absent_ok {
            s.push_str(", or none");
        }
        s
    }
}

/// What a JWT must satisfy besides its signature.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    pub typ: TypRule,
    /// The accepted audiences: `aud` must be exactly one of them. `None`: not checked here
    /// (our own access tokens, whose audience is a resource server).
    pub audiences: Option<&'a [&'a str]>,
    /// `exp` may be at most this far ahead (plus the future skew).
    pub max_lifetime_secs: Option<i64>,
    /// `iat` is required and may be at most this old (plus the past skew).
    pub max_age_secs: Option<i64>,
    pub require_jti: bool,
    pub skew: Skew,
}

/// The longest `jti` accepted.
pub const MAX_JTI_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("{0}")]
    Compact(#[from] CompactError),
    #[error("typ '{0}' is not accepted here (accepted: {1})")]
    Typ(String, String),
    #[error("typ is required here (accepted: {0})")]
    NoTyp(String),
    #[error("{0}")]
    Claims(#[from] ClaimError),
    #[error("has no iss")]
    NoIssuer,
    #[error("iss is not a registered agent or a trusted issuer")]
    UnknownAgent,
    #[error("iss is not a trusted issuer")]
    UnknownIssuer,
    #[error("the issuer's keys are not available yet; retry shortly")]
    KeysUnavailable,
    #[error("the agent is disabled")]
    Disabled,
    #[error("client_id does not match the assertion's iss")]
    ClientIdMismatch,
    #[error("no key verifies it: {0}")]
    Key(#[from] KeySelectError),
    #[error("the signature does not verify")]
    Signature,
    #[error("sub must equal iss (RFC 7523 section 3)")]
    SubMismatch,
    #[error("has no sub")]
    NoSubject,
    #[error("aud must be exactly {0}, as a string or a one-element array (RFC 7523 section 3)")]
    Audience(String),
    #[error("has no exp (RFC 7519 section 4.1.4)")]
    NoExpiry,
    #[error("has expired")]
    Expired,
    #[error("lives too long: exp may be at most {0} s ahead")]
    TooLongLived(i64),
    #[error("is not valid yet (nbf)")]
    NotYetValid,
    #[error("iat is in the future")]
    IssuedInFuture,
    #[error("has no iat, which the maximum token age needs")]
    NoIssuedAt,
    #[error("is too old: iat may be at most {0} s ago")]
    TooOld(i64),
    #[error("has no jti (RFC 7523 section 3)")]
    NoJti,
    #[error("jti is longer than {MAX_JTI_LEN} bytes")]
    JtiTooLong,
}

/// A JWT that passed the checklist (not yet spent).
#[derive(Debug)]
pub struct Checked<T> {
    /// What the resolver found (the agent, the issuer).
    pub who: T,
    pub header: JoseHeader,
    pub claims: Claims,
    /// `exp`, which step 6 requires.
    pub exp: i64,
}

/// Run steps 1-6. `resolve` gets the checked header and claims (with `iss` present) and
/// returns the issuer it found and the key that must verify the signature. No I/O here.
pub fn check<T, K: Deref<Target = VerifyingKey>>(
    raw: &str,
    expect: &Expect<'_>,
    now: i64,
    resolve: impl FnOnce(&JoseHeader, &Claims) -> Result<(T, K), JwtError>,
) -> Result<Checked<T>, JwtError> {
    // 1.
    check_parsed(CompactJws::parse(raw, MAX_TOKEN_LEN)?, expect, now, resolve)
}

/// Steps 2-6, for a JWS already parsed by step 1 (when the caller needed to see its `iss`
/// to choose the expectations).
pub fn check_parsed<T, K: Deref<Target = VerifyingKey>>(
    jws: CompactJws<'_>,
    expect: &Expect<'_>,
    now: i64,
    resolve: impl FnOnce(&JoseHeader, &Claims) -> Result<(T, K), JwtError>,
) -> Result<Checked<T>, JwtError> {
    // 2.
    if !expect.typ.admits(&jws.header) {
        return Err(match &jws.header.typ {
            Some(t) => JwtError::Typ(t.raw.clone(), expect.typ.describe()),
            None => JwtError::NoTyp(expect.typ.describe()),
        });
    }
    // 3.
    let claims = Claims::from_object(jws.payload)?;
    if claims.iss().is_none() {
        return Err(JwtError::NoIssuer);
    }
    // 4.
    let (who, key) = resolve(&jws.header, &claims)?;
    // 5.
    if !key.verify(jws.signing_input.as_bytes(), &jws.signature) {
        return Err(JwtError::Signature);
    }
    // 6.
    let exp = check_claims(&claims, expect, now)?;
    Ok(Checked { who, header: jws.header, claims, exp })
}

/// Step 6 alone; returns `exp`.
fn check_claims(claims: &Claims, expect: &Expect<'_>, now: i64) -> Result<i64, JwtError> {
    let Skew { past_secs: past, future_secs: future } = expect.skew;
    if let Some(accepted) = expect.audiences {
        if !claims.aud_is_exactly_one_of(accepted) {
            return Err(JwtError::Audience(accepted.join(" or ")));
        }
    }
    let exp = claims.exp().ok_or(JwtError::NoExpiry)?;
    if now > exp.saturating_add(past) {
        return Err(JwtError::Expired);
    }
    if let Some(max) = expect.max_lifetime_secs {
        let cap = max.saturating_add(future);
        if exp.saturating_sub(now) > cap {
            return Err(JwtError::TooLongLived(cap));
        }
    }
    if claims.nbf().is_some_and(|nbf| nbf > now.saturating_add(future)) {
        return Err(JwtError::NotYetValid);
    }
    let iat = claims.iat();
    if iat.is_some_and(|iat| iat > now.saturating_add(future)) {
        return Err(JwtError::IssuedInFuture);
    }
    if let Some(max_age) = expect.max_age_secs {
        let iat = iat.ok_or(JwtError::NoIssuedAt)?;
        let cap = max_age.saturating_add(past);
        if now.saturating_sub(iat) > cap {
            return Err(JwtError::TooOld(cap));
        }
    }
    if expect.require_jti {
        let jti = claims.jti().filter(|j| !j.is_empty()).ok_or(JwtError::NoJti)?;
        if jti.len() > MAX_JTI_LEN {
            return Err(JwtError::JtiTooLong);
        }
    }
    Ok(exp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{b64url_encode, Alg, SigningKey};
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;
    const SKEW: Skew = Skew { past_secs: 60, future_secs: 5 };

    fn expect() -> Expect<'static> {
        Expect {
            typ: TypRule::ASSERTION,
            audiences: Some(&["https://sts.example"]),
            max_lifetime_secs: Some(300),
            max_age_secs: None,
            require_jti: true,
            skew: SKEW,
        }
    }

    struct Fixture {
        key: SigningKey,
        verifying: VerifyingKey,
    }

    fn fixture() -> &'static Fixture {
        static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
        F.get_or_init(|| {
            let key = SigningKey::generate(Alg::ES256).expect("key");
            let verifying = key.verifying_key().expect("vk");
            Fixture { key, verifying }
        })
    }

    fn sign(header: serde_json::Value, claims: serde_json::Value) -> String {
        let h = b64url_encode(header.to_string().as_bytes());
        fixture().key.sign_compact(&h, claims.to_string().as_bytes()).expect("sign")
    }

    fn base() -> serde_json::Value {
        json!({"iss": "a", "sub": "a", "aud": "https://sts.example", "iat": NOW, "exp": NOW + 60, "jti": "j"})
    }

    fn with(mut claims: serde_json::Value, name: &str, v: serde_json::Value) -> serde_json::Value {
        claims[name] = v;
        claims
    }

    fn run(claims: serde_json::Value, e: &Expect<'_>) -> Result<i64, JwtError> {
        let raw = sign(json!({"alg": "ES256", "typ": "JWT"}), claims);
        check(&raw, e, NOW, |_, _| Ok(((), &fixture().verifying))).map(|c| c.exp)
    }

    #[test]
    fn a_good_jwt_passes() {
        assert_eq!(run(base(), &expect()), Ok(NOW + 60));
    }

    /// `refused_from_ms` is the first millisecond step 6 refuses at: the checklist sees
    /// whole seconds (the clock's milliseconds floored), and every millisecond before that
    /// instant is still accepted, so a replay record must last until then.
    #[test]
    fn refused_from_ms_is_the_first_refused_millisecond() {
        let e = expect();
        let exp = NOW - 60;
        let until = e.skew.refused_from_ms(exp);
        let raw = sign(json!({"alg": "ES256", "typ": "JWT"}), with(base(), "exp", json!(exp)));
        let at_ms = |ms: i64| {
            check(&raw, &e, ms.div_euclid(1000), |_, _| Ok(((), &fixture().verifying))).map(|c| c.exp)
        };
        assert_eq!(at_ms(until - 1), Ok(exp), "the last millisecond before it is accepted");
        assert_eq!(at_ms(until), Err(JwtError::Expired));
        assert_eq!(at_ms((exp + 60) * 1000), Ok(exp), "(exp + past) * 1000 is still accepted");
    }

    /// Every time check on its boundary: the last second that passes and the first that
    /// does not (RFC 7519 sections 4.1.4-4.1.6 with the configured skews).
    #[test]
    fn time_checks_sit_on_their_boundaries() {
        let e = expect();
        // exp: accepted until exp + past skew.
        assert!(run(with(base(), "exp", json!(NOW - 60)), &e).is_ok());
        assert_eq!(run(with(base(), "exp", json!(NOW - 61)), &e), Err(JwtError::Expired));
        // lifetime cap: exp - now <= 300 + future skew.
        assert!(run(with(base(), "exp", json!(NOW + 305)), &e).is_ok());
        assert_eq!(run(with(base(), "exp", json!(NOW + 306)), &e), Err(JwtError::TooLongLived(305)));
        // nbf and iat: at most the future skew ahead.
        assert!(run(with(base(), "nbf", json!(NOW + 5)), &e).is_ok());
        assert_eq!(run(with(base(), "nbf", json!(NOW + 6)), &e), Err(JwtError::NotYetValid));
        assert!(run(with(base(), "iat", json!(NOW + 5)), &e).is_ok());
        assert_eq!(run(with(base(), "iat", json!(NOW + 6)), &e), Err(JwtError::IssuedInFuture));
        // maximum age: now - iat <= max age + past skew.
        let aged = Expect { max_age_secs: Some(600), ..e };
        assert!(run(with(base(), "iat", json!(NOW - 660)), &aged).is_ok());
        assert_eq!(run(with(base(), "iat", json!(NOW - 661)), &aged), Err(JwtError::TooOld(660)));
        let mut no_iat = base();
        no_iat.as_object_mut().expect("object").remove("iat");
        assert_eq!(run(no_iat, &aged), Err(JwtError::NoIssuedAt));
    }

    #[test]
    fn jti_is_required_and_bounded() {
        let e = expect();
        assert!(run(with(base(), "jti", json!("x".repeat(MAX_JTI_LEN))), &e).is_ok());
        assert_eq!(
            run(with(base(), "jti", json!("x".repeat(MAX_JTI_LEN + 1))), &e),
            Err(JwtError::JtiTooLong)
        );
        assert_eq!(run(with(base(), "jti", json!("")), &e), Err(JwtError::NoJti));
        let mut none = base();
        none.as_object_mut().expect("object").remove("jti");
        assert_eq!(run(none.clone(), &e), Err(JwtError::NoJti));
        assert!(run(none, &Expect { require_jti: false, ..e }).is_ok());
    }

    #[test]
    fn audience_and_expiry_are_required() {
        let e = expect();
        assert!(matches!(
            run(with(base(), "aud", json!(["https://sts.example", "https://evil"])), &e),
            Err(JwtError::Audience(_))
        ));
        let mut no_exp = base();
        no_exp.as_object_mut().expect("object").remove("exp");
        assert_eq!(run(no_exp, &e), Err(JwtError::NoExpiry));
        assert!(run(with(base(), "aud", json!("anything")), &Expect { audiences: None, ..e }).is_ok());
    }

    #[test]
    fn typ_rules_per_kind_of_jwt() {
        let run_typ = |typ: Option<&str>, rule: TypRule| {
            let mut h = json!({"alg": "ES256"});
            if let Some(t) = typ {
                h["typ"] = json!(t);
            }
            let e = Expect { typ: rule, ..expect() };
            check(&sign(h, base()), &e, NOW, |_, _| Ok(((), &fixture().verifying))).map(|_| ())
        };
        assert!(run_typ(None, TypRule::ASSERTION).is_ok());
        assert!(run_typ(Some("application/client-authentication+jwt"), TypRule::ASSERTION).is_ok());
        assert!(run_typ(Some("APPLICATION/JWT"), TypRule::ASSERTION).is_ok());
        assert!(matches!(run_typ(Some("at+jwt"), TypRule::ASSERTION), Err(JwtError::Typ(..))));
        assert!(matches!(run_typ(None, TypRule::ACCESS_TOKEN), Err(JwtError::NoTyp(_))));
        assert!(run_typ(Some("at+JWT"), TypRule::ACCESS_TOKEN).is_ok());
        assert!(matches!(run_typ(Some("JWT"), TypRule::ID_JAG), Err(JwtError::Typ(..))));
        assert!(run_typ(Some("oauth-id-jag+jwt"), TypRule::ID_JAG).is_ok());
        assert!(matches!(run_typ(Some("oauth-id-jag+jwt"), TypRule::ISSUED_TOKEN), Err(JwtError::Typ(..))));
        // The error names the whole value, however long.
        let long = format!("{}+jwt", "x".repeat(80));
        match run_typ(Some(&long), TypRule::ASSERTION) {
            Err(e @ JwtError::Typ(..)) => assert!(e.to_string().contains(&long)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_signature_is_checked_before_the_claims() {
        let raw = sign(json!({"alg": "ES256"}), with(base(), "exp", json!(NOW - 1000)));
        let (head, _) = raw.rsplit_once('.').expect("parts");
        let forged = format!("{head}.{}", b64url_encode(&[0u8; 64]));
        let r = check(&forged, &expect(), NOW, |_, _| Ok(((), &fixture().verifying)));
        assert_eq!(r.map(|_| ()), Err(JwtError::Signature), "an expired forgery reports the signature");
    }
}
