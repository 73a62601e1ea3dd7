//! Rendering a client's unit: the container is described once (`model::SandboxSpec`)
//! and each target maps it to its own unit file. `quadlet` writes the `.container`
//! unit for the Quadlet generator.

pub mod quadlet;

use anyhow::Result;

use crate::model::SandboxSpec;
pub use crate::model::{CLIENT_LABEL, HOME, Sandbox, claude_json_beside};

/// The first line of every unit sandboxctl writes; a unit without it is the user's.
pub const MARKER: &str = "# Managed by sandboxctl for client ";

/// Renders the unit text for a client.
pub fn render(sandbox: &Sandbox<'_>) -> Result<String> {
    let spec = SandboxSpec::new(sandbox)?;
    quadlet::render(&spec, quadlet::target_version(sandbox.host))
}

/// Whether an existing unit file was written by sandboxctl.
pub fn is_ours(text: &str) -> bool {
    text.starts_with(MARKER)
}
