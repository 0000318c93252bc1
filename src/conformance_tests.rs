//! RFC 6749 section 5.2: "Values for the error_description parameter MUST NOT include
//! characters outside the set %x20-21 / %x23-5B / %x5D-7E." Every error a client can see is
//! walked here, with its own text (before the sanitizer in [`OAuthError::new`] would step in),
//! so the texts stay both helpful and inside the set. The `match`es without a wildcard make
//! a new variant a compile error until it is listed here.

use crate::client_auth::{AuthError, JwtError, Role};
use crate::crypto::json::JsonError;
use crate::crypto::{Alg, ClaimError, CompactError};
use crate::mint::OwnTokenError;
use crate::policy::{Deny, KeySelectError};
use crate::protocol::{is_description_char, OAuthError};
use crate::replay::ReplayError;

fn assert_inside(text: &str) {
    assert!(text.chars().all(is_description_char), "outside the RFC 6749 section 5.2 set: {text}");
}

fn compact_errors() -> Vec<CompactError> {
    let all = vec![
        CompactError::TooLarge(8192),
        CompactError::NotCompact,
        CompactError::Base64("header"),
        CompactError::Json("payload", JsonError::Utf8),
        CompactError::Json("payload", JsonError::NotObject),
        CompactError::Json("payload", JsonError::Duplicate("iss".into())),
        CompactError::Json("header", JsonError::Syntax("syntax error at column 3".into())),
        CompactError::NoAlg,
        CompactError::Alg("HS256".into()),
        CompactError::NullHeader("kid"),
        CompactError::HeaderType("kid", "a string"),
        CompactError::KeyReference("jku"),
        CompactError::Crit,
        CompactError::Unsupported("b64"),
        CompactError::Cty("JWT".into()),
    ];
    for e in &all {
        match e {
            CompactError::TooLarge(_)
            | CompactError::NotCompact
            | CompactError::Base64(_)
            | CompactError::Json(..)
            | CompactError::NoAlg
            | CompactError::Alg(_)
            | CompactError::NullHeader(_)
            | CompactError::HeaderType(..)
            | CompactError::KeyReference(_)
            | CompactError::Crit
            | CompactError::Unsupported(_)
            | CompactError::Cty(_) => {}
        }
    }
    all
}

fn jwt_errors() -> Vec<JwtError> {
    let mut all: Vec<JwtError> = compact_errors().into_iter().map(JwtError::Compact).collect();
    all.extend([
        JwtError::Typ("at+jwt".into(), "jwt, client-authentication+jwt, or none".into()),
        JwtError::NoTyp("at+jwt".into()),
        JwtError::Claims(ClaimError::Null("nbf")),
        JwtError::Claims(ClaimError::Type("exp", "a NumericDate (seconds since 1970)")),
        JwtError::NoIssuer,
        JwtError::UnknownAgent,
        JwtError::UnknownIssuer,
        JwtError::KeysUnavailable,
        JwtError::Disabled,
        JwtError::ClientIdMismatch,
        JwtError::Key(KeySelectError::UnknownKid),
        JwtError::Key(KeySelectError::AlgMismatch { registered: Alg::ES256, header: Alg::RS256 }),
        JwtError::Key(KeySelectError::NoKeyForAlg(Alg::EdDSA)),
        JwtError::Key(KeySelectError::Ambiguous(Alg::ES256)),
        JwtError::Signature,
        JwtError::SubMismatch,
        JwtError::NoSubject,
        JwtError::Audience("https://sts.example".into()),
        JwtError::NoExpiry,
        JwtError::Expired,
        JwtError::TooLongLived(305),
        JwtError::NotYetValid,
        JwtError::IssuedInFuture,
        JwtError::NoIssuedAt,
        JwtError::TooOld(660),
        JwtError::NoJti,
        JwtError::JtiTooLong,
    ]);
    for e in &all {
        match e {
            JwtError::Compact(_)
            | JwtError::Typ(..)
            | JwtError::NoTyp(_)
            | JwtError::Claims(_)
            | JwtError::NoIssuer
            | JwtError::UnknownAgent
            | JwtError::UnknownIssuer
            | JwtError::KeysUnavailable
            | JwtError::Disabled
            | JwtError::ClientIdMismatch
            | JwtError::Key(_)
            | JwtError::Signature
            | JwtError::SubMismatch
            | JwtError::NoSubject
            | JwtError::Audience(_)
            | JwtError::NoExpiry
            | JwtError::Expired
            | JwtError::TooLongLived(_)
            | JwtError::NotYetValid
            | JwtError::IssuedInFuture
            | JwtError::NoIssuedAt
            | JwtError::TooOld(_)
            | JwtError::NoJti
            | JwtError::JtiTooLong => {}
        }
    }
    all
}

#[test]
fn every_authentication_error_text_is_inside_the_set() {
    let roles = [Role::ClientAuth, Role::Grant, Role::SubjectToken, Role::ActorToken];
    let mut errors: Vec<AuthError> = jwt_errors().into_iter().map(AuthError::Jwt).collect();
    errors.push(AuthError::Replayed);
    errors.push(AuthError::Store(ReplayError::Timeout(250)));
    for e in &errors {
        assert_inside(&e.to_string());
        for role in roles {
            let o = e.to_oauth(role);
            assert_inside(&o.description);
        }
    }
}

#[test]
fn every_policy_and_own_token_error_text_is_inside_the_set() {
    let denies = [
        Deny::NoTarget,
        Deny::MultipleTargets,
        Deny::UnknownTarget("https://x.example/mcp".into()),
        Deny::NotAllowed { agent: "a".into(), server: "s".into() },
        Deny::NoScope { agent: "a".into(), server: "s".into(), requested: true },
        Deny::NoScope { agent: "a".into(), server: "s".into(), requested: false },
        Deny::SubjectNotAllowed { subject: "delegation rule 'r'".into(), server: "s".into() },
    ];
    for d in &denies {
        match d {
            Deny::NoTarget
            | Deny::MultipleTargets
            | Deny::UnknownTarget(_)
            | Deny::NotAllowed { .. }
            | Deny::NoScope { .. }
            | Deny::SubjectNotAllowed { .. } => {}
        }
        assert_inside(&d.to_oauth().description);
    }
    let own = [
        OwnTokenError::Jwt(JwtError::Expired),
        OwnTokenError::Claims("scope"),
        OwnTokenError::Expired,
        OwnTokenError::ActTooDeep,
    ];
    for e in &own {
        match e {
            OwnTokenError::Jwt(_)
            | OwnTokenError::Claims(_)
            | OwnTokenError::Expired
            | OwnTokenError::ActTooDeep => {}
        }
        assert_inside(&e.to_string());
    }
    assert_inside(&OAuthError::server_error().description);
}

/// Values quoted from a request are brought inside the set by [`OAuthError::new`].
#[test]
fn quoted_request_values_are_sanitised() {
    let e = Deny::UnknownTarget("https://x.example/\"\\\u{a7}\u{e9}".into()).to_oauth();
    assert_inside(&e.description);
    let e = AuthError::Jwt(JwtError::Typ("a\"b".into(), "jwt".into())).to_oauth(Role::Grant);
    assert_inside(&e.description);
    assert!(e.description.contains("a'b"), "{}", e.description);
}
