//! Integration tests: the broker in-process on a free port, a real `redis-server` on another.

mod assertion_checks;
mod cli;
mod client_credentials;
mod deploy;
mod discovery;
mod federation;
mod helpers;
mod idp;
mod introspection;
mod issuer_keys;
mod jwt_bearer;
mod metrics;
mod policy_tools;
mod process;
mod rate_limit;
mod redis_outage;
mod reload;
mod replay;
mod request_form;
mod rotation;
mod strict_jose;
mod token_exchange;
