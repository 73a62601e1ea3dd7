//! What sandboxctl keeps for a client outside its settings and reads back of what the agent
//! wrote: Podman secrets and proxy-held keys, the Claude login sync, the git pins that
//! keep a project's git config and hooks out of the agent's reach, and masked files.

pub mod claude_login;
pub mod git_guard;
pub mod mask;
pub mod secrets;
