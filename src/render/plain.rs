//! The plain target: a systemd user service (`agent-<client>.service`) that runs
//! `podman run` itself, for hosts without a usable Quadlet generator (Podman < 4.4).
//! It carries the same container as the Quadlet unit (same `SandboxSpec`) with the
//! lifecycle the Quadlet generator emits: a fresh container per start (`--replace
//! --rm`, cid file under the runtime directory), `Type=notify` through conmon, and
//! the container removed at stop.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::base::escape::{self, Raw, Word};
use crate::render::model::{AdaptationKind, Network, SandboxSpec};

const TEMPLATE: &str = include_str!("../../templates/agent.service.j2");

/// The template's context, every value escaped.
#[derive(Debug, Serialize)]
struct Unit {
    client: Raw,
    agent: &'static str,
    autonomy: &'static str,
    host_summary: String,
    why: String,
    dependencies: Vec<super::Dependency>,
    restart_on_failure: bool,
    timeout_start_sec: u32,
    remove_stale_cid: Option<&'static str>,
    log_file: Option<super::LogFile>,
    podman: Word,
    run_args: Vec<Word>,
}

fn arg(value: &str) -> Result<Word> {
    escape::word("podman argument", value)
}

/// `podman run …` for `spec`, in the order Quadlet writes it, one option per word.
pub fn run_args(spec: &SandboxSpec) -> Result<Vec<Word>> {
    let cgroups_disabled = spec
        .adaptation(|k| *k == AdaptationKind::CgroupsDisabled)
        .is_some();
    let mut a = vec![
        arg("run")?,
        arg(&format!("--name={}", spec.container_name))?,
        escape::specifier_word("--cidfile=%t/%N.cid"),
        arg("--replace")?,
        arg("--rm")?,
        arg("--cgroups=split")?,
        arg(&format!("--hostname={}", spec.hostname))?,
        arg(&format!("--workdir={}", spec.working_dir))?,
    ];
    for t in spec.tmpfs() {
        a.push(arg(&format!("--tmpfs={}", t.spec()))?);
    }
    if spec.security.init {
        a.push(arg("--init")?);
    }
    if spec.network == Network::None {
        a.push(arg("--network=none")?);
    }
    if spec.pull_never() {
        // See `model::PULL_NEVER_WHY`.
        a.push(arg("--pull=never")?);
    }
    a.push(arg("--sdnotify=conmon")?);
    a.push(arg("-d")?);
    if spec.security.no_new_privileges {
        a.push(arg("--security-opt=no-new-privileges")?);
    }
    for c in &spec.security.drop_capabilities {
        a.push(arg(&format!("--cap-drop={c}"))?);
    }
    if spec.security.read_only {
        a.push(arg("--read-only")?);
    }
    a.push(arg(&format!("--userns={}", spec.userns.as_str()))?);
    for b in spec.binds() {
        a.push(arg("-v")?);
        a.push(escape::volume_word(
            "volume",
            b.escape_source(),
            &b.target,
            &b.options(),
        )?);
    }
    for e in &spec.environment {
        a.push(arg(&format!("--env={}", e.assignment()))?);
    }
    for l in &spec.labels {
        a.push(arg(&format!("--label={}", l.assignment()))?);
    }
    if let Some(u) = spec.auto_update {
        a.push(arg(&format!(
            "--label={}={}",
            crate::render::model::AUTO_UPDATE_LABEL,
            u.as_str()
        ))?);
    }
    for s in &spec.secrets {
        a.push(arg(&format!("--secret={}", s.spec()))?);
    }
    if let Some(p) = spec.limits.pids {
        a.push(arg(&format!("--pids-limit={p}"))?);
    }
    if let Some(m) = spec.limits.memory {
        a.push(arg(&format!("--memory={m}"))?);
    }
    for l in super::limit_args(&spec.limits) {
        a.push(arg(&l)?);
    }
    if cgroups_disabled {
        a.push(arg("--cgroups=disabled")?);
    }
    if let Some(cap) = super::container_log_cap(spec) {
        a.push(arg(cap)?);
    }
    for x in &spec.extra_podman_args {
        a.push(arg(x)?);
    }
    a.push(escape::word("image", &spec.image)?);
    Ok(a)
}

/// The service text for `spec`, running `podman`; `why` says why it is not a Quadlet
/// unit.
pub fn render(spec: &SandboxSpec, podman: &Path, why: &str) -> Result<String> {
    escape::check("reason", why)?;
    let podman = podman
        .to_str()
        .with_context(|| format!("the podman path {} is not UTF-8", podman.display()))?;
    let ctx = Unit {
        client: escape::raw("client name", spec.client.as_str())?,
        agent: spec.agent.as_str(),
        autonomy: spec.autonomy.as_str(),
        host_summary: escape::comment(&spec.host_summary),
        why: escape::comment(why),
        dependencies: super::dependencies(spec)?,
        restart_on_failure: spec.service.restart_on_failure,
        timeout_start_sec: spec.service.timeout_start_sec,
        remove_stale_cid: spec
            .adaptation(|k| *k == AdaptationKind::RemoveStaleCidFile)
            .map(|a| a.why),
        log_file: super::log_file(spec)?,
        podman: escape::word("podman path", podman)?,
        run_args: run_args(spec)?,
    };
    super::render_template("agent.service", TEMPLATE, &ctx)
}
