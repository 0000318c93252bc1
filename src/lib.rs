//! agent-sts: a security token service for autonomous agents.
//!
//! Agents trade short-lived signed assertions (RFC 7523) for short-lived, audience-bound
//! (RFC 8707), downscoped RFC 9068 access tokens for MCP servers; token exchange (RFC 8693)
//! re-scopes them. The data flow, one module each:
//!
//! form ▶ [`protocol::TokenRequest`] ▶ [`client_auth`] (assertion checklist + [`replay`]) ▶
//! [`grants`] ▶ [`policy::decide`] ▶ [`mint`] ▶ JSON (in [`http`]).

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod agent;
pub mod broker;
pub mod client_auth;
pub mod clock;
pub mod config;
pub mod crypto;
mod grants;
pub mod http;
pub mod introspection;
pub mod issuers;
pub mod mint;
pub mod ops;
pub mod policy;
pub mod protocol;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod replay;
pub mod revocation;
pub mod startup;
pub mod telemetry;

#[cfg(test)]
mod conformance_tests;
