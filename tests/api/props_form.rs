//! Property tests of the token request form parser (`TokenRequest::parse`).
//!
//! * RFC 6749 section 3.2: "Request and response parameters MUST NOT be included more than
//!   once": whatever else the form holds, in whatever order, however the name is
//!   percent-encoded and whatever the values (empty ones too), a second occurrence of any
//!   single-valued parameter is `invalid_request`.
//! * `resource` (RFC 8707 section 2) and `audience` (RFC 8693 section 2.1) may repeat: every
//!   non-empty value is kept, in order.

use agent_sts::protocol::{ErrorCode, TokenRequest};
use proptest::prelude::*;

const SINGLE: [&str; 12] = [
    "grant_type",
    "client_assertion_type",
    "client_assertion",
    "client_id",
    "client_secret",
    "assertion",
    "scope",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "requested_token_type",
];

/// The MCP SDKs' client-credentials form (SEP-1046).
fn sdk_form() -> Vec<(String, String)> {
    [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("client_assertion", "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJib3QifQ.c2ln"),
        ("resource", "https://docs.mcp.test/mcp"),
        ("scope", "read write"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `name=value`, the name's bytes each percent-encoded or not as `mask` says.
fn pair(name: &str, value: &str, mask: u64) -> String {
    let name: String = name
        .bytes()
        .enumerate()
        .map(|(i, b)| if mask & (1 << (i % 64)) != 0 { format!("%{b:02X}") } else { (b as char).to_string() })
        .collect();
    let value: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
    format!("{name}={value}")
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[ -~]{0,12}", "\\PC{0,6}"]
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    /// RFC 6749 section 3.2.
    #[test]
    fn rfc6749_3_2_every_duplicate_of_a_single_valued_parameter_is_invalid_request(
        which in 0usize..SINGLE.len(),
        first in value(),
        second in value(),
        extra in proptest::collection::vec(("[a-z_]{1,10}", value()), 0..4),
        positions in (any::<proptest::sample::Index>(), any::<proptest::sample::Index>()),
        masks in (any::<u64>(), any::<u64>()),
        basic in any::<bool>(),
    ) {
        let name = SINGLE[which];
        let mut pairs: Vec<String> = sdk_form()
            .into_iter()
            .filter(|(k, _)| k != name)
            .chain(extra.into_iter().filter(|(k, _)| !SINGLE.contains(&k.as_str())))
            .map(|(k, v)| pair(&k, &v, 0))
            .collect();
        pairs.insert(positions.0.index(pairs.len() + 1), pair(name, &first, masks.0));
        pairs.insert(positions.1.index(pairs.len() + 1), pair(name, &second, masks.1));
        let body = pairs.join("&");
        let e = TokenRequest::parse(body.as_bytes(), basic).expect_err(&body);
        prop_assert_eq!(e.code, ErrorCode::InvalidRequest, "{}: {}", body, e.description);
        prop_assert!(e.description.contains(name), "{}", e.description);
    }

    /// RFC 8707 section 2, RFC 8693 section 2.1: resource and audience repeat.
    #[test]
    fn resource_and_audience_may_repeat_and_keep_their_order(
        resources in proptest::collection::vec(value(), 0..5),
        audiences in proptest::collection::vec(value(), 0..5),
    ) {
        let mut body: Vec<String> = sdk_form()
            .into_iter()
            .filter(|(k, _)| k != "resource")
            .map(|(k, v)| pair(&k, &v, 0))
            .collect();
        body.extend(resources.iter().map(|r| pair("resource", r, 0)));
        body.extend(audiences.iter().map(|a| pair("audience", a, 0)));
        let body = body.join("&");
        match TokenRequest::parse(body.as_bytes(), false) {
            Ok(req) => {
                let kept = |v: &[String]| v.iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>();
                prop_assert_eq!(&req.resources, &kept(&resources));
                prop_assert_eq!(&req.audiences, &kept(&audiences));
            }
            // A resource with a fragment is refused (RFC 8707 section 2), nothing else.
            Err(e) => {
                prop_assert_eq!(e.code, ErrorCode::InvalidTarget, "{}", e.description);
                prop_assert!(resources.iter().any(|r| r.contains('#')));
            }
        }
    }
}
