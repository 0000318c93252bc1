//! One function per grant type. Each authenticates, checks what its RFC requires, and
//! returns the [`ExchangeContext`](crate::broker::ExchangeContext) for the policy and mint.

mod client_credentials;
mod delegated;
mod federated;
mod id_jag;
mod jwt_bearer;
mod token_exchange;

pub(crate) use client_credentials::client_credentials;
pub(crate) use delegated::on_behalf_of;
pub(crate) use federated::federated;
pub(crate) use id_jag::id_jag;
pub(crate) use jwt_bearer::jwt_bearer;
pub(crate) use token_exchange::token_exchange;
