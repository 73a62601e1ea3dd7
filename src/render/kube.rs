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

use std::fmt::Write as _;

use anyhow::{Result, bail};
use serde_json::{Map, Value, json};

use crate::render::model::{BindRole, Mount, Network, SandboxSpec};

/// The port the proxy listens on in the cluster (the local forwarder's, too).
pub const PROXY_PORT: u16 = crate::units::proxy::FORWARDER_PORT;

/// Where the proxy's pod mounts the client's `network.toml`.
pub const POLICY_DIR: &str = "/etc/sandboxctl";

/// Where the image carries `sandboxctl` for the proxy.
pub const PROXY_BINARY: &str = "/usr/local/bin/sandboxctl";

/// Address ranges the proxy may not reach: private, shared, loopback, link-local
/// (cloud metadata) — the cluster's own networks are among them.
const INTERNAL_V4: [&str; 6] = [
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
];
const INTERNAL_V6: [&str; 3] = ["::1/128", "fc00::/7", "fe80::/10"];

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

/// Size of each state claim.
fn claim_size(name: &str) -> &'static str {
    match name {
        "history" => "1Gi",
        "claude" | "codex" => "2Gi",
        "home" => "5Gi",
        _ => "10Gi",
    }
}

/// `1g` → `1Gi` (podman's binary suffixes as Kubernetes quantities).
fn quantity(size: &str) -> String {
    let (num, suffix) = size.split_at(size.trim_end_matches(char::is_alphabetic).len());
    let unit = match suffix.to_ascii_lowercase().as_str() {
        "k" => "Ki",
        "m" => "Mi",
        "g" => "Gi",
        "t" => "Ti",
        _ => "",
    };
    format!("{num}{unit}")
}

fn tmpfs_size(options: &str) -> Option<String> {
    options
        .split(',')
        .find_map(|o| o.strip_prefix("size="))
        .map(quantity)
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

struct Names {
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

/// The pod- and container-level confinement, from the spec's `Security`.
fn security(spec: &SandboxSpec, o: &Options) -> (Value, Value) {
    let seccomp = json!({"type": "RuntimeDefault"});
    let pod = json!({
        "runAsUser": o.uid,
        "runAsGroup": o.gid,
        "runAsNonRoot": true,
        "fsGroup": o.gid,
        "seccompProfile": seccomp,
    });
    let drop: Vec<String> = spec
        .security
        .drop_capabilities
        .iter()
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let container = json!({
        "runAsUser": o.uid,
        "runAsGroup": o.gid,
        "runAsNonRoot": true,
        "allowPrivilegeEscalation": !spec.security.no_new_privileges,
        "readOnlyRootFilesystem": spec.security.read_only,
        "privileged": false,
        "capabilities": {"drop": drop},
        "seccompProfile": seccomp,
    });
    (pod, container)
}

fn memory_dir(name: &str, size: Option<String>) -> Value {
    let mut empty = Map::new();
    empty.insert("medium".into(), json!("Memory"));
    if let Some(s) = size {
        empty.insert("sizeLimit".into(), json!(s));
    }
    json!({"name": name, "emptyDir": empty})
}

/// The agent's pod spec, the claims it needs (name, size) and what was dropped.
struct AgentPod {
    spec: Value,
    claims: Vec<(String, &'static str)>,
}

fn agent_pod(
    spec: &SandboxSpec,
    allowlist: bool,
    o: &Options,
    n: &Names,
    dropped: &mut Vec<String>,
) -> AgentPod {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut claims = Vec::new();
    let mut projects = 0;
    for m in &spec.mounts {
        match m {
            Mount::Tmpfs(t) => {
                let name = format!("tmpfs-{}", volumes.len() + 1);
                volumes.push(memory_dir(&name, tmpfs_size(&t.options)));
                mounts.push(json!({"name": name, "mountPath": t.target}));
            }
            Mount::Bind(b) => {
                let claim = match b.role {
                    BindRole::State(s) => s.to_owned(),
                    BindRole::Project => {
                        projects += 1;
                        format!("project-{projects}")
                    }
                    // No git on a host runs in the project: nothing to protect; and
                    // the proxy is a Service in the cluster.
                    BindRole::GitPin | BindRole::ProxySocket => continue,
                    BindRole::NotifyEvents => {
                        dropped.push(
                            "notifications: the agent event socket is on this desktop".to_owned(),
                        );
                        continue;
                    }
                    BindRole::User | BindRole::Mask => {
                        dropped.push(host_mount_dropped(b));
                        continue;
                    }
                };
                let mut mount = Map::new();
                mount.insert("name".into(), json!(claim));
                mount.insert("mountPath".into(), json!(b.target));
                if b.access == crate::render::model::Access::ReadOnly {
                    mount.insert("readOnly".into(), json!(true));
                }
                mounts.push(Value::Object(mount));
                let size = claim_size(&claim);
                claims.push((claim, size));
            }
        }
    }
    // podman --read-only gives /tmp, /var/tmp and /run a tmpfs; so does this pod.
    if spec.security.read_only {
        for (name, path) in [("tmp", "/tmp"), ("var-tmp", "/var/tmp"), ("run", "/run")] {
            volumes.push(memory_dir(name, Some("256Mi".to_owned())));
            mounts.push(json!({"name": name, "mountPath": path}));
        }
    }
    if !spec.secrets.is_empty() {
        volumes.push(secret_volume(spec, n));
        mounts.push(json!({
            "name": "secrets",
            "mountPath": crate::state::secrets::MOUNT_DIR,
            "readOnly": true,
        }));
    }
    if o.flavor == Flavor::Pod {
        for (claim, _) in &claims {
            volumes.push(json!({
                "name": claim,
                "persistentVolumeClaim": {"claimName": n.obj(claim)},
            }));
        }
    }
    let env = agent_env(spec, n);
    for a in &spec.extra_podman_args {
        dropped.push(format!(
            "podman argument {}: no Kubernetes counterpart",
            crate::base::escape::display(a)
        ));
    }
    let (pod_sec, container_sec) = security(spec, o);
    let container = json!({
        "name": "agent",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "workingDir": spec.working_dir,
        "env": env,
        "securityContext": container_sec,
        "volumeMounts": mounts,
    });
    let mut pod = json!({
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "hostname": spec.hostname,
        "restartPolicy": if spec.service.restart_on_failure { "OnFailure" } else { "Never" },
        "securityContext": pod_sec,
        "containers": [container],
        "volumes": volumes,
    });
    if spec.security.init {
        // The pod's pause process is PID 1 and reaps orphans, as podman's --init does.
        pod["shareProcessNamespace"] = json!(true);
    }
    if allowlist {
        // No DNS, as in the local sandbox: a recursive resolver answers for any name, so
        // queries would carry data past the proxy. The agent finds the proxy by the
        // Service's address, which the kubelet sets in the environment only with
        // service links; `None` must name a server, and the pod's own loopback has none.
        pod["enableServiceLinks"] = json!(true);
        pod["dnsPolicy"] = json!("None");
        pod["dnsConfig"] = json!({"nameservers": ["127.0.0.1"]});
    }
    AgentPod { spec: pod, claims }
}

/// The model's environment, with the proxy variables pointing at the proxy Service's
/// address: `$(…_SERVICE_HOST)`, which the kubelet expands from the Service's variable
/// (set only if the Service exists before the pod; `render` writes it first).
fn agent_env(spec: &SandboxSpec, n: &Names) -> Vec<Value> {
    let local_proxy = format!("http://127.0.0.1:{PROXY_PORT}");
    let cluster_proxy = format!("http://$({}):{PROXY_PORT}", n.service_host_var("proxy"));
    spec.environment
        .iter()
        // The relay to the local proxy socket is not needed: the proxy is a Service.
        .filter(|e| !e.name.starts_with("SANDBOX_PROXY_"))
        .map(|e| {
            let value = if e.value == local_proxy {
                cluster_proxy.clone()
            } else {
                e.value.clone()
            };
            json!({"name": e.name, "value": value})
        })
        .collect()
}

fn host_mount_dropped(b: &crate::render::model::Bind) -> String {
    if b.role == BindRole::Mask {
        return format!(
            "the mask of {}: the cluster's project volume has no masks, so leave that file out of what you copy into it",
            crate::base::escape::display(&b.target)
        );
    }
    let (crate::render::model::BindSource::Host(source)
    | crate::render::model::BindSource::Runtime(source)) = &b.source;
    format!(
        "mount {}: a host path has no Kubernetes counterpart (copy the data into a volume)",
        crate::base::escape::display(&format!("{source}:{}", b.target))
    )
}

/// The client's Secret as files under `/run/secrets`, as the Podman secrets are.
fn secret_volume(spec: &SandboxSpec, n: &Names) -> Value {
    let items: Vec<Value> = spec
        .secrets
        .iter()
        .map(|s| json!({"key": s.target, "path": s.target}))
        .collect();
    json!({
        "name": "secrets",
        "secret": {"secretName": n.obj("credentials"), "defaultMode": 0o440, "items": items},
    })
}

fn claim_spec(size: &str) -> Value {
    json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
    })
}

fn proxy_objects(spec: &SandboxSpec, o: &Options, n: &Names, policy: &str) -> Vec<Value> {
    let (pod_sec, container_sec) = security(spec, o);
    let labels = n.labels("proxy");
    let config = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": n.metadata(&n.obj("network-policy"), "proxy"),
        "data": {crate::sandbox::layout::POLICY_FILE: policy},
    });
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": n.metadata(&n.obj("proxy"), "proxy"),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": n.selector("proxy")},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "securityContext": pod_sec,
                    "containers": [{
                        "name": "proxy",
                        "image": spec.image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": [
                            PROXY_BINARY, "proxy",
                            "--client", n.client,
                            "--policy", format!("{POLICY_DIR}/{}", crate::sandbox::layout::POLICY_FILE),
                            "--listen-tcp", format!("0.0.0.0:{PROXY_PORT}"),
                        ],
                        "env": [{"name": "HOME", "value": "/tmp"}],
                        "ports": [{"name": "proxy", "containerPort": PROXY_PORT, "protocol": "TCP"}],
                        "securityContext": container_sec,
                        "volumeMounts": [
                            {"name": "policy", "mountPath": POLICY_DIR, "readOnly": true},
                            {"name": "tmp", "mountPath": "/tmp"},
                        ],
                    }],
                    "volumes": [
                        {"name": "policy", "configMap": {"name": n.obj("network-policy")}},
                        memory_dir("tmp", Some("64Mi".to_owned())),
                    ],
                },
            },
        },
    });
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": n.metadata(&n.obj("proxy"), "proxy"),
        "spec": {
            "selector": n.selector("proxy"),
            "ports": [{"name": "proxy", "port": PROXY_PORT, "targetPort": PROXY_PORT, "protocol": "TCP"}],
        },
    });
    let except_v4: Vec<&str> = INTERNAL_V4.to_vec();
    let except_v6: Vec<&str> = INTERNAL_V6.to_vec();
    let proxy_policy = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": n.metadata(&n.obj("proxy"), "proxy"),
        "spec": {
            "podSelector": {"matchLabels": n.selector("proxy")},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": n.selector("agent")}}],
                "ports": [{"protocol": "TCP", "port": PROXY_PORT}],
            }],
            "egress": [
                {"to": [
                    {"ipBlock": {"cidr": "0.0.0.0/0", "except": except_v4}},
                    {"ipBlock": {"cidr": "::/0", "except": except_v6}},
                ]},
                dns_rule(),
            ],
        },
    });
    vec![config, deployment, service, proxy_policy]
}

/// Egress to the cluster's DNS, for the proxy, which resolves the names it allows.
fn dns_rule() -> Value {
    json!({
        "to": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    })
}

/// The agent pod's network policy: nothing in; out only what its mode allows.
fn agent_policy(spec: &SandboxSpec, allowlist: bool, n: &Names) -> Value {
    let egress = match (spec.network, allowlist) {
        // The proxy's port and nothing else: no DNS (the agent has the proxy's address).
        (Network::None, true) => json!([
            {
                "to": [{"podSelector": {"matchLabels": n.selector("proxy")}}],
                "ports": [{"protocol": "TCP", "port": PROXY_PORT}],
            },
        ]),
        (Network::None, false) => json!([]),
        // Open: anything but the link-local range, where cloud metadata services are.
        (Network::Default, _) => json!([
            {"to": [
                {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}},
                {"ipBlock": {"cidr": "::/0", "except": ["fe80::/10"]}},
            ]},
        ]),
    };
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": n.metadata(&n.obj("agent"), "agent"),
        "spec": {
            "podSelector": {"matchLabels": n.selector("agent")},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": egress,
        },
    })
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The client's credentials: a `Secret` with the values, or a note saying how to make it.
fn secret(
    spec: &SandboxSpec,
    o: &Options,
    n: &Names,
    objects: &mut Vec<Value>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let Some(values) = &o.secret_values else {
        let mut cmd = format!(
            "kubectl create secret generic {} -n {}",
            n.obj("credentials"),
            n.namespace
        );
        for s in &spec.secrets {
            let _ = write!(cmd, " --from-file={0}=./{0}", s.target);
        }
        notes.push(format!(
            "Secret {} is not included (values only with --include-secrets); create it: {cmd}",
            n.obj("credentials")
        ));
        return Ok(());
    };
    let mut data = Map::new();
    for s in &spec.secrets {
        let Some((_, v)) = values.iter().find(|(k, _)| *k == s.target) else {
            bail!(
                "secret {} of client {} has no value: set it with `sandboxctl secret set {} {}`",
                s.target,
                n.client,
                n.client,
                s.target
            );
        };
        data.insert(s.target.clone(), json!(base64(v)));
    }
    objects.push(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": n.metadata(&n.obj("credentials"), "agent"),
        "type": "Opaque",
        "data": data,
    }));
    Ok(())
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

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Checks a pod spec against the Pod Security Standard `restricted` profile, field by
/// field; returns the violations (empty: it passes).
pub fn restricted_violations(pod: &Value) -> Vec<String> {
    const VOLUMES: [&str; 8] = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    let mut v = Vec::new();
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[host] == json!(true) {
            v.push(format!("spec.{host} is true"));
        }
    }
    for vol in pod["volumes"].as_array().into_iter().flatten() {
        let kinds: Vec<&String> = vol
            .as_object()
            .map(|m| m.keys().filter(|k| *k != "name").collect())
            .unwrap_or_default();
        for k in kinds {
            if !VOLUMES.contains(&k.as_str()) {
                v.push(format!("volume {} is of type {k}", vol["name"]));
            }
        }
    }
    let pod_sc = &pod["securityContext"];
    if let Some(sysctls) = pod_sc["sysctls"].as_array()
        && !sysctls.is_empty()
    {
        v.push("spec.securityContext.sysctls is set".to_owned());
    }
    let containers = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| pod[*k].as_array().into_iter().flatten());
    for c in containers {
        let name = c["name"].as_str().unwrap_or("?");
        let sc = &c["securityContext"];
        if sc["privileged"] == json!(true) {
            v.push(format!("container {name} is privileged"));
        }
        if sc["allowPrivilegeEscalation"] != json!(false) {
            v.push(format!(
                "container {name}: allowPrivilegeEscalation is not false"
            ));
        }
        let drop = sc["capabilities"]["drop"].as_array();
        if !drop.is_some_and(|d| d.contains(&json!("ALL"))) {
            v.push(format!("container {name} does not drop ALL capabilities"));
        }
        for add in sc["capabilities"]["add"].as_array().into_iter().flatten() {
            if add != &json!("NET_BIND_SERVICE") {
                v.push(format!("container {name} adds capability {add}"));
            }
        }
        let non_root = sc["runAsNonRoot"] == json!(true)
            || (sc["runAsNonRoot"].is_null() && pod_sc["runAsNonRoot"] == json!(true));
        if !non_root {
            v.push(format!("container {name}: runAsNonRoot is not true"));
        }
        for ctx in [sc, pod_sc] {
            if ctx["runAsUser"] == json!(0) {
                v.push(format!("container {name}: runAsUser is 0"));
            }
        }
        let seccomp = if sc["seccompProfile"]["type"].is_null() {
            &pod_sc["seccompProfile"]["type"]
        } else {
            &sc["seccompProfile"]["type"]
        };
        if seccomp != &json!("RuntimeDefault") && seccomp != &json!("Localhost") {
            v.push(format!(
                "container {name}: seccompProfile is not RuntimeDefault or Localhost"
            ));
        }
        for p in c["ports"].as_array().into_iter().flatten() {
            if p["hostPort"].as_u64().is_some_and(|h| h != 0) {
                v.push(format!("container {name} uses a hostPort"));
            }
        }
        if !sc["procMount"].is_null() && sc["procMount"] != json!("Default") {
            v.push(format!("container {name}: procMount is not Default"));
        }
    }
    v
}

// ---- YAML --------------------------------------------------------------------------

/// A value as block YAML. Every string is double-quoted with escapes for everything
/// outside printable ASCII, so no value can start a new key, document or comment.
pub fn yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => map(&mut out, m, 0),
        _ => {
            out.push_str(&scalar(v).unwrap_or_default());
            out.push('\n');
        }
    }
    out
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xffff => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08x}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

fn key(k: &str) -> String {
    let plain = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c))
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "true" | "false" | "on" | "off" | "null"
        );
    if plain { k.to_owned() } else { quote(k) }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("null".to_owned()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(quote(s)),
        Value::Array(a) if a.is_empty() => Some("[]".to_owned()),
        Value::Object(m) if m.is_empty() => Some("{}".to_owned()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn map(out: &mut String, m: &Map<String, Value>, indent: usize) {
    for (k, v) in m {
        pad(out, indent);
        out.push_str(&key(k));
        out.push(':');
        nested(out, v, indent);
    }
}

/// A value after `key:`.
fn nested(out: &mut String, v: &Value, indent: usize) {
    if let Some(s) = scalar(v) {
        out.push(' ');
        out.push_str(&s);
        out.push('\n');
        return;
    }
    out.push('\n');
    match v {
        Value::Object(m) => map(out, m, indent + 2),
        Value::Array(a) => seq(out, a, indent),
        _ => {}
    }
}

fn seq(out: &mut String, a: &[Value], indent: usize) {
    for item in a {
        pad(out, indent);
        out.push('-');
        if let Some(s) = scalar(item) {
            out.push(' ');
            out.push_str(&s);
            out.push('\n');
            continue;
        }
        let mut inner = String::new();
        match item {
            Value::Object(m) => map(&mut inner, m, indent + 2),
            Value::Array(a) => seq(&mut inner, a, indent + 2),
            _ => {}
        }
        // The first line goes after the dash.
        out.push(' ');
        out.push_str(&inner[indent + 2..]);
    }
}

#[cfg(test)]
#[path = "kube_tests.rs"]
mod tests;
