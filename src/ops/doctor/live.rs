//! The doctor's live checks of a running client: its processes, mounts, network and
//! proxy, seen from the host.

use std::path::{Path, PathBuf};

use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::{NetworkMode, Settings};

use super::Checks;

/// The live checks of a running sandbox. Everything about the container's process is
/// read by the host from `/proc/<pid>` (the agent cannot forge that); the egress checks
/// run a fresh process inside with absolute paths on the read-only image.
pub fn live(
    layout: &Layout,
    client: &ClientName,
    settings: &Settings,
    others: &[(ClientName, Settings)],
) -> Checks {
    let mut c = Checks::new(format!("live {client}"));
    let container = client.container_name();
    let pid = match container_pid(&container) {
        Ok(pid) => pid,
        Err(e) => {
            c.fail(
                "container",
                format!("{e:#}"),
                format!("`sandboxctl start {client}`, then run doctor again"),
            );
            return c;
        }
    };
    c.ok("container", format!("{container} runs as host pid {pid}"));
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let status = std::fs::read_to_string(proc_dir.join("status")).unwrap_or_default();
    process_checks(&mut c, client, &status);
    let mountinfo = std::fs::read_to_string(proc_dir.join("mountinfo")).unwrap_or_default();
    match root_mount_options(&mountinfo) {
        Some(opts) if opts.split(',').any(|o| o == "ro") => {
            c.ok("read-only root", "/ is mounted ro");
        }
        Some(opts) => c.fail(
            "read-only root",
            format!("/ is mounted {opts}"),
            format!("`sandboxctl enable {client}` rewrites the unit with ReadOnly=true"),
        ),
        None => c.fail(
            "read-only root",
            "cannot read the container's mounts",
            "run doctor as the sandbox's user",
        ),
    }
    let interfaces =
        net_interfaces(&std::fs::read_to_string(proc_dir.join("net/dev")).unwrap_or_default());
    if settings.network == NetworkMode::Open {
        c.ok(
            "network",
            format!(
                "open by the client's settings (interfaces: {})",
                interfaces.join(", ")
            ),
        );
    } else if interfaces == ["lo"] {
        c.ok("network", "loopback only: no route and no DNS");
    } else {
        c.fail(
            "network",
            format!("interfaces {}", interfaces.join(", ")),
            format!("remove --network from `sandboxctl enable {client} --podman-arg`"),
        );
    }
    let leaks = foreign_mounts(&mountinfo, layout, client, others);
    if leaks.is_empty() {
        c.ok(
            "other clients",
            "no other client's data, project or proxy socket is mounted",
        );
    } else {
        c.fail(
            "other clients",
            format!("mounted: {}", leaks.join(", ")),
            format!("remove those mounts: `sandboxctl enable {client} --reset …`"),
        );
    }
    if settings.network == NetworkMode::Allowlist {
        proxy_refuses(&mut c, &container);
    }
    c
}

/// Capabilities, `no_new_privs` and seccomp of the container's first process.
pub(crate) fn process_checks(c: &mut Checks, client: &ClientName, status: &str) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    };
    let cap_eff = field("CapEff:");
    if !cap_eff.is_empty() && cap_eff.chars().all(|ch| ch == '0') {
        c.ok("capabilities", "none (CapEff 0)");
    } else {
        c.fail(
            "capabilities",
            format!("CapEff {cap_eff}"),
            format!("remove --cap-add/--privileged from `sandboxctl enable {client} --podman-arg`"),
        );
    }
    if field("NoNewPrivs:") == "1" {
        c.ok("no_new_privs", "set");
    } else {
        c.fail(
            "no_new_privs",
            "not set",
            format!("`sandboxctl enable {client}` rewrites the unit"),
        );
    }
    if field("Seccomp:") == "2" {
        c.ok("seccomp", "filter mode");
    } else {
        c.fail(
            "seccomp",
            format!("mode {}", field("Seccomp:")),
            "remove --security-opt seccomp=unconfined from the client's --podman-arg",
        );
    }
}

pub(crate) fn container_pid(container: &str) -> anyhow::Result<u32> {
    let out = crate::host::podman::command(["inspect", "--format", "{{.State.Pid}}", container])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run podman: {e}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{container} is not running: {}",
            crate::host::podman::stderr_line(&out)
        );
    }
    match String::from_utf8_lossy(&out.stdout).trim().parse::<u32>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => anyhow::bail!("{container} is not running"),
    }
}

/// The mount options of `/` in a mountinfo text.
pub(crate) fn root_mount_options(mountinfo: &str) -> Option<String> {
    mountinfo.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(4) == Some(&"/"))
            .then(|| f.get(5).map(|o| (*o).to_owned()))
            .flatten()
    })
}

/// The interface names in a `/proc/net/dev` text.
pub(crate) fn net_interfaces(dev: &str) -> Vec<String> {
    dev.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|n| n.trim().to_owned()))
        .filter(|n| !n.is_empty())
        .collect()
}

/// Mounts of the container whose source is another client's data dir, project or
/// proxy socket directory.
pub(crate) fn foreign_mounts(
    mountinfo: &str,
    layout: &Layout,
    me: &ClientName,
    others: &[(ClientName, Settings)],
) -> Vec<String> {
    let mut out = Vec::new();
    let sources: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(3))
        .collect();
    for (other, settings) in others.iter().filter(|(o, _)| o != me) {
        let mut theirs: Vec<PathBuf> = vec![layout.client_dir(other)];
        theirs.extend(settings.projects.iter().cloned());
        let socket_dir = crate::sandbox::layout::proxy_socket_dir_relative(other);
        for src in &sources {
            let p = Path::new(src);
            // Bind sources are shown relative to their filesystem's root; compare every
            // suffix of the host path too.
            let hit = theirs.iter().any(|t| {
                t.ancestors().count() > 1
                    && (p.starts_with(t)
                        || path_suffixes(t).any(|s| !s.as_os_str().is_empty() && p == s))
            }) || src.ends_with(&socket_dir);
            if hit && !out.contains(&(*src).to_owned()) {
                out.push((*src).to_owned());
            }
        }
    }
    out
}

/// `/a/b/c` → `/b/c`, `/c`.
pub(crate) fn path_suffixes(p: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    let parts: Vec<_> = p.components().skip(1).collect();
    (1..parts.len()).map(move |i| Path::new("/").join(parts[i..].iter().collect::<PathBuf>()))
}

/// From a fresh process inside: the forwarder reaches the proxy, and the proxy refuses a
/// host no policy allows (`.invalid` can never be allowed by accident).
pub(crate) fn proxy_refuses(c: &mut Checks, container: &str) {
    let url = "http://sandboxctl-doctor.invalid/";
    let out = crate::host::podman::command([
        "exec",
        container,
        "/usr/bin/curl",
        // First, so the agent's ~/.curlrc (which could set the answer) is not read.
        "-q",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
        "--noproxy",
        "",
        "-x",
    ])
    .arg(format!(
        "http://127.0.0.1:{}",
        crate::units::proxy::FORWARDER_PORT
    ))
    .arg(url)
    .stdin(std::process::Stdio::null())
    .output();
    let code = match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout[..o.stdout.len().min(64)])
            .trim()
            .to_owned(),
        Err(e) => format!("cannot run podman exec: {e}"),
    };
    match code.as_str() {
        "403" => {
            c.ok("proxy", "reachable through the forwarder");
            c.ok("denied host", format!("{url} refused (403)"));
        }
        "000" => c.fail(
            "proxy",
            "the forwarder got no answer from the proxy",
            "`systemctl --user status sandboxctl-proxy@CLIENT.socket`; `sandboxctl logs CLIENT --network`",
        ),
        other => c.fail(
            "denied host",
            format!("{url} answered {other}, not 403"),
            "check the client's policy (`sandboxctl policy CLIENT`)",
        ),
    }
}
