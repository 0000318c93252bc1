//! Integration tests: the broker in-process on a free port, a real `redis-server` on another.

mod assertion_checks;
mod cli;
mod client_credentials;
mod discovery;
mod helpers;
mod jwt_bearer;
mod redis_cluster;
mod redis_outage;
mod replay;
mod replay_cluster;
mod replay_loss;
mod replay_support;
mod replay_topologies;
mod request_form;
mod token_exchange;
