//! Integration tests: the broker in-process on a free port, a real `redis-server` on another.

mod assertion_checks;
mod cli;
mod client_credentials;
mod delegation;
mod discovery;
mod federation;
mod fuzz_findings;
mod helpers;
mod idp;
mod issuer_keys;
mod jwt_bearer;
mod policy_tools;
mod props_act;
mod props_form;
mod props_jose;
mod props_policy;
mod proxy;
mod redis_outage;
mod replay;
mod request_form;
mod strict_jose;
mod token_cli;
mod token_exchange;
mod upstream;
