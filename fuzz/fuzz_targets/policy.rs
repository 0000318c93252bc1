//! The policy loader (`policy::Policy::from_sources`) on TOML text: the input split at NUL
//! bytes into up to four files (an agent in one file may use a server of another).
//! Invariants:
//! * no panic, also not when rendering the error or the summary;
//! * a policy that loads renders its summary (`agent-sts policy check`), and is consistent:
//!   ids and resources resolve to their own entries, every allowance and default scope is
//!   within what its server offers, every key is known by its `kid`.
#![no_main]

use agent_sts::policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut sources = Vec::new();
    for (i, part) in data.split(|b| *b == 0).take(4).enumerate() {
        let Ok(text) = std::str::from_utf8(part) else { return };
        sources.push((format!("policy-{i}.toml"), text.to_string()));
    }
    let policy = match Policy::from_sources(&sources) {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let summary = policy.summary();
    assert!(summary.starts_with("policy OK"), "{summary}");

    for (i, s) in policy.servers.iter().enumerate() {
        assert_eq!(policy.server_by_resource(&s.resource), Some(i), "resource {}", s.resource);
        assert_eq!(policy.server_by_audience(&s.id), Some(i), "server id {}", s.id);
    }
    for (i, a) in policy.agents.iter().enumerate() {
        assert_eq!(policy.agent_index(&a.id), Some(i), "agent {}", a.id);
        for al in &a.allow {
            let server = &policy.servers[al.server];
            assert!(
                al.scopes.is_subset(&server.scopes),
                "{}: {} not within {}",
                a.id,
                al.scopes,
                server.scopes
            );
            assert!(
                al.default_scopes.is_subset(&al.scopes),
                "{}: defaults {} not allowed",
                a.id,
                al.default_scopes
            );
        }
        for k in &a.keys {
            assert!(a.key_for(Some(k.kid()), k.alg()).is_ok(), "{}: key {} not found by kid", a.id, k.kid());
        }
    }
    for (i, iss) in policy.issuers.iter().enumerate() {
        assert_eq!(policy.issuer_by_iss(&iss.issuer), Some(i));
        assert_eq!(policy.issuer_index(&iss.id), Some(i));
    }
});
