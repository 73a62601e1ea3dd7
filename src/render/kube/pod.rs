//! The agent's pod: its container, volumes, security context and claims.

use serde_json::{Map, Value, json};

use crate::render::model::{BindRole, Mount, SandboxSpec};

#[allow(clippy::wildcard_imports)]
use super::*;

/// Size of each state claim.
pub(crate) fn claim_size(name: &str) -> &'static str {
    match name {
        "history" => "1Gi",
        "claude" | "codex" => "2Gi",
        "home" => "5Gi",
        _ => "10Gi",
    }
}

/// `1g` → `1Gi` (podman's binary suffixes as Kubernetes quantities).
pub(crate) fn quantity(size: &str) -> String {
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

pub(crate) fn tmpfs_size(options: &str) -> Option<String> {
    options
        .split(',')
        .find_map(|o| o.strip_prefix("size="))
        .map(quantity)
}

/// The pod- and container-level confinement, from the spec's `Security`.
pub(crate) fn security(spec: &SandboxSpec, o: &Options) -> (Value, Value) {
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

pub(crate) fn memory_dir(name: &str, size: Option<String>) -> Value {
    let mut empty = Map::new();
    empty.insert("medium".into(), json!("Memory"));
    if let Some(s) = size {
        empty.insert("sizeLimit".into(), json!(s));
    }
    json!({"name": name, "emptyDir": empty})
}

/// The agent's pod spec, the claims it needs (name, size) and what was dropped.
pub(crate) struct AgentPod {
    pub(crate) spec: Value,
    pub(crate) claims: Vec<(String, &'static str)>,
}

pub(crate) fn agent_pod(
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
pub(crate) fn agent_env(spec: &SandboxSpec, n: &Names) -> Vec<Value> {
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

pub(crate) fn host_mount_dropped(b: &crate::render::model::Bind) -> String {
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
pub(crate) fn secret_volume(spec: &SandboxSpec, n: &Names) -> Value {
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

pub(crate) fn claim_spec(size: &str) -> Value {
    json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
    })
}
