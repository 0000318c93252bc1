//! A JWT as presented in a request, parsed once (step 1 of the checklist: size, compact form,
//! base64url, UTF-8, strict JSON, header rules). The grants look at its unverified `iss` and
//! `typ` to choose the path whose checklist then verifies it; no path parses it again.

use super::checklist::JwtError;
use crate::crypto::{CompactError, CompactJws};
use crate::policy::Policy;
use crate::protocol::MAX_TOKEN_LEN;

pub struct Presented<'a> {
    pub raw: &'a str,
    parsed: Result<CompactJws<'a>, CompactError>,
}

impl<'a> Presented<'a> {
    pub fn parse(raw: &'a str) -> Presented<'a> {
        Presented { raw, parsed: CompactJws::parse(raw, MAX_TOKEN_LEN) }
    }

    /// The `iss` it claims (not verified), when it parsed and has a string `iss`.
    pub fn iss(&self) -> Option<&str> {
        self.parsed.as_ref().ok()?.payload.get("iss")?.as_str()
    }

    /// Whether its header's `typ` is the media type `application/<bare>` (not verified).
    pub fn typ_is(&self, bare: &str) -> bool {
        self.parsed.as_ref().is_ok_and(|j| j.header.typ.as_ref().is_some_and(|t| t.is(bare)))
    }

    /// Whether it parsed at all.
    pub fn parsed(&self) -> bool {
        self.parsed.is_ok()
    }

    /// The trusted issuer (policy index) its unverified `iss` names, if any: how the grants
    /// tell a platform or user token from an agent's assertion before checking either.
    pub fn trusted_issuer(&self, policy: &Policy) -> Option<usize> {
        self.iss().and_then(|iss| policy.issuer_by_iss(iss))
    }

    /// Step 1's outcome, for the checklist.
    pub fn into_jws(self) -> Result<CompactJws<'a>, JwtError> {
        self.parsed.map_err(JwtError::from)
    }
}
