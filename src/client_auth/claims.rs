//! JWT claims as RFC 7519 defines them, parsed strictly: duplicate claim names refused,
//! NumericDate accepted as integer or fraction, `aud` as string or array.

use serde::{Deserialize, Deserializer};

/// RFC 7519 §2 NumericDate, floored to whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumericDate(pub i64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        if let Some(i) = n.as_i64() {
            return Ok(NumericDate(i));
        }
        match n.as_f64() {
            Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(NumericDate(f.floor() as i64)),
            _ => Err(serde::de::Error::custom("NumericDate out of range")),
        }
    }
}

/// RFC 7519 §4.1.3: a single string or an array of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains_any(&self, accepted: &[&str]) -> bool {
        match self {
            Audience::One(a) => accepted.contains(&a.as_str()),
            Audience::Many(list) => list.iter().any(|a| accepted.contains(&a.as_str())),
        }
    }
}

/// The registered claims of an assertion (RFC 7523 §3). Other claims are ignored.
#[derive(Debug, Deserialize)]
pub struct AssertionClaims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub aud: Option<Audience>,
    pub exp: Option<NumericDate>,
    pub nbf: Option<NumericDate>,
    pub iat: Option<NumericDate>,
    pub jti: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numeric_dates_and_audiences() {
        let c: AssertionClaims =
            serde_json::from_str(r#"{"exp":1700000000.9,"iat":1700000000,"aud":["a","b"]}"#).expect("valid");
        assert_eq!(c.exp, Some(NumericDate(1_700_000_000)));
        assert!(c.aud.expect("aud").contains_any(&["b"]));
    }

    #[test]
    fn refuses_duplicate_claims_and_wrong_types() {
        assert!(serde_json::from_str::<AssertionClaims>(r#"{"iss":"a","iss":"b"}"#).is_err());
        assert!(serde_json::from_str::<AssertionClaims>(r#"{"exp":"tomorrow"}"#).is_err());
        assert!(serde_json::from_str::<AssertionClaims>(r#"{"aud":5}"#).is_err());
    }
}
