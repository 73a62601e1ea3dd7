//! `export --to kube --flavor pod` played by rootless `podman kube play` (issue 13):
//! the agent pod starts with the unit's confinement, and the client's state survives
//! `podman kube down` + `play` through the claims (Podman volumes here).
//! On Podman 4.3 a second `play` of the claims fails (their volumes exist), so the pod
//! is played again without them.
//!
//! An allowlist client's proxy runs too (`k9_proxy_pod_allows_and_denies`): its
//! Deployment runs `sandboxctl proxy --listen-tcp` from the agent image, and the agent pod
//! reaches it by the Service's address, `$(<SERVICE>_SERVICE_HOST)` in its proxy
//! variables, with no resolver of its own. `podman kube play` ignores `Service` and
//! `NetworkPolicy`, sets no Service variables and expands no `$(VAR)` in a value, so the
//! test does the kubelet's part: it plays the proxy's documents on a user-defined network
//! with DNS (CNI's dnsname plugin here, aardvark-dns with netavark), and replaces that one
//! reference in the agent's documents with the proxy pod's address there before playing
//! them. Nothing else of the export is changed; it is played in two files: the proxy's
//! and the rest.

use std::path::PathBuf;
use std::time::Duration;

use crate::harness::{Client, Output, env, podman, sbx, unique_name, wait_for};

/// A played export; dropping it takes the pods down and removes the claims' volumes.
struct Played {
    file: PathBuf,
    volumes: Vec<String>,
}

impl Played {
    fn play(&self) -> Output {
        play_command()
            .arg(&self.file)
            .timeout(Duration::from_mins(2))
            .run()
            .success()
    }

    fn down(&self) -> Output {
        podman(["kube", "down"])
            .arg(&self.file)
            .timeout(Duration::from_mins(2))
            .run()
            .success()
    }
}

impl Drop for Played {
    fn drop(&mut self) {
        let _ = podman(["kube", "down"]).arg(&self.file).run();
        for v in &self.volumes {
            let _ = podman(["volume", "rm", "--force", v]).run();
        }
    }
}

/// `podman kube play` for a client without network (the test's client is `--network
/// none`): without `--network none` rootless Podman puts the pod on its default bridge,
/// which a host with a read-only `/proc/sys` (the booted nspawn lane) cannot set up.
fn play_command() -> crate::harness::Cmd {
    podman(["kube", "play", "--network", "none"])
}

fn wait_running(container: &str) {
    wait_for(
        &format!("{container} running"),
        Duration::from_mins(1),
        || {
            let out = podman(["inspect", "--format", "{{.State.Running}}", container]).run();
            (out.status.success() && out.stdout.trim() == "true").then_some(())
        },
        || podman(["logs", container]).run().to_string(),
    );
}

#[test]
fn k8_pod_flavor_plays_confined_and_keeps_state() {
    let mut c = Client::new("k8");
    c.enable(&["--network", "none", "--notify", "off"]);
    let file = c.scratch_dir("kube").join("export.yaml");
    sbx(["export", &c.name, "--to", "kube", "--flavor", "pod", "-o"])
        .arg(&file)
        .run()
        .success();
    let played = Played {
        file,
        volumes: ["project-1", "home", "claude", "codex", "history"]
            .iter()
            .map(|v| format!("{}-{v}", c.name))
            .collect(),
    };
    played.play();
    let ctr = format!("{}-agent-agent", c.name);
    wait_running(&ctr);
    let sh = |script: &str| -> Output { podman(["exec", &ctr, "sh", "-c", script]).run() };
    let out = sh("id -u; touch /probe 2>/dev/null && echo rootfs-writable; \
                  grep -E '^(CapEff|NoNewPrivs):' /proc/self/status; cat /proc/1/comm")
    .success();
    assert_eq!(
        out.stdout,
        format!(
            "{}\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\ncatatonit\n",
            env().uid
        ),
        "{out}"
    );
    let project = c.project_str().to_owned();
    sh(&format!(
        "echo kept > /home/agent/k8-state && echo work > {project}/k8-file"
    ))
    .success();
    played.down();
    // Podman 4.3 refuses to play a claim whose volume exists (later versions reuse
    // it); the claims outlive the pod, so the pod is played again on its own.
    let text = std::fs::read_to_string(&played.file).expect("read the export");
    let without_claims: Vec<&str> = text
        .split("\n---\n")
        .filter(|doc| !doc.contains("\nkind: \"PersistentVolumeClaim\"\n"))
        .collect();
    assert!(without_claims.len() < text.split("\n---\n").count());
    let again = played.file.with_file_name("pod-only.yaml");
    std::fs::write(&again, without_claims.join("\n---\n")).expect("write");
    play_command()
        .arg(&again)
        .timeout(Duration::from_mins(2))
        .run()
        .success();
    wait_running(&ctr);
    let out = sh(&format!("cat /home/agent/k8-state {project}/k8-file")).success();
    assert_eq!(out.stdout, "kept\nwork\n", "{out}");
}

/// The proxy's documents (`ConfigMap`, `Deployment`, `Service`) and the rest, as written.
fn split_proxy_documents(text: &str) -> (String, String) {
    let (mut proxy, mut rest) = (Vec::new(), Vec::new());
    for doc in text.split("\n---\n") {
        let kind = doc
            .lines()
            .find_map(|l| l.strip_prefix("kind: "))
            .unwrap_or_default();
        if matches!(kind, "\"ConfigMap\"" | "\"Deployment\"" | "\"Service\"") {
            proxy.push(doc);
        } else {
            rest.push(doc);
        }
    }
    assert_eq!(proxy.len(), 3, "ConfigMap, Deployment, Service in:\n{text}");
    (
        format!("---\n{}\n", proxy.join("\n---\n")),
        rest.join("\n---\n"),
    )
}

/// What the proxy test made besides the client; removed on drop, in reverse.
#[derive(Default)]
struct Network {
    name: String,
    files: Vec<PathBuf>,
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for Network {
    fn drop(&mut self) {
        for f in self.files.iter().rev() {
            let _ = podman(["kube", "down"]).arg(f).run();
        }
        for c in &self.containers {
            let _ = podman(["rm", "--force", "--time", "0", c]).run();
        }
        for v in &self.volumes {
            let _ = podman(["volume", "rm", "--force", v]).run();
        }
        if !self.name.is_empty() {
            let _ = podman(["network", "rm", "--force", &self.name]).run();
        }
    }
}

/// A user-defined network whose containers find each other by name. Fails, naming what
/// to install, where this Podman's network backend offers no DNS (CNI without dnsname).
fn dns_network(net: &mut Network) {
    // The booted nspawn lane mounts /proc/sys read-only: no bridge network can be set up
    // there (tests/boot/run.sh does not run this test and says so in its summary).
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let proc_sys_ro = mountinfo.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.get(4) == Some(&"/proc/sys") && f.get(5).is_some_and(|o| o.split(',').any(|o| o == "ro"))
    });
    assert!(
        !proc_sys_ro,
        "/proc/sys is read-only on this host: rootless Podman cannot set up the bridge \
         network this test plays the export on; run it on a host with a writable /proc/sys"
    );
    net.name = unique_name("sbx-k8-net");
    podman(["network", "create", &net.name]).run().success();
    let dns = podman([
        "network",
        "inspect",
        "--format",
        "{{.DNSEnabled}}",
        &net.name,
    ])
    .run()
    .success();
    assert_eq!(
        dns.stdout.trim(),
        "true",
        "network {} has no DNS: with the CNI backend install the dnsname plugin \
         (Debian: golang-github-containernetworking-plugin-dnsname; setup-host.sh does), \
         with netavark install aardvark-dns",
        net.name
    );
}

/// An HTTP server in a container on `net` answering `body`; its address there.
fn upstream(net: &mut Network, tag: &str, body: &str) -> String {
    let name = unique_name(&format!("sbx-k8-{tag}"));
    let script = format!(
        "mkdir /tmp/www && printf %s '{body}' > /tmp/www/index.html && \
         exec python3 -m http.server --directory /tmp/www 8080"
    );
    podman(["run", "--detach", "--network", &net.name, "--name", &name])
        .args(["--user", "65534:65534", "--cap-drop", "all"])
        .args([env().image.as_str(), "sh", "-c", &script])
        .run()
        .success();
    net.containers.push(name.clone());
    let ip = podman(["inspect", "--format"])
        .arg(format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            net.name
        ))
        .arg(&name)
        .run()
        .success();
    let ip = ip.stdout.trim().to_owned();
    assert!(
        ip.parse::<std::net::Ipv4Addr>().is_ok(),
        "address of {name}: {ip:?}"
    );
    ip
}

/// The proxy Deployment and the agent pod of an allowlist export, played on one network:
/// the agent reaches an allowed host through the proxy (by the Service's name), a denied
/// one is refused, and the proxy logs both decisions as JSON lines.
#[test]
fn k9_proxy_pod_allows_and_denies() {
    let mut c = Client::new("k9");
    c.enable(&["--network", "allowlist", "--notify", "off"]);
    let mut net = Network::default();
    dns_network(&mut net);
    let allowed_body = format!("k8-allowed-{}", c.name);
    let allowed = upstream(&mut net, "allowed", &allowed_body);
    let denied = upstream(&mut net, "denied", "k8-denied");
    let denied_name = net.containers.last().expect("the denied host").clone();
    // A literal private address: the proxy refuses private ranges unless a rule names one.
    sbx(["allow", &c.name, "--private", &format!("{allowed}:8080")])
        .run()
        .success();

    let dir = c.scratch_dir("kube");
    let file = dir.join("export.yaml");
    sbx(["export", &c.name, "--to", "kube", "--flavor", "pod", "-o"])
        .arg(&file)
        .run()
        .success();
    let text = std::fs::read_to_string(&file).expect("read the export");
    // The variable the kubelet sets to the Service's address.
    let service_host = format!(
        "$({}_PROXY_SERVICE_HOST)",
        c.name.to_ascii_uppercase().replace('-', "_")
    );
    assert!(
        text.contains(&format!("\"http://{service_host}:3128\"")),
        "the agent's proxy is the Service's address:\n{text}"
    );
    let (proxy_docs, agent_docs) = split_proxy_documents(&text);
    // The claims' volumes, and the one Podman makes for the ConfigMap.
    net.volumes = [
        "project-1",
        "home",
        "claude",
        "codex",
        "history",
        "network-policy",
    ]
    .iter()
    .map(|v| format!("{}-{v}", c.name))
    .collect();

    let (proxy_ctr, agent_ctr) = play_proxy_and_agent(
        &mut net,
        &c.name,
        &dir,
        (&proxy_docs, &agent_docs),
        &service_host,
    );
    let proxy_cmd = podman(["inspect", "--format", "{{.Path}} {{json .Args}}"])
        .arg(&proxy_ctr)
        .run()
        .success();
    assert!(
        proxy_cmd
            .stdout
            .starts_with("/usr/local/bin/sandboxctl [\"proxy\"")
            && proxy_cmd.stdout.contains("--listen-tcp"),
        "the proxy runs the image's sandboxctl:\n{proxy_cmd}"
    );

    let sh = |script: &str| -> Output { podman(["exec", &agent_ctr, "sh", "-c", script]).run() };
    // Through the proxy by its variables (curl reads http_proxy), until it listens.
    let allowed_url = format!("http://{allowed}:8080/");
    let out = wait_for(
        "the allowed host through the proxy",
        Duration::from_mins(1),
        || {
            let out = sh(&format!("curl -fsS --max-time 10 {allowed_url}"));
            out.status.success().then_some(out)
        },
        || podman(["logs", &proxy_ctr]).run().to_string(),
    );
    assert_eq!(out.stdout, allowed_body, "{out}");
    // CONNECT too.
    let out = sh(&format!(
        "curl -fsS --max-time 10 --proxytunnel {allowed_url}"
    ))
    .success();
    assert_eq!(out.stdout, allowed_body, "{out}");
    let out = sh(&format!(
        "curl -sS --max-time 10 -o /dev/null -w '%{{http_code}}' http://{denied}:8080/"
    ));
    assert_eq!(
        out.stdout, "403",
        "the denied host is refused by the proxy:\n{out}"
    );
    assert!(
        !sh(&format!(
            "curl -fsS --max-time 10 --proxytunnel http://{denied}:8080/"
        ))
        .status
        .success(),
        "CONNECT to the denied host is refused"
    );
    // `podman kube play` does not enforce NetworkPolicy: on its network the agent pod
    // reaches the host directly. On a cluster the policy's plugin blocks this.
    let out = sh(&format!(
        "curl -fsS --max-time 10 --noproxy '*' http://{denied}:8080/"
    ));
    assert_eq!(
        out.stdout, "k8-denied",
        "NetworkPolicy is not enforced by podman kube play (README says so):\n{out}"
    );

    assert_no_resolver(&proxy_ctr, &agent_ctr, &denied_name);
    assert_decisions(&proxy_ctr, &c.name, &allowed, &denied);
}

/// The network's DNS answers the proxy's pod for `name`, the agent's pod has no resolver.
fn assert_no_resolver(proxy_ctr: &str, agent_ctr: &str, name: &str) {
    podman(["exec", proxy_ctr, "getent", "hosts", name])
        .run()
        .success();
    let out = podman(["exec", agent_ctr, "getent", "hosts", name]).run();
    assert!(
        !out.status.success(),
        "the agent pod resolved a name:\n{out}"
    );
}

/// The proxy's JSON decision lines (in its `podman logs`): GET and CONNECT to `allowed`
/// allowed, to `denied` denied, all for `client`.
fn assert_decisions(proxy_ctr: &str, client: &str, allowed: &str, denied: &str) {
    let logs = podman(["logs", proxy_ctr]).run().success();
    let decisions: Vec<serde_json::Value> = format!("{}{}", logs.stdout, logs.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["event"] == "decision")
        .collect();
    let has = |decision: &str, host: &str, method: &str| {
        decisions.iter().any(|d| {
            d["decision"] == decision
                && d["host"] == host
                && d["method"] == method
                && d["client"] == client
        })
    };
    assert!(has("allowed", allowed, "GET"), "{logs}");
    assert!(has("allowed", allowed, "CONNECT"), "{logs}");
    assert!(has("denied", denied, "GET"), "{logs}");
    assert!(has("denied", denied, "CONNECT"), "{logs}");
}

/// Plays the proxy's documents on `net`, then the agent's (written to `dir`) with
/// `service_host` replaced by the proxy pod's address there, as the kubelet expands it
/// from the Service's variable; waits until both run and returns their containers
/// (proxy, agent).
fn play_proxy_and_agent(
    net: &mut Network,
    client: &str,
    dir: &std::path::Path,
    (proxy_docs, agent_docs): (&str, &str),
    service_host: &str,
) -> (String, String) {
    let service = format!("{client}-proxy");
    let (proxy_file, agent_file) = (dir.join("proxy.yaml"), dir.join("agent.yaml"));
    std::fs::write(&proxy_file, proxy_docs).expect("write");
    net.files.push(proxy_file.clone());
    podman(["kube", "play", "--network", &net.name])
        .arg(&proxy_file)
        .timeout(Duration::from_mins(2))
        .run()
        .success();
    // Podman names a Deployment's pod `<name>-pod-0` (4.3; `<name>-pod` later), its
    // container `<pod>-<container>`.
    let pods = podman(["pod", "ps", "--format", "{{.Name}}"])
        .run()
        .success();
    let pod = pods
        .stdout
        .lines()
        .find(|p| *p == format!("{service}-pod-0") || *p == format!("{service}-pod"))
        .unwrap_or_else(|| panic!("no pod of the proxy Deployment {service}:\n{pods}"));
    let proxy_ctr = format!("{pod}-proxy");
    wait_running(&proxy_ctr);
    // The proxy pod's address on the network: its infra container's.
    let infra = podman(["pod", "inspect", "--format", "{{.InfraContainerID}}", pod])
        .run()
        .success();
    let address = podman(["inspect", "--format"])
        .arg(format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            net.name
        ))
        .arg(infra.stdout.trim())
        .run()
        .success();
    let address = address.stdout.trim().to_owned();
    assert!(
        address.parse::<std::net::Ipv4Addr>().is_ok(),
        "address of the proxy pod {pod}: {address:?}"
    );
    assert!(agent_docs.contains(service_host), "{agent_docs}");
    std::fs::write(&agent_file, agent_docs.replace(service_host, &address)).expect("write");
    net.files.push(agent_file.clone());
    podman(["kube", "play", "--network", &net.name])
        .arg(&agent_file)
        .timeout(Duration::from_mins(2))
        .run()
        .success();
    let agent_ctr = format!("{client}-agent-agent");
    wait_running(&agent_ctr);
    (proxy_ctr, agent_ctr)
}
