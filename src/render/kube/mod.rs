//! The Kubernetes target: a client's sandbox as multi-document YAML, from the same
//! `SandboxSpec` the unit renderers use. The agent runs as a `Sandbox`
//! (`agents.x-k8s.io/v1beta1`) or a plain `Pod` with `PersistentVolumeClaim`s; the
//! egress allowlist becomes a per-client proxy (`ConfigMap` + `Deployment` + `Service`)
//! and `NetworkPolicy` objects. As in the local sandbox, the allowlist agent has no DNS
//! (a recursive resolver is a way out around the proxy): it reaches the proxy by the
//! Service's address, from the variable the kubelet sets. What has no Kubernetes
//! counterpart is listed as dropped (a comment at the top of the output; the command
//! prints one line each).
//!
//! Objects are built as JSON values (sorted keys) and written by a small emitter that
//! double-quotes every string, so the output is the same bytes for the same input and
//! no value can change the document's structure.

pub(crate) mod pod;
pub(crate) mod proxy;
pub(crate) mod restricted;
#[cfg(test)]
mod tests;
pub(crate) mod yaml;

use std::fmt::Write as _;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::render::model::SandboxSpec;

#[allow(clippy::wildcard_imports)]
use pod::*;
#[allow(clippy::wildcard_imports)]
use proxy::*;
pub use restricted::restricted_violations;
#[allow(clippy::wildcard_imports)]
use yaml::*;

/// The port the proxy listens on in the cluster (the local forwarder's, too).
pub const PROXY_PORT: u16 = crate::units::proxy::FORWARDER_PORT;

/// Where the proxy's pod mounts the client's `network.toml`.
pub const POLICY_DIR: &str = "/etc/sandboxctl";

/// Where the image carries `sandboxctl` for the proxy.
pub const PROXY_BINARY: &str = "/usr/local/bin/sandboxctl";

/// Address ranges the proxy may not reach: private, shared, loopback, link-local
/// (cloud metadata) — the cluster's own networks are among them.
pub(crate) const INTERNAL_V4: [&str; 6] = [
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
];

pub(crate) const INTERNAL_V6: [&str; 3] = ["::1/128", "fc00::/7", "fe80::/10"];

/// The resource the agent runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Flavor {
    /// A `Sandbox` of the agent-sandbox controller, with volume claim templates.
    #[default]
    Sandbox,
    /// A plain `Pod` and `PersistentVolumeClaim`s (no controller; `podman kube play`).
    Pod,
}

/// What the export needs beyond the spec.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub flavor: Flavor,
    /// The namespace to use; `None`: `sandboxctl-CLIENT`, created by the output.
    pub namespace: Option<String>,
    /// The host user's ids: the container runs as them, as with `keep-id`.
    pub uid: u32,
    pub gid: u32,
    /// The client's `network.toml` (allowlist mode).
    pub policy: Option<String>,
    /// Secret values by name (`--include-secrets`); `None`: a placeholder.
    pub secret_values: Option<Vec<(String, Vec<u8>)>>,
    /// What the command found dropped beyond the spec (e.g. port forwards).
    pub dropped: Vec<String>,
}

/// The rendered export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub text: String,
    /// One line per setting that has no Kubernetes counterpart.
    pub dropped: Vec<String>,
}

/// A DNS label (RFC 1123), as namespaces and object names must be.
pub fn check_namespace(ns: &str) -> Result<()> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if !ok {
        bail!(
            "invalid namespace {}: use lowercase letters, digits and '-' (at most 63, e.g. sandboxes)",
            crate::base::escape::display(ns)
        );
    }
    Ok(())
}

pub(crate) struct Names {
    client: String,
    namespace: String,
}

impl Names {
    fn obj(&self, what: &str) -> String {
        format!("{}-{what}", self.client)
    }

    fn labels(&self, component: &str) -> Value {
        json!({
            "app.kubernetes.io/name": "agent-sandbox",
            "app.kubernetes.io/instance": self.client,
            "app.kubernetes.io/managed-by": "sandboxctl",
            "app.kubernetes.io/component": component,
        })
    }

    fn selector(&self, component: &str) -> Value {
        json!({
            "app.kubernetes.io/instance": self.client,
            "app.kubernetes.io/component": component,
        })
    }

    /// The variable the kubelet sets to a Service's cluster IP in each pod created
    /// after it (with `enableServiceLinks`): its name in capitals, `-` as `_`.
    fn service_host_var(&self, what: &str) -> String {
        format!(
            "{}_SERVICE_HOST",
            self.obj(what).to_ascii_uppercase().replace('-', "_")
        )
    }

    fn metadata(&self, name: &str, component: &str) -> Value {
        json!({
            "name": name,
            "namespace": self.namespace,
            "labels": self.labels(component),
        })
    }
}

/// Renders the client's objects. `allowlist` says whether the spec's lack of a network
/// is the allowlist mode's (a proxy is its way out) or `none`'s.
pub fn render(spec: &SandboxSpec, allowlist: bool, o: &Options) -> Result<Export> {
    if o.uid == 0 {
        bail!(
            "cannot export a sandbox that runs as uid 0: run sandboxctl as the user the sandbox is for, or pass --uid"
        );
    }
    if let Some(ns) = &o.namespace {
        check_namespace(ns)?;
    }
    let n = Names {
        client: spec.client.as_str().to_owned(),
        namespace: o
            .namespace
            .clone()
            .unwrap_or_else(|| format!("sandboxctl-{}", spec.client.as_str())),
    };
    let mut dropped = o.dropped.clone();
    let agent = agent_pod(spec, allowlist, o, &n, &mut dropped);
    let mut notes = Vec::new();
    let mut objects = Vec::new();
    if o.namespace.is_none() {
        let mut labels = n.labels("namespace");
        labels["pod-security.kubernetes.io/enforce"] = json!("restricted");
        objects.push(json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": n.namespace, "labels": labels},
        }));
    }
    if !spec.secrets.is_empty() {
        secret(spec, o, &n, &mut objects, &mut notes)?;
    }
    // Before the agent (`kubectl apply` creates in file order): the kubelet sets the
    // proxy Service's variables only in pods created after it, and the agent's policy
    // should be in place when its pod starts, not after.
    if allowlist {
        let policy = o.policy.as_deref().unwrap_or_default();
        objects.extend(proxy_objects(spec, o, &n, policy));
    }
    objects.push(agent_policy(spec, allowlist, &n));
    let agent_labels = {
        let mut l = n.labels("agent");
        for label in &spec.labels {
            l[label.key.as_str()] = json!(label.value);
        }
        l
    };
    match o.flavor {
        Flavor::Pod => {
            for (claim, size) in &agent.claims {
                objects.push(json!({
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": n.metadata(&n.obj(claim), "agent"),
                    "spec": claim_spec(size),
                }));
            }
            objects.push(json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": n.obj("agent"), "namespace": n.namespace, "labels": agent_labels},
                "spec": agent.spec,
            }));
        }
        Flavor::Sandbox => {
            let templates: Vec<Value> = agent
                .claims
                .iter()
                .map(|(claim, size)| {
                    json!({"metadata": {"name": claim, "labels": n.labels("agent")}, "spec": claim_spec(size)})
                })
                .collect();
            objects.push(json!({
                "apiVersion": "agents.x-k8s.io/v1beta1",
                "kind": "Sandbox",
                "metadata": n.metadata(&n.obj("agent"), "agent"),
                "spec": {
                    "podTemplate": {"metadata": {"labels": agent_labels}, "spec": agent.spec},
                    "volumeClaimTemplates": templates,
                },
            }));
        }
    }
    let mut text = header(&n, allowlist, &dropped, &notes);
    for obj in &objects {
        text.push_str("---\n");
        text.push_str(&yaml(obj));
    }
    Ok(Export { text, dropped })
}

/// The comment lines above the objects: what they are, what the cluster must do, what
/// was not exported and what to create by hand.
fn header(n: &Names, allowlist: bool, dropped: &[String], notes: &[String]) -> String {
    let mut text = format!(
        "# Kubernetes objects for sandboxctl client {} (namespace {}), written by sandboxctl export.\n",
        n.client, n.namespace
    );
    text.push_str(
        "# NetworkPolicy needs a network plugin that enforces it; without one the agent's egress is not confined.\n",
    );
    if allowlist {
        let _ = writeln!(
            text,
            "# The agent has no DNS and reaches the proxy at the address of Service {}, which the kubelet gives only to pods created after it: create the objects in this order, and recreate the agent if the Service is recreated.",
            n.obj("proxy")
        );
    }
    for d in dropped {
        let _ = writeln!(text, "# Not exported: {}", one_line(d));
    }
    for note in notes {
        let _ = writeln!(text, "# {}", one_line(note));
    }
    text
}
