//! The claim predicate language of federation and delegation rules: a set of tests on a
//! verified token's claims that must all hold. One language, one evaluator; `policy explain`
//! prints what this code decided, so the explanation cannot drift from the decision.
//!
//! In a policy file, under a rule's `claims` table, each key names a claim and each value is
//! a test:
//!
//! | value | holds when the claim |
//! | --- | --- |
//! | `"text"` | is that string, exactly |
//! | `true` / `false` | is that JSON boolean (the string `"true"` is not `true`) |
//! | `42`, `1.5` | is that JSON number |
//! | `{ one_of = ["a", "b"] }` | equals one of the values (each typed as above) |
//! | `{ glob = "acme/*/deploy.yml@*" }` | is a string that the whole pattern matches: `*` any run of characters (also `/`), `?` one character, `\\` escapes the next |
//! | `{ contains = "admins" }` | is an array with an element equal to the value (e.g. `groups`) |
//!
//! A key is a top-level claim name, or, when it starts with `/`, a JSON Pointer (RFC 6901)
//! into nested claims: `"/kubernetes.io/namespace" = "ci"`. A claim that is missing, `null`
//! or of another type never matches. There is no negation, so a missing claim can never make
//! a rule match.

use serde_json::Value;
use std::fmt;

/// The claims an issuer's configuration already checks; a predicate on them would mislead.
const RESERVED: [&str; 6] = ["iss", "aud", "exp", "nbf", "iat", "jti"];

/// Where a test looks: a top-level claim, or a JSON Pointer (RFC 6901).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimPath {
    Name(String),
    Pointer(String),
}

impl ClaimPath {
    pub fn parse(key: &str) -> Result<ClaimPath, String> {
        if key.is_empty() {
            return Err("a claim name must not be empty".into());
        }
        if !key.starts_with('/') {
            if RESERVED.contains(&key) {
                return Err(format!("claim '{key}' is checked by the issuer's configuration, not by rules"));
            }
            return Ok(ClaimPath::Name(key.to_string()));
        }
        // RFC 6901 section 3/4: `~` must be followed by 0 or 1.
        let mut chars = key.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.peek(), Some('0' | '1')) {
                return Err(format!("JSON Pointer '{key}' has a '~' not followed by 0 or 1 (RFC 6901)"));
            }
        }
        Ok(ClaimPath::Pointer(key.to_string()))
    }

    pub fn find<'c>(&self, claims: &'c serde_json::Map<String, Value>) -> Option<&'c Value> {
        let found = match self {
            ClaimPath::Name(n) => claims.get(n),
            ClaimPath::Pointer(p) => {
                let mut parts = p.split('/').skip(1);
                let first = unescape(parts.next()?);
                parts.try_fold(claims.get(&first)?, |v, part| match v {
                    Value::Object(m) => m.get(&unescape(part)),
                    Value::Array(a) => unescape(part).parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                })
            }
        };
        found.filter(|v| !v.is_null())
    }

    /// The top-level claim name, when the path is one.
    pub fn name(&self) -> Option<&str> {
        match self {
            ClaimPath::Name(n) => Some(n),
            ClaimPath::Pointer(_) => None,
        }
    }
}

fn unescape(part: &str) -> String {
    part.replace("~1", "/").replace("~0", "~")
}

impl fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimPath::Name(n) | ClaimPath::Pointer(n) => f.write_str(n),
        }
    }
}

/// A value a test compares with: typed, never coerced.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    String(String),
    Bool(bool),
    Integer(i64),
    Float(f64),
}

impl Scalar {
    fn from_toml(v: &toml::Value) -> Option<Scalar> {
        Some(match v {
            toml::Value::String(s) => Scalar::String(s.clone()),
            toml::Value::Boolean(b) => Scalar::Bool(*b),
            toml::Value::Integer(i) => Scalar::Integer(*i),
            toml::Value::Float(f) if f.is_finite() => Scalar::Float(*f),
            _ => return None,
        })
    }

    /// RFC 8259 types as they are: a string never equals a number or a boolean.
    pub fn equals(&self, v: &Value) -> bool {
        match (self, v) {
            (Scalar::String(s), Value::String(c)) => s == c,
            (Scalar::Bool(b), Value::Bool(c)) => b == c,
            (Scalar::Integer(i), Value::Number(n)) => n.as_i64() == Some(*i),
            (Scalar::Float(f), Value::Number(n)) => n.as_f64() == Some(*f),
            _ => false,
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::String(s) => write!(f, "'{s}'"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Integer(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
        }
    }
}

/// An anchored glob: `*` any run of characters, `?` one character, `\` escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    tokens: Vec<GlobToken>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GlobToken {
    Char(char),
    Any,
    One,
}

impl Glob {
    pub fn parse(pattern: &str) -> Result<Glob, String> {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' => {
                    if tokens.last() == Some(&GlobToken::Any) {
                        continue;
                    }
                    GlobToken::Any
                }
                '?' => GlobToken::One,
                '\\' => GlobToken::Char(
                    chars.next().ok_or_else(|| format!("glob '{pattern}' ends with an escape"))?,
                ),
                c => GlobToken::Char(c),
            });
        }
        if !tokens.iter().any(|t| matches!(t, GlobToken::Char(_))) {
            return Err(format!("glob '{pattern}' matches any value; name the values it may take"));
        }
        Ok(Glob { pattern: pattern.to_string(), tokens })
    }

    /// Whether the whole of `text` matches (iterative, with one backtrack point per `*`:
    /// linear in practice, never exponential).
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let (mut t, mut p) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match self.tokens.get(p) {
                Some(GlobToken::Char(c)) if *c == text[t] => {
                    t += 1;
                    p += 1;
                }
                Some(GlobToken::One) => {
                    t += 1;
                    p += 1;
                }
                Some(GlobToken::Any) => {
                    star = Some((p, t));
                    p += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        p = sp + 1;
                        t = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        self.tokens[p..].iter().all(|tok| *tok == GlobToken::Any)
    }

    /// The literal text before the first wildcard, and after the last one.
    fn literal_ends(&self) -> (String, String) {
        let lit = |t: &GlobToken| match t {
            GlobToken::Char(c) => Some(*c),
            _ => None,
        };
        let prefix: String = self.tokens.iter().map_while(lit).collect();
        let mut suffix: Vec<char> = self.tokens.iter().rev().map_while(lit).collect();
        suffix.reverse();
        (prefix, suffix.into_iter().collect())
    }
}

/// One test on one claim.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Equals(Scalar),
    OneOf(Vec<Scalar>),
    Glob(Glob),
    Contains(Scalar),
}

impl Test {
    pub fn holds(&self, v: &Value) -> bool {
        match self {
            Test::Equals(s) => s.equals(v),
            Test::OneOf(list) => list.iter().any(|s| s.equals(v)),
            Test::Glob(g) => v.as_str().is_some_and(|s| g.matches(s)),
            Test::Contains(s) => v.as_array().is_some_and(|a| a.iter().any(|e| s.equals(e))),
        }
    }

    fn from_toml(ctx: &str, v: &toml::Value) -> Result<Test, String> {
        if let Some(s) = Scalar::from_toml(v) {
            return Ok(Test::Equals(s));
        }
        let toml::Value::Table(t) = v else {
            return Err(format!(
                "{ctx}: a test is a string, boolean, number, or a table with one of one_of, glob, contains"
            ));
        };
        let mut ops = t.iter();
        let (Some((op, arg)), None) = (ops.next(), ops.next()) else {
            return Err(format!("{ctx}: a test table has exactly one of one_of, glob, contains"));
        };
        match (op.as_str(), arg) {
            ("one_of", toml::Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|i| {
                    Scalar::from_toml(i)
                        .ok_or_else(|| format!("{ctx}: one_of takes strings, booleans or numbers"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Test::OneOf),
            ("one_of", _) => Err(format!("{ctx}: one_of takes a non-empty array")),
            ("glob", toml::Value::String(p)) => {
                Glob::parse(p).map(Test::Glob).map_err(|e| format!("{ctx}: {e}"))
            }
            ("glob", _) => Err(format!("{ctx}: glob takes a string")),
            ("contains", v) => Scalar::from_toml(v)
                .map(Test::Contains)
                .ok_or_else(|| format!("{ctx}: contains takes a string, boolean or number")),
            (other, _) => Err(format!("{ctx}: unknown test '{other}' (one_of, glob, contains)")),
        }
    }

    /// False only when no value can pass both tests (used to warn about rules that can both
    /// match one token). Conservative: when unsure, the tests may overlap.
    pub fn may_overlap(&self, other: &Test) -> bool {
        use Test::*;
        let strings = |list: &[Scalar]| -> Option<Vec<String>> {
            list.iter()
                .map(|s| match s {
                    Scalar::String(x) => Some(x.clone()),
                    _ => None,
                })
                .collect()
        };
        match (self, other) {
            (Equals(a), Equals(b)) => a == b,
            (Equals(a), OneOf(l)) | (OneOf(l), Equals(a)) => l.contains(a),
            (OneOf(a), OneOf(b)) => a.iter().any(|x| b.contains(x)),
            (Equals(Scalar::String(s)), Glob(g)) | (Glob(g), Equals(Scalar::String(s))) => g.matches(s),
            (Equals(_), Glob(_)) | (Glob(_), Equals(_)) => false,
            (OneOf(l), Glob(g)) | (Glob(g), OneOf(l)) => match strings(l) {
                Some(list) => list.iter().any(|s| g.matches(s)),
                None => l.iter().any(|s| matches!(s, Scalar::String(x) if g.matches(x))),
            },
            (Glob(a), Glob(b)) => {
                let ((pa, sa), (pb, sb)) = (a.literal_ends(), b.literal_ends());
                (pa.starts_with(&pb) || pb.starts_with(&pa)) && (sa.ends_with(&sb) || sb.ends_with(&sa))
            }
            // A claim that is an array can satisfy `contains` while also being compared;
            // an array never equals a scalar, and never matches a glob.
            (Contains(_), Contains(_)) => true,
            (Contains(_), _) | (_, Contains(_)) => false,
        }
    }
}

impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Test::Equals(s) => write!(f, "= {s}"),
            Test::OneOf(l) => {
                let items: Vec<String> = l.iter().map(ToString::to_string).collect();
                write!(f, "one of [{}]", items.join(", "))
            }
            Test::Glob(g) => write!(f, "matches glob '{}'", g.pattern),
            Test::Contains(s) => write!(f, "contains {s}"),
        }
    }
}

/// A claim test: where and what.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimTest {
    pub path: ClaimPath,
    pub test: Test,
}

impl fmt::Display for ClaimTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.path, self.test)
    }
}

/// How one test fared against one token (for `policy explain` and refusal logs).
#[derive(Debug, Clone)]
pub struct TestOutcome<'a> {
    pub test: &'a ClaimTest,
    /// The claim's value, if present (and not null).
    pub found: Option<&'a Value>,
    pub holds: bool,
}

impl fmt::Display for TestOutcome<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.holds { "holds" } else { "fails" };
        match self.found {
            Some(v) => write!(f, "{}: {verdict} (claim is {v})", self.test),
            None => write!(f, "{}: fails (claim is missing)", self.test),
        }
    }
}

/// All the tests of a rule, in the order written (sorted by key, as TOML tables are).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Predicates(pub Vec<ClaimTest>);

impl Predicates {
    /// From a rule's `claims` table. `ctx` prefixes every error.
    pub fn from_toml(ctx: &str, table: &toml::Table) -> Result<Predicates, String> {
        let mut tests = Vec::with_capacity(table.len());
        for (key, v) in table {
            let path = ClaimPath::parse(key).map_err(|e| format!("{ctx}: {e}"))?;
            let test = Test::from_toml(&format!("{ctx}: claim '{key}'"), v)?;
            tests.push(ClaimTest { path, test });
        }
        Ok(Predicates(tests))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every test holds.
    pub fn hold(&self, claims: &serde_json::Map<String, Value>) -> bool {
        self.0.iter().all(|t| t.path.find(claims).is_some_and(|v| t.test.holds(v)))
    }

    /// The first test that fails, if any (in evaluation order).
    pub fn first_failure<'a>(
        &'a self,
        claims: &'a serde_json::Map<String, Value>,
    ) -> Option<TestOutcome<'a>> {
        self.outcomes(claims).into_iter().find(|o| !o.holds)
    }

    /// Every test with its outcome.
    pub fn outcomes<'a>(&'a self, claims: &'a serde_json::Map<String, Value>) -> Vec<TestOutcome<'a>> {
        self.0
            .iter()
            .map(|t| {
                let found = t.path.find(claims);
                TestOutcome { test: t, found, holds: found.is_some_and(|v| t.test.holds(v)) }
            })
            .collect()
    }

    /// False only when no token can satisfy both sets.
    pub fn may_overlap(&self, other: &Predicates) -> bool {
        self.0
            .iter()
            .all(|a| other.0.iter().filter(|b| b.path == a.path).all(|b| a.test.may_overlap(&b.test)))
    }

    /// The string a rule requires exactly of a top-level claim, if it has such a test
    /// (what rules are indexed by).
    pub fn exact_string(&self, claim: &str) -> Option<&str> {
        self.0.iter().find_map(|t| match (&t.path, &t.test) {
            (ClaimPath::Name(n), Test::Equals(Scalar::String(s))) if n == claim => Some(s.as_str()),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn preds(text: &str) -> Result<Predicates, String> {
        let t: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        Predicates::from_toml("rule 'r'", &t)
    }

    fn obj(v: Value) -> serde_json::Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("object"),
        }
    }

    #[test]
    fn typed_exact_tests_never_coerce() {
        let p = preds("ref = 'refs/heads/main'\nref_protected = true\nrun_attempt = 1").expect("valid");
        assert!(p.hold(&obj(json!({"ref": "refs/heads/main", "ref_protected": true, "run_attempt": 1}))));
        assert!(!p.hold(&obj(json!({"ref": "refs/heads/main", "ref_protected": "true", "run_attempt": 1}))));
        assert!(!p.hold(&obj(json!({"ref": "refs/heads/main", "ref_protected": true, "run_attempt": "1"}))));
        assert!(!p.hold(&obj(json!({"ref": "refs/heads/dev", "ref_protected": true, "run_attempt": 1}))));
    }

    #[test]
    fn missing_or_null_claims_never_match() {
        let p = preds("environment = { one_of = ['prod', 'staging'] }").expect("valid");
        assert!(!p.hold(&obj(json!({}))));
        assert!(!p.hold(&obj(json!({"environment": null}))));
        assert!(p.hold(&obj(json!({"environment": "prod"}))));
        let empty = obj(json!({}));
        let f = p.first_failure(&empty).expect("fails");
        assert!(f.to_string().contains("missing"), "{f}");
    }

    #[test]
    fn globs_are_anchored_and_cross_slashes() {
        let g = Glob::parse("acme/infra/.github/workflows/deploy.yml@*").expect("glob");
        assert!(g.matches("acme/infra/.github/workflows/deploy.yml@refs/heads/main"));
        assert!(!g.matches("evil/acme/infra/.github/workflows/deploy.yml@refs/heads/main"));
        assert!(!g.matches("acme/infra/.github/workflows/deploy.yml"));
        let e = Glob::parse("*@acme.example").expect("glob");
        assert!(e.matches("alice@acme.example"));
        assert!(!e.matches("alice@acme.example.evil"));
        assert!(!e.matches("alice@evilacme.example"));
        let q = Glob::parse("v?.*").expect("glob");
        assert!(q.matches("v1.2") && !q.matches("v10") && !q.matches("v.2"));
        let esc = Glob::parse("a\\*b").expect("glob");
        assert!(esc.matches("a*b") && !esc.matches("axb"));
        assert!(Glob::parse("*").is_err() && Glob::parse("**?").is_err(), "match-anything globs are refused");
        assert!(Glob::parse("a\\").is_err());
        // Many stars and a long near-miss: still fast (no exponential backtracking).
        let many = Glob::parse(&format!("{}c", "a*".repeat(30))).expect("glob");
        assert!(!many.matches(&format!("{}b", "a".repeat(5000))));
        assert!(many.matches(&format!("{}c", "a".repeat(5000))));
    }

    #[test]
    fn contains_and_json_pointers() {
        let p = preds("groups = { contains = 'sre' }\n'/kubernetes.io/namespace' = 'ci'\n'/a~1b/0' = 7")
            .expect("valid");
        let claims = obj(json!({"groups": ["dev", "sre"], "kubernetes.io": {"namespace": "ci"}, "a/b": [7]}));
        assert!(p.hold(&claims));
        let claims = obj(json!({"groups": "sre", "kubernetes.io": {"namespace": "ci"}, "a/b": [7]}));
        assert!(!p.hold(&claims), "contains needs an array");
    }

    #[test]
    fn refuses_bad_tests() {
        for (text, why) in [
            ("iss = 'x'", "issuer's configuration"),
            ("aud = 'x'", "issuer's configuration"),
            ("x = { one_of = [] }", "non-empty"),
            ("x = { glob = '*' }", "matches any value"),
            ("x = { regex = 'a' }", "unknown test"),
            ("x = { one_of = ['a'], glob = 'a*' }", "exactly one"),
            ("x = ['a']", "a test is"),
            ("'/a~2' = 'x'", "RFC 6901"),
        ] {
            let e = preds(text).expect_err(text);
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn overlap_is_detected_conservatively() {
        let p = |t: &str| preds(t).expect("valid");
        assert!(!p("repo = 'a'").may_overlap(&p("repo = 'b'")));
        assert!(p("repo = 'a'").may_overlap(&p("ref = 'main'")), "different claims: both can hold");
        assert!(p("repo = 'a'\nref = { glob = 'refs/heads/*' }").may_overlap(&p("repo = 'a'")));
        assert!(!p("ref = { glob = 'refs/heads/*' }").may_overlap(&p("ref = { glob = 'refs/tags/*' }")));
        assert!(!p("ref = 'refs/tags/v1'").may_overlap(&p("ref = { glob = 'refs/heads/*' }")));
        assert!(p("env = { one_of = ['a', 'b'] }").may_overlap(&p("env = { one_of = ['b'] }")));
        assert!(!p("env = { one_of = ['a'] }").may_overlap(&p("env = { one_of = ['b'] }")));
    }
}
