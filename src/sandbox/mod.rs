//! The domain: a client, its agent and the agent's provider, where its state lives, its
//! settings with their port forwards and limits, and its git identity. Imports only `base`.

pub mod agent;
pub mod client;
pub mod forward;
pub mod git_identity;
pub mod layout;
pub mod limits;
pub mod settings;
