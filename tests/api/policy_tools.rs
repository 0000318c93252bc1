//! `agent-sts policy explain` and `policy test`: hypothetical requests decided by the
//! broker's own decision code, on the shipped example policies and on broken expectations.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_agent-sts");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("run agent-sts")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every shipped example policy checks, and its cases pass.
#[test]
fn every_example_policy_passes_its_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("policies/examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        let cases = dir.join("cases").join(name);
        assert!(cases.exists(), "{name} has no cases file in policies/examples/cases/");
        let check = run(&["policy", "check", path.to_str().expect("utf8")]);
        assert!(check.status.success(), "{name}: {}", String::from_utf8_lossy(&check.stderr));
        let test =
            run(&["policy", "test", "--policy", path.to_str().expect("utf8"), cases.to_str().expect("utf8")]);
        assert!(test.status.success(), "{name}:\n{}", stdout(&test));
        assert!(stdout(&test).contains(", 0 failed"), "{}", stdout(&test));
        seen += 1;
    }
    assert!(seen >= 4, "the GitHub, GitLab, Kubernetes and SPIFFE examples at least");
}

/// A wrong expectation fails the run (exit 1) and prints what differed and why.
#[test]
fn a_mismatch_fails_and_says_why() {
    let dir = tempfile::tempdir().expect("tmp");
    let cases = dir.path().join("cases.toml");
    std::fs::write(
        &cases,
        r#"
[[case]]
name = "expects too much"
issuer = "github-actions"
claims = { sub = "repo:acme/infra:environment:production", repository_owner_id = "1234567", repository_id = "89012345", ref = "refs/heads/main", environment = "production", job_workflow_ref = "acme/infra/.github/workflows/deploy.yml@refs/heads/main" }
server = "infra"
scope = "apply"
expect = { outcome = "allowed", scopes = "apply plan" }

[[case]]
name = "expects a refusal that does not come"
agent = "infra-deployer"
server = "infra"
expect = { outcome = "refused", error = "invalid_target" }

[[case]]
name = "passes"
issuer = "github-actions"
claims = { sub = "x", repository_id = "1" }
server = "infra"
expect = { outcome = "refused", error = "invalid_grant" }
"#,
    )
    .expect("write");
    let out = run(&[
        "policy",
        "test",
        "--policy",
        "policies/examples/github-actions.toml",
        cases.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("FAIL  expects too much") && text.contains("expected scopes 'apply plan', got 'apply'"),
        "{text}"
    );
    assert!(
        text.contains("FAIL  expects a refusal that does not come")
            && text.contains("expected refused, got allowed"),
        "{text}"
    );
    assert!(text.contains("ok    passes"), "{text}");
    assert!(text.contains("3 case(s), 1 passed, 2 failed"), "{text}");
}

/// `policy explain` prints every test of every rule of the issuer, and the decision.
#[test]
fn explain_names_the_failing_predicate() {
    let dir = tempfile::tempdir().expect("tmp");
    let claims = dir.path().join("claims.json");
    std::fs::write(
        &claims,
        r#"{"iss": "https://token.actions.githubusercontent.com", "sub": "repo:acme/infra:ref:refs/heads/dev",
            "repository_owner_id": "1234567", "repository_id": "89012345", "ref": "refs/heads/dev",
            "environment": "production", "job_workflow_ref": "acme/infra/.github/workflows/deploy.yml@refs/heads/dev"}"#,
    )
    .expect("write");
    let out = run(&[
        "policy",
        "explain",
        "--policy",
        "policies/examples/github-actions.toml",
        "--claims",
        claims.to_str().expect("utf8"),
        "--server",
        "infra",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    assert!(text.contains("ref = 'refs/heads/main': fails (claim is \"refs/heads/dev\")"), "{text}");
    assert!(
        text.contains(
            "decision: REFUSED invalid_grant: no federation rule of issuer 'github-actions' matches"
        ),
        "{text}"
    );
    // An agent acting as itself.
    let out = run(&[
        "policy",
        "explain",
        "--policy",
        "policies/example.toml",
        "--agent",
        "example-agent",
        "--server",
        "tickets",
        "--scope",
        "read admin",
    ]);
    let text = stdout(&out);
    assert!(text.contains("decision: ALLOWED") && text.contains("scope: read"), "{text}");
    let out = run(&[
        "policy",
        "explain",
        "--policy",
        "policies/example.toml",
        "--agent",
        "retired-agent",
        "--server",
        "docs",
    ]);
    assert!(
        stdout(&out).contains("REFUSED invalid_client: agent 'retired-agent' is disabled"),
        "{}",
        stdout(&out)
    );
}
