//! The Pod Security Standard `restricted` profile, checked on the agent's pod.

use serde_json::{Value, json};

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
