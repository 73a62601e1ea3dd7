//! The Kubernetes export (`render::kube`): snapshots for each agent and network mode,
//! and the YAML read back by a real YAML parser (`PyYAML`) to check what it means: the
//! Pod Security Standard `restricted` profile, the proxy wiring, the network policies,
//! and that hostile values stay values.

use std::io::Write as _;
use std::process::{Command, Stdio};

use sandboxctl::render::kube::{self, Export, Flavor, Options, restricted_violations};
use sandboxctl::render::model::{Sandbox, SandboxSpec};
use sandboxctl::sandbox::client::ClientName;
use sandboxctl::sandbox::settings::{Agent, ExtraMount, NetworkMode, Settings};

use crate::support::fixture::{layout, this_host};
use serde_json::{Value, json};

const POLICY: &str = "# the client's policy\nbundles = [\"claude\"]\nallow = [\"example.com\"]\n";

fn settings(agent: Agent, network: NetworkMode) -> Settings {
    Settings {
        agent,
        network,
        projects: vec!["/home/user/projects/acme-web".into()],
        ..Settings::default()
    }
}

fn options(flavor: Flavor, network: NetworkMode) -> Options {
    Options {
        flavor,
        uid: 1000,
        gid: 1000,
        policy: (network == NetworkMode::Allowlist).then(|| POLICY.to_owned()),
        ..Options::default()
    }
}

fn export_with(s: &Settings, o: &Options) -> anyhow::Result<Export> {
    let client = ClientName::parse("acme").expect("name");
    let spec = SandboxSpec::new(&Sandbox {
        client: &client,
        settings: s,
        layout: &layout(),
        host: &this_host(),
    })?;
    kube::render(&spec, s.network == NetworkMode::Allowlist, o)
}

fn export(s: &Settings, flavor: Flavor) -> Export {
    export_with(s, &options(flavor, s.network)).expect("exports")
}

/// The documents as a YAML parser reads them.
fn parse(yaml: &str) -> Vec<Value> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with PyYAML runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python3");
    assert!(out.status.success(), "PyYAML rejects the export:\n{yaml}");
    let docs: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {docs:#?}"))
}

/// The agent's pod spec, from the Sandbox or the Pod.
fn agent_pod(docs: &[Value]) -> &Value {
    docs.iter()
        .find_map(|d| match d["kind"].as_str() {
            Some("Sandbox") => Some(&d["spec"]["podTemplate"]["spec"]),
            Some("Pod") => Some(&d["spec"]),
            _ => None,
        })
        .expect("an agent pod")
}

fn env<'a>(pod: &'a Value, name: &str) -> Option<&'a str> {
    pod["containers"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
}

const NETWORKS: [NetworkMode; 3] = [NetworkMode::Allowlist, NetworkMode::None, NetworkMode::Open];

#[test]
fn kube_snapshots_for_each_agent_and_network() {
    for agent in [Agent::Claude, Agent::Codex, Agent::Shell] {
        for network in NETWORKS {
            let s = settings(agent, network);
            let e = export(&s, Flavor::Sandbox);
            assert_eq!(e, export(&s, Flavor::Sandbox), "deterministic");
            // Notifications are on by default and belong to this desktop.
            assert_eq!(
                e.dropped,
                ["notifications: the agent event socket is on this desktop"]
            );
            insta::assert_snapshot!(format!("kube_{agent}_{network}"), e.text);
            // The pod flavor too: tests/kube/*.sh check every snapshot with kubectl and
            // the schemas.
            let pod = export(&s, Flavor::Pod);
            insta::assert_snapshot!(format!("kube_pod_{agent}_{network}"), pod.text);
        }
    }
}

#[test]
fn kube_every_pod_meets_the_restricted_profile() {
    for flavor in [Flavor::Sandbox, Flavor::Pod] {
        for network in NETWORKS {
            let docs = parse(&export(&settings(Agent::Claude, network), flavor).text);
            let pod = agent_pod(&docs);
            assert_eq!(restricted_violations(pod), Vec::<String>::new());
            assert_eq!(pod["automountServiceAccountToken"], json!(false));
            assert_eq!(pod["securityContext"]["runAsUser"], json!(1000));
            assert_eq!(pod["securityContext"]["runAsGroup"], json!(1000));
            let c = &pod["containers"][0]["securityContext"];
            assert_eq!(c["readOnlyRootFilesystem"], json!(true));
            assert_eq!(c["capabilities"]["drop"], json!(["ALL"]));
            let cache = pod["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .find(|v| {
                    pod["containers"][0]["volumeMounts"]
                        .as_array()
                        .expect("mounts")
                        .iter()
                        .any(|m| m["name"] == v["name"] && m["mountPath"] == "/home/agent/.cache")
                })
                .expect("a volume at ~/.cache");
            assert_eq!(
                cache["emptyDir"],
                json!({"medium": "Memory", "sizeLimit": "1Gi"})
            );
            if network == NetworkMode::Allowlist {
                let proxy = find(&docs, "Deployment", "acme-proxy");
                assert_eq!(
                    restricted_violations(&proxy["spec"]["template"]["spec"]),
                    Vec::<String>::new()
                );
            }
            for d in &docs {
                let labels = &d["metadata"]["labels"];
                assert_eq!(labels["app.kubernetes.io/instance"], "acme", "{d}");
                assert_eq!(labels["app.kubernetes.io/managed-by"], "sandboxctl", "{d}");
                if d["kind"] != "Namespace" {
                    assert_eq!(d["metadata"]["namespace"], "sandboxctl-acme", "{d}");
                }
            }
        }
    }
}

#[test]
fn kube_state_and_projects_are_claims() {
    let docs = parse(&export(&settings(Agent::Codex, NetworkMode::None), Flavor::Pod).text);
    for claim in ["home", "claude", "codex", "history", "project-1"] {
        find(&docs, "PersistentVolumeClaim", &format!("acme-{claim}"));
    }
    let pod = agent_pod(&docs);
    let mounts = pod["containers"][0]["volumeMounts"]
        .as_array()
        .expect("mounts");
    let at = |name: &str| -> &Value {
        &mounts.iter().find(|m| m["name"] == name).expect(name)["mountPath"]
    };
    assert_eq!(at("home"), "/home/agent");
    assert_eq!(at("codex"), "/home/agent/.codex");
    assert_eq!(at("project-1"), "/home/user/projects/acme-web");
    assert_eq!(
        pod["containers"][0]["workingDir"],
        "/home/user/projects/acme-web"
    );
    let docs = parse(&export(&settings(Agent::Codex, NetworkMode::None), Flavor::Sandbox).text);
    let sandbox = find(&docs, "Sandbox", "acme-agent");
    let names: Vec<&Value> = sandbox["spec"]["volumeClaimTemplates"]
        .as_array()
        .expect("templates")
        .iter()
        .map(|t| &t["metadata"]["name"])
        .collect();
    assert_eq!(names, ["project-1", "home", "claude", "codex", "history"]);
    assert!(!docs.iter().any(|d| d["kind"] == "PersistentVolumeClaim"));
}

#[test]
fn kube_allowlist_goes_through_the_proxy_service_only() {
    let docs = parse(
        &export(
            &settings(Agent::Claude, NetworkMode::Allowlist),
            Flavor::Sandbox,
        )
        .text,
    );
    let pod = agent_pod(&docs);
    for var in ["HTTPS_PROXY", "http_proxy", "ALL_PROXY"] {
        assert_eq!(
            env(pod, var),
            Some("http://$(ACME_PROXY_SERVICE_HOST):3128"),
            "{var}"
        );
    }
    assert_eq!(env(pod, "SANDBOX_PROXY_SOCKET"), None);
    assert_eq!(
        find(&docs, "ConfigMap", "acme-network-policy")["data"]["network.toml"],
        POLICY
    );
    let proxy = &find(&docs, "Deployment", "acme-proxy")["spec"]["template"]["spec"];
    let cmd = &proxy["containers"][0]["command"];
    assert_eq!(
        cmd,
        &json!([
            "/usr/local/bin/sandboxctl",
            "proxy",
            "--client",
            "acme",
            "--policy",
            "/etc/sandboxctl/network.toml",
            "--listen-tcp",
            "0.0.0.0:3128"
        ])
    );
    assert_eq!(
        find(&docs, "Service", "acme-proxy")["spec"]["ports"][0]["port"],
        3128
    );
    let agent = &find(&docs, "NetworkPolicy", "acme-agent")["spec"];
    assert_eq!(agent["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(agent["ingress"], json!([]));
    let egress = agent["egress"].as_array().expect("egress");
    assert_eq!(egress.len(), 1);
    assert_eq!(
        egress[0]["to"],
        json!([{"podSelector": {"matchLabels": {
            "app.kubernetes.io/component": "proxy", "app.kubernetes.io/instance": "acme"}}}])
    );
    assert_eq!(
        egress[0]["ports"],
        json!([{"port": 3128, "protocol": "TCP"}])
    );
    let proxy_policy = &find(&docs, "NetworkPolicy", "acme-proxy")["spec"];
    // The proxy resolves the names it allows: it, not the agent, reaches cluster DNS.
    assert_eq!(proxy_policy["egress"][1]["ports"][0]["port"], 53);
    let except = &proxy_policy["egress"][0]["to"][0]["ipBlock"]["except"];
    for range in [
        "10.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
    ] {
        assert!(
            except.as_array().expect("except").contains(&json!(range)),
            "{range}"
        );
    }
    // None: no way out at all; no proxy.
    let docs = parse(&export(&settings(Agent::Claude, NetworkMode::None), Flavor::Sandbox).text);
    assert_eq!(
        find(&docs, "NetworkPolicy", "acme-agent")["spec"]["egress"],
        json!([])
    );
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "Deployment" || d["kind"] == "ConfigMap")
    );
}

/// Cluster DNS recurses to any name server: a tunnel around the proxy. The allowlist
/// agent pod has none (the local sandbox has no DNS at all): its policy lets it reach
/// the proxy's port and nothing else, its resolver is its own loopback, and it finds the
/// proxy by the address the kubelet gives it from the Service (`<SERVICE>_SERVICE_HOST`,
/// set only for Services that exist before the pod: the export puts the Service, and the
/// agent's policy, before the pod).
#[test]
fn kube_allowlist_agent_has_no_dns_and_finds_the_proxy_by_address() {
    for flavor in [Flavor::Sandbox, Flavor::Pod] {
        let docs = parse(&export(&settings(Agent::Claude, NetworkMode::Allowlist), flavor).text);
        // No egress rule without a destination or without ports, none to port 53.
        let egress = &find(&docs, "NetworkPolicy", "acme-agent")["spec"]["egress"];
        for rule in egress.as_array().expect("egress") {
            assert!(
                rule["to"].as_array().is_some_and(|t| !t.is_empty()),
                "{flavor:?}: a rule to anywhere: {rule}"
            );
            for port in rule["ports"].as_array().expect("a rule for every port") {
                assert_ne!(port["port"], json!(53), "{flavor:?}: DNS allowed: {rule}");
            }
        }
        assert_eq!(
            egress,
            &json!([{
                "to": [{"podSelector": {"matchLabels": {
                    "app.kubernetes.io/component": "proxy", "app.kubernetes.io/instance": "acme"}}}],
                "ports": [{"port": 3128, "protocol": "TCP"}],
            }]),
            "{flavor:?}"
        );
        // No resolver: dnsPolicy None must name a server, and the pod's loopback has none.
        let pod = agent_pod(&docs);
        assert_eq!(pod["dnsPolicy"], "None", "{flavor:?}");
        assert_eq!(
            pod["dnsConfig"],
            json!({"nameservers": ["127.0.0.1"]}),
            "{flavor:?}"
        );
        // The proxy by the Service's address, as the kubelet names its variable.
        let service = &find(&docs, "Service", "acme-proxy")["metadata"]["name"];
        let host_var = format!(
            "{}_SERVICE_HOST",
            service
                .as_str()
                .expect("name")
                .to_ascii_uppercase()
                .replace('-', "_")
        );
        assert_eq!(pod["enableServiceLinks"], json!(true), "{flavor:?}");
        for var in [
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            assert_eq!(
                env(pod, var),
                Some(format!("http://$({host_var}):3128").as_str()),
                "{flavor:?} {var}"
            );
        }
        let names = serde_json::to_string(&pod["containers"][0]["env"]).expect("json");
        assert!(
            !names.contains("acme-proxy"),
            "{flavor:?}: a name to resolve: {names}"
        );
        let agent_at = docs
            .iter()
            .position(|d| d["kind"] == "Sandbox" || d["kind"] == "Pod")
            .expect("the agent");
        let at = |kind: &str, name: &str| {
            docs.iter()
                .position(|d| d["kind"] == kind && d["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("no {kind} {name}"))
        };
        assert!(
            at("Service", "acme-proxy") < agent_at,
            "{flavor:?}: Service first"
        );
        assert!(
            at("NetworkPolicy", "acme-agent") < agent_at,
            "{flavor:?}: the agent's policy before the agent"
        );
    }
    // Without a proxy nothing changes: none has no egress, open keeps the cluster's DNS.
    for network in [NetworkMode::None, NetworkMode::Open] {
        let docs = parse(&export(&settings(Agent::Claude, network), Flavor::Pod).text);
        let pod = agent_pod(&docs);
        assert_eq!(pod["dnsPolicy"], Value::Null, "{network}");
        assert_eq!(pod["enableServiceLinks"], json!(false), "{network}");
    }
}

#[test]
fn kube_unsupported_shapes_are_listed_never_lost() {
    let s = Settings {
        mounts: vec![ExtraMount {
            host: "/srv/data".into(),
            container: "/data".into(),
            writable: false,
        }],
        podman_args: vec!["--memory=2g".into()],
        notify: true,
        ..settings(Agent::Claude, NetworkMode::None)
    };
    let e = export(&s, Flavor::Pod);
    assert_eq!(e.dropped.len(), 3, "{:?}", e.dropped);
    for (d, want) in e.dropped.iter().zip([
        "notifications",
        "mount \"/srv/data:/data\"",
        "podman argument \"--memory=2g\"",
    ]) {
        assert!(d.starts_with(want), "{d}");
        assert!(
            e.text.contains(&format!("# Not exported: {d}\n")),
            "{}",
            e.text
        );
    }
    let docs = parse(&e.text);
    let text = serde_json::to_string(&docs).expect("json");
    assert!(
        !text.contains("/srv/data") && !text.contains("/data\""),
        "{text}"
    );
}

#[test]
fn kube_secrets_by_name_values_only_when_asked() {
    let s = Settings {
        secrets: vec!["GH_TOKEN".into()],
        ..settings(Agent::Claude, NetworkMode::None)
    };
    let e = export(&s, Flavor::Pod);
    assert!(e.text.contains(
        "# Secret acme-credentials is not included (values only with --include-secrets); create it: kubectl create secret generic acme-credentials -n sandboxctl-acme --from-file=GH_TOKEN=./GH_TOKEN\n"
    ), "{}", e.text);
    let docs = parse(&e.text);
    assert!(!docs.iter().any(|d| d["kind"] == "Secret"));
    let pod = agent_pod(&docs);
    let vol = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "secrets")
        .expect("secrets volume");
    assert_eq!(vol["secret"]["secretName"], "acme-credentials");
    assert_eq!(
        vol["secret"]["items"],
        json!([{"key": "GH_TOKEN", "path": "GH_TOKEN"}])
    );
    let o = Options {
        secret_values: Some(vec![("GH_TOKEN".into(), b"ghp_s3cret".to_vec())]),
        ..options(Flavor::Pod, NetworkMode::None)
    };
    let docs = parse(&export_with(&s, &o).expect("exports").text);
    assert_eq!(
        find(&docs, "Secret", "acme-credentials")["data"]["GH_TOKEN"],
        "Z2hwX3MzY3JldA=="
    );
}

#[test]
fn kube_hostile_values_stay_values() {
    // Control characters are refused by the model; everything else must stay a value.
    let hostile = "x\" --- kind: Pod # \u{2028}: {a: [b]} \\ 'q' &a *a !!python/object:os.system |";
    let s = Settings {
        agent_args: vec![hostile.into()],
        git_name: Some("Eve: [x] # y".into()),
        ..settings(Agent::Shell, NetworkMode::Allowlist)
    };
    let normal = parse(&export(&settings(Agent::Shell, NetworkMode::Allowlist), Flavor::Pod).text);
    let docs = parse(&export(&s, Flavor::Pod).text);
    assert_eq!(docs.len(), normal.len());
    assert_eq!(env(agent_pod(&docs), "SANDBOX_AGENT_ARG_1"), Some(hostile));
}

#[test]
fn kube_namespace_and_uid_are_checked() {
    let s = settings(Agent::Claude, NetworkMode::None);
    let o = Options {
        namespace: Some("team-a".into()),
        ..options(Flavor::Pod, NetworkMode::None)
    };
    let docs = parse(&export_with(&s, &o).expect("exports").text);
    assert!(!docs.iter().any(|d| d["kind"] == "Namespace"));
    assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "team-a"));
    let bad = Options {
        namespace: Some("Team A".into()),
        ..options(Flavor::Pod, NetworkMode::None)
    };
    let err = export_with(&s, &bad).expect_err("bad namespace");
    assert!(
        err.to_string().starts_with("invalid namespace \"Team A\""),
        "{err}"
    );
    let root = Options {
        uid: 0,
        ..options(Flavor::Pod, NetworkMode::None)
    };
    assert!(export_with(&s, &root).is_err());
}
