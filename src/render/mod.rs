//! Rendering a client's unit: the container is described once (`model::SandboxSpec`)
//! and each target maps it to its own unit file. `quadlet` writes the `.container`
//! unit for the Quadlet generator; `plain` writes a systemd service running podman
//! where no usable generator exists. The host decides which (`HostProfile::unit_target`).

pub mod kube;
pub mod model;
pub mod plain;
pub mod ports;
pub mod quadlet;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::base::escape::{self, Raw};
pub use crate::base::unit_text::{MARKER, is_ours, volume_lines};
use crate::host::UnitTarget;
use crate::render::model::{AdaptationKind, SandboxSpec};
pub use crate::render::model::{CLIENT_LABEL, HOME, Sandbox};
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;

/// A client's unit: where it goes, its text, and which target it was rendered for.
#[derive(Debug, Clone)]
pub struct UnitFile {
    pub path: PathBuf,
    pub text: String,
    pub target: UnitTarget,
}

/// Where each target keeps a client's unit: the `.container` for Quadlet, the
/// `.service` for the plain target.
pub fn unit_path(layout: &Layout, client: &ClientName, target: &UnitTarget) -> PathBuf {
    match target {
        UnitTarget::Quadlet(_) => layout.unit_path(client),
        UnitTarget::Plain { .. } => plain_unit_path(layout, client),
    }
}

/// The plain target's service file.
pub fn plain_unit_path(layout: &Layout, client: &ClientName) -> PathBuf {
    layout.systemd_user_dir.join(client.service_name())
}

/// The link that starts the plain service with the user manager (what `systemctl
/// --user enable` makes; for a Quadlet unit the generator makes it from `[Install]`).
pub fn plain_wants_link(layout: &Layout, client: &ClientName) -> PathBuf {
    layout
        .systemd_user_dir
        .join("default.target.wants")
        .join(client.service_name())
}

/// A client's unit is private to its user: it names every project and mount.
pub const UNIT_MODE: u32 = 0o600;

/// Both places a client's unit may be, Quadlet's first.
pub fn all_unit_paths(layout: &Layout, client: &ClientName) -> [PathBuf; 2] {
    [layout.unit_path(client), plain_unit_path(layout, client)]
}

/// The client's written unit, the Quadlet unit or the plain service, whichever it has:
/// its path and text.
pub fn written_unit(layout: &Layout, client: &ClientName) -> Option<(PathBuf, String)> {
    all_unit_paths(layout, client)
        .into_iter()
        .find_map(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t)))
}

/// Renders the client's unit for the target this host gets.
pub fn unit_file(sandbox: &Sandbox<'_>) -> Result<UnitFile> {
    let spec = SandboxSpec::new(sandbox)?;
    let target = sandbox.host.unit_target()?;
    let text = match &target {
        UnitTarget::Quadlet(v) => quadlet::render(&spec, *v)?,
        UnitTarget::Plain { why } => {
            let podman = sandbox
                .host
                .podman_path
                .as_deref()
                .unwrap_or(Path::new("/usr/bin/podman"));
            plain::render(&spec, podman, why)?
        }
    };
    Ok(UnitFile {
        path: unit_path(sandbox.layout, sandbox.client, &target),
        text,
        target,
    })
}

/// Renders the unit text for a client.
pub fn render(sandbox: &Sandbox<'_>) -> Result<String> {
    Ok(unit_file(sandbox)?.text)
}

/// `Wants=` + `After=` a unit, with the reason shown above them.
#[derive(Debug, Serialize)]
struct Dependency {
    unit: Raw,
    why: &'static str,
}

fn dependencies(spec: &SandboxSpec) -> Result<Vec<Dependency>> {
    spec.dependencies
        .iter()
        .map(|d| {
            Ok(Dependency {
                unit: escape::raw("unit name", &d.unit)?,
                why: d.why,
            })
        })
        .collect()
}

/// Where stdout and stderr go on a host without journald.
#[derive(Debug, Serialize)]
struct LogFile {
    path: Raw,
    why: &'static str,
}

fn log_file(spec: &SandboxSpec) -> Result<Option<LogFile>> {
    spec.adaptations
        .iter()
        .find_map(|a| match &a.kind {
            AdaptationKind::LogToFile { runtime_relative } => Some((runtime_relative, a.why)),
            _ => None,
        })
        .map(|(rel, why)| -> Result<LogFile> {
            Ok(LogFile {
                path: escape::runtime_path("log file", rel)?,
                why,
            })
        })
        .transpose()
}

/// Without journald podman keeps the container's output in a file of its own (its
/// `k8s-file` log driver), which the agent can write to without end: capped there. With
/// journald the output goes to the journal, which has its own limits.
fn container_log_cap(spec: &SandboxSpec) -> Option<&'static str> {
    spec.adaptations
        .iter()
        .any(|a| matches!(a.kind, AdaptationKind::LogToFile { .. }))
        .then_some(CONTAINER_LOG_CAP)
}

const CONTAINER_LOG_CAP: &str = "--log-opt=max-size=8mb";
const CONTAINER_LOG_CAP_WHY: &str = "host adaptation: no journald here, so podman keeps the container's output in a file, which this caps";

/// The podman arguments of `limits` that no Quadlet key expresses: swap capped at the
/// memory limit (so a runaway process is killed rather than thrashing the host) and the
/// CPU quota.
fn limit_args(limits: &crate::sandbox::limits::Limits) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(m) = limits.memory {
        out.push(format!("--memory-swap={m}"));
    }
    if let Some(c) = limits.cpus {
        out.push(format!("--cpus={c}"));
    }
    out
}

/// Renders one of the unit templates: strict undefined values, trailing newline kept.
fn render_template(name: &str, source: &str, ctx: &impl Serialize) -> Result<String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.add_template(name, source)
        .with_context(|| format!("the {name} template is invalid"))?;
    let mut text = env
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .with_context(|| format!("cannot render the {name} template"))?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}
