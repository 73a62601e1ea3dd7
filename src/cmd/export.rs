//! `sandboxctl export`: a client's sandbox as Kubernetes objects, rendered from the same
//! `SandboxSpec` as its unit (`render::kube`).

use std::io::Write as _;

use anyhow::{Context, Result, bail};

use crate::cli::{ExportArgs, ExportTarget};
use crate::host::HostProfile;
use crate::render::kube;
use crate::render::model::{Sandbox, SandboxSpec};
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::{NetworkMode, Settings};

pub fn export(layout: &Layout, args: &ExportArgs) -> Result<()> {
    let ExportTarget::Kube = args.to;
    let (client, settings) = crate::ops::clients::known(layout, &args.client)?;
    if let Some(ns) = &args.namespace {
        kube::check_namespace(ns)?;
    }
    if settings.proxy_held_key().is_some() {
        // The exported proxy Deployment cannot add the key yet, and the agent's base URL
        // points at the local forwarder: refused rather than exported broken.
        bail!(
            "{client}'s API key is held by the egress proxy, which the Kubernetes export cannot carry yet; export it with the key in the sandbox: `sandboxctl enable {client} --key-in-sandbox on`, then export again"
        );
    }
    let host = HostProfile::detect(&layout.cache_dir, false);
    let spec = SandboxSpec::new(&Sandbox {
        client: &client,
        settings: &settings,
        layout,
        host: &host,
    })?;
    let allowlist = settings.network == NetworkMode::Allowlist;
    let policy = if allowlist {
        let path = layout.policy_path(&client);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the network policy {}", path.display()))?;
        crate::proxy::policy::parse(&text).with_context(|| {
            format!(
                "invalid network policy {}; fix it before exporting",
                path.display()
            )
        })?;
        Some(text)
    } else {
        None
    };
    let secret_values = if args.include_secrets && !spec.secrets.is_empty() {
        Some(secret_values(&client, &spec)?)
    } else {
        None
    };
    let opts = kube::Options {
        flavor: args.flavor,
        namespace: args.namespace.clone(),
        uid: args
            .uid
            .unwrap_or_else(|| rustix::process::getuid().as_raw()),
        gid: args
            .gid
            .unwrap_or_else(|| rustix::process::getgid().as_raw()),
        policy,
        secret_values,
        dropped: dropped_settings(&settings),
    };
    let export = kube::render(&spec, allowlist, &opts)?;
    for d in &export.dropped {
        eprintln!("{client}: not exported: {d}");
    }
    match &args.output {
        Some(path) => {
            crate::base::atomic::write(path, export.text.as_bytes(), 0o600)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("{client}: wrote {}", path.display());
        }
        None => crate::base::output::ended(std::io::stdout().write_all(export.text.as_bytes()))?,
    }
    Ok(())
}

/// What the client's settings ask for that the spec does not carry and Kubernetes
/// cannot express.
fn dropped_settings(settings: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(dir) = &settings.claude_config {
        out.push(format!(
            "--claude-config {}: the shared login is copied on this host only (log in inside the pod)",
            crate::base::escape::display(&dir.to_string_lossy())
        ));
    }
    for p in &settings.ports {
        out.push(format!(
            "port forward of host port {} to sandbox port {}: use `kubectl port-forward` instead",
            p.host, p.container
        ));
    }
    out
}

/// The values of the client's Podman secrets, where this Podman can show them.
fn secret_values(client: &ClientName, spec: &SandboxSpec) -> Result<Vec<(String, Vec<u8>)>> {
    let help = crate::host::podman::command(["secret", "inspect", "--help"])
        .output()
        .context("cannot run podman")?;
    if !String::from_utf8_lossy(&help.stdout).contains("--showsecret") {
        bail!(
            "--include-secrets: this Podman cannot show secret values (`podman secret inspect --showsecret` needs Podman 4.5 or later); export without it and create the Secret with the command in the output"
        );
    }
    let mut out = Vec::new();
    for s in &spec.secrets {
        let o = crate::host::podman::command([
            "secret",
            "inspect",
            "--showsecret",
            "--format",
            "{{.SecretData}}",
            &s.podman_name,
        ])
        .output()
        .context("cannot run podman")?;
        if !o.status.success() {
            bail!(
                "cannot read secret {} of client {client}: {}; set it with `sandboxctl secret set {client} {}`",
                s.target,
                crate::host::podman::stderr_line(&o),
                s.target
            );
        }
        let mut v = o.stdout;
        // The template adds a line break.
        if v.ends_with(b"\n") {
            v.pop();
        }
        out.push((s.target.clone(), v));
    }
    Ok(out)
}
