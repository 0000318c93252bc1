//! Newtypes and registered names: scope sets (RFC 6749 §3.3), token-type URNs
//! (RFC 8693 §3), grant-type and assertion-type URNs (RFC 7523 §2).

use std::collections::BTreeSet;
use std::fmt;

pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
pub const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ASSERTION_TYPE_JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A set of scope tokens (RFC 6749 §3.3), kept sorted so equal sets print equally.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet(BTreeSet<String>);

/// A scope value that breaks the RFC 6749 §3.3 grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope tokens are printable ASCII without spaces, quotes or backslashes (RFC 6749 section 3.3)")]
pub struct InvalidScope;

impl ScopeSet {
    /// Parse a space-separated scope string. Runs of spaces are tolerated; every token must
    /// match `1*( %x21 / %x23-5B / %x5D-7E )`.
    ///
    /// ```
    /// use agent_sts::protocol::ScopeSet;
    /// let requested = ScopeSet::parse("write read  admin").unwrap();
    /// let allowed = ScopeSet::parse("read write").unwrap();
    /// assert_eq!(requested.intersection(&allowed).to_string(), "read write");
    /// assert!(ScopeSet::parse("quote\"d").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Self, InvalidScope> {
        let mut set = BTreeSet::new();
        for tok in s.split(' ').filter(|t| !t.is_empty()) {
            if !is_scope_token(tok) {
                return Err(InvalidScope);
            }
            set.insert(tok.to_string());
        }
        Ok(ScopeSet(set))
    }

    pub fn from_tokens<I: IntoIterator<Item = S>, S: Into<String>>(tokens: I) -> Result<Self, InvalidScope> {
        let mut set = BTreeSet::new();
        for t in tokens {
            let t = t.into();
            if !is_scope_token(&t) {
                return Err(InvalidScope);
            }
            set.insert(t);
        }
        Ok(ScopeSet(set))
    }

    pub fn intersection(&self, other: &ScopeSet) -> ScopeSet {
        ScopeSet(self.0.intersection(&other.0).cloned().collect())
    }

    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn extend(&mut self, other: &ScopeSet) {
        self.0.extend(other.0.iter().cloned());
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(s)?;
        }
        Ok(())
    }
}

fn is_scope_token(t: &str) -> bool {
    !t.is_empty() && t.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// Token type identifiers (RFC 8693 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    AccessToken,
    Jwt,
    IdToken,
    RefreshToken,
    Saml1,
    Saml2,
}

impl TokenType {
    pub fn parse(urn: &str) -> Option<Self> {
        Some(match urn {
            "urn:ietf:params:oauth:token-type:access_token" => TokenType::AccessToken,
            "urn:ietf:params:oauth:token-type:jwt" => TokenType::Jwt,
            "urn:ietf:params:oauth:token-type:id_token" => TokenType::IdToken,
            "urn:ietf:params:oauth:token-type:refresh_token" => TokenType::RefreshToken,
            "urn:ietf:params:oauth:token-type:saml1" => TokenType::Saml1,
            "urn:ietf:params:oauth:token-type:saml2" => TokenType::Saml2,
            _ => return None,
        })
    }

    pub fn urn(self) -> &'static str {
        match self {
            TokenType::AccessToken => "urn:ietf:params:oauth:token-type:access_token",
            TokenType::Jwt => "urn:ietf:params:oauth:token-type:jwt",
            TokenType::IdToken => "urn:ietf:params:oauth:token-type:id_token",
            TokenType::RefreshToken => "urn:ietf:params:oauth:token-type:refresh_token",
            TokenType::Saml1 => "urn:ietf:params:oauth:token-type:saml1",
            TokenType::Saml2 => "urn:ietf:params:oauth:token-type:saml2",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_parse_sorts_dedups_and_validates() {
        let s = ScopeSet::parse("write  read read").expect("valid");
        assert_eq!(s.to_string(), "read write");
        assert_eq!(ScopeSet::parse("a\"b"), Err(InvalidScope));
        assert_eq!(ScopeSet::parse("a\\b"), Err(InvalidScope));
        assert_eq!(ScopeSet::parse("é"), Err(InvalidScope));
        assert!(ScopeSet::parse("").expect("empty is valid").is_empty());
    }

    #[test]
    fn intersection_narrows() {
        let a = ScopeSet::parse("read write admin").expect("valid");
        let b = ScopeSet::parse("read admin other").expect("valid");
        assert_eq!(a.intersection(&b).to_string(), "admin read");
    }
}
