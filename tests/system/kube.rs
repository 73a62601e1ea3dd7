//! `export --to kube --flavor pod` played by rootless `podman kube play` (issue 13):
//! the agent pod starts with the unit's confinement, and the client's state survives
//! `podman kube down` + `play` through the claims (Podman volumes here).
//! On Podman 4.3 a second `play` of the claims fails (their volumes exist), so the pod
//! is played again without them. Not covered here: the proxy pod (the agent image does not carry `sandboxctl` yet)
//! and `NetworkPolicy`, which `podman kube play` ignores.

use std::path::PathBuf;
use std::time::Duration;

use crate::harness::{Client, Output, env, podman, sbx, wait_for};

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
