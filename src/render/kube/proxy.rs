//! The egress proxy's objects (`Deployment`, `Service`, `ConfigMap`, `Secret`) and the agent's
//! `NetworkPolicy`.

use std::fmt::Write as _;

use anyhow::{Result, bail};
use serde_json::{Map, Value, json};

use crate::render::model::{Network, SandboxSpec};

#[allow(clippy::wildcard_imports)]
use super::*;

pub(crate) fn proxy_objects(
    spec: &SandboxSpec,
    o: &Options,
    n: &Names,
    policy: &str,
) -> Vec<Value> {
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
pub(crate) fn dns_rule() -> Value {
    json!({
        "to": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    })
}

/// The agent pod's network policy: nothing in; out only what its mode allows.
pub(crate) fn agent_policy(spec: &SandboxSpec, allowlist: bool, n: &Names) -> Value {
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

pub(crate) fn base64(bytes: &[u8]) -> String {
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
pub(crate) fn secret(
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
