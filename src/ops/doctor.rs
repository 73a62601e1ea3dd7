//! `sandboxctl doctor`: what a user runs when something is wrong. Each check says what
//! it found and, when it is not fine, the exact fix. Host checks look at Podman, the
//! user's ids, the Quadlet generator, the user manager, cgroups, linger, journald, the
//! image and the proxy units; client checks at each client's unit, socket and policy;
//! the live checks look at a running sandbox from the host side (its `/proc` entries,
//! read by the host, which the agent cannot forge) and try the egress proxy from a fresh
//! process inside it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::host::systemd::{Systemd, UnitState};
use crate::host::{Cgroups, HostProfile};
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::{NetworkMode, Settings};

pub use crate::host::OLDEST_PODMAN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    /// Works, but something a user may want to change (or a limit to know about).
    Warn,
    Fail,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        })
    }
}

/// One check: where, what, what was found and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `host`, or `client NAME`.
    pub area: String,
    pub name: &'static str,
    pub outcome: Outcome,
    pub found: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Collects checks for one area.
pub struct Checks {
    area: String,
    pub list: Vec<Check>,
}

impl Checks {
    pub fn new(area: impl Into<String>) -> Self {
        Self {
            area: area.into(),
            list: Vec::new(),
        }
    }

    pub fn ok(&mut self, name: &'static str, found: impl Into<String>) {
        self.push(name, Outcome::Ok, &found.into(), None);
    }

    pub fn warn(&mut self, name: &'static str, found: impl Into<String>, fix: impl Into<String>) {
        self.push(name, Outcome::Warn, &found.into(), Some(&fix.into()));
    }

    pub fn fail(&mut self, name: &'static str, found: impl Into<String>, fix: impl Into<String>) {
        self.push(name, Outcome::Fail, &found.into(), Some(&fix.into()));
    }

    fn push(&mut self, name: &'static str, outcome: Outcome, found: &str, fix: Option<&str>) {
        self.list.push(Check {
            area: self.area.clone(),
            name,
            outcome,
            found: one_line(found),
            fix: fix.map(one_line),
        });
    }
}

/// Every check that ran.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub warnings: usize,
    pub failed: usize,
}

impl Report {
    pub fn add(&mut self, checks: Checks) {
        for c in checks.list {
            match c.outcome {
                Outcome::Ok => {}
                Outcome::Warn => self.warnings += 1,
                Outcome::Fail => self.failed += 1,
            }
            self.checks.push(c);
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut area = "";
        for c in &self.checks {
            if c.area != area {
                writeln!(f, "{}", c.area)?;
                area = &c.area;
            }
            writeln!(f, "  {:<5} {:<16} {}", c.outcome, c.name, c.found)?;
            if let Some(fix) = &c.fix {
                writeln!(f, "  {:<5} {:<16} fix: {fix}", "", "")?;
            }
        }
        write!(
            f,
            "{} checks: {} failed, {} warnings",
            self.checks.len(),
            self.failed,
            self.warnings
        )
    }
}

/// What doctor needs to know about the user running it, read once.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
}

impl User {
    pub fn current() -> Self {
        let uid = rustix::process::getuid().as_raw();
        let name = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| passwd_name(uid))
            .unwrap_or_else(|| uid.to_string());
        Self { name, uid }
    }
}

fn passwd_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id = f.nth(1)?;
        (id.parse() == Ok(uid)).then(|| name.to_owned())
    })
}

/// The host checks that need no systemd connection and no podman process.
pub fn host_static(host: &HostProfile, user: &User, etc: &Path, systemd_root: &Path) -> Checks {
    let mut c = Checks::new("host");
    match host.podman {
        None => c.fail(
            "podman",
            "not found",
            "install Podman (e.g. `apt-get install podman uidmap`) or set SANDBOXCTL_PODMAN",
        ),
        Some(v) if v < OLDEST_PODMAN => c.fail(
            "podman",
            format!("{v}, older than {OLDEST_PODMAN}"),
            format!("install Podman {OLDEST_PODMAN} or newer"),
        ),
        Some(v) => c.ok("podman", v.to_string()),
    }
    if !host.rootless {
        c.fail(
            "rootless",
            "running as root",
            "run sandboxctl as your own user: its sandboxes are rootless by design",
        );
    }
    subordinate_ids(&mut c, user, etc);
    match &host.quadlet {
        Some(q) => c.ok(
            "quadlet",
            format!("generator {} at {}", q.version, q.path.display()),
        ),
        // Without a generator the sandboxes run as plain systemd services; a
        // generator named by SANDBOXCTL_QUADLET that does not run is an error.
        None => match host.unit_target() {
            Ok(crate::host::UnitTarget::Plain { why }) => c.warn(
                "quadlet",
                format!("not used: sandboxes run as plain systemd services ({why})"),
                "nothing needed; Podman 4.4 or newer ships the generator (/usr/libexec/podman/quadlet)",
            ),
            Ok(crate::host::UnitTarget::Quadlet(v)) => c.ok("quadlet", v.to_string()),
            Err(e) => c.fail(
                "quadlet",
                format!("{e:#}"),
                "install Podman 4.4 or newer (it ships /usr/libexec/podman/quadlet) or set SANDBOXCTL_QUADLET to the generator",
            ),
        },
    }
    cgroups(&mut c, host);
    let linger = systemd_root.join("var/lib/systemd/linger").join(&user.name);
    if linger.exists() {
        c.ok("linger", "on: sandboxes start at boot, without a login");
    } else {
        c.warn(
            "linger",
            "off: sandboxes start when you log in and stop when your last session ends",
            format!("`loginctl enable-linger {}`", user.name),
        );
    }
    if host.journald {
        c.ok("journald", "present: `sandboxctl logs` reads the journal");
    } else {
        c.ok(
            "journald",
            "absent: units log to files in $XDG_RUNTIME_DIR that `sandboxctl logs` reads",
        );
    }
    c
}

fn subordinate_ids(c: &mut Checks, user: &User, etc: &Path) {
    for (file, what) in [
        ("subuid", "subordinate uids"),
        ("subgid", "subordinate gids"),
    ] {
        let path = etc.join(file);
        match subordinate_range(&path, user) {
            Some(count) if count >= 65536 => {
                c.ok(file, format!("{count} {what} for {}", user.name));
            }
            Some(count) => c.warn(
                file,
                format!("only {count} {what} for {} in {}", user.name, path.display()),
                format!(
                    "give {} 65536: `usermod --add-sub{}s 100000-165535 {}`",
                    user.name,
                    &file[3..6],
                    user.name
                ),
            ),
            None => c.fail(
                file,
                format!("no {what} for {} in {}", user.name, path.display()),
                format!(
                    "`usermod --add-sub{}s 100000-165535 {}` (as root), then `podman system migrate`",
                    &file[3..6],
                    user.name
                ),
            ),
        }
    }
}

/// Whether `--memory`, `--cpus` and `--pids` can apply here (see `limits`).
fn cgroups(c: &mut Checks, host: &HostProfile) {
    match host.cgroups {
        Cgroups::V2 => {
            let delegated = host.delegated_controllers.as_deref().unwrap_or_default();
            let missing: Vec<&str> = ["memory", "pids", "cpu"]
                .into_iter()
                .filter(|want| !delegated.iter().any(|h| h == want))
                .collect();
            if missing.is_empty() {
                c.ok(
                    "cgroups",
                    "v2, memory, pids and cpu delegated to the user: --memory, --cpus and --pids apply",
                );
            } else {
                c.warn(
                    "cgroups",
                    format!(
                        "v2, not delegated to the user: {}; enable refuses the limits that need them",
                        missing.join(", ")
                    ),
                    format!(
                        "delegate them: a drop-in {} with `[Service]` `{}`, then `sudo systemctl daemon-reload` and log in again",
                        crate::host::enforce::DELEGATE_DROP_IN,
                        crate::host::enforce::DELEGATE_LINE
                    ),
                );
            }
        }
        other => c.warn(
            "cgroups",
            format!(
                "{other}: rootless Podman cannot apply memory, cpu or pids limits; enable refuses --memory, --cpus and --pids"
            ),
            format!(
                "boot with cgroup v2 (`systemd.unified_cgroup_hierarchy=1`) and delegate the controllers ({} with `[Service]` `{}`) for resource limits",
                crate::host::enforce::DELEGATE_DROP_IN,
                crate::host::enforce::DELEGATE_LINE
            ),
        ),
    }
}

/// The entry for `user` in a subuid/subgid file (by name or uid): the size of its range.
fn subordinate_range(path: &Path, user: &User) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let uid = user.uid.to_string();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let (who, _start, count) = (f.next()?, f.next()?, f.next()?);
            (who == user.name || who == uid)
                .then(|| count.trim().parse::<u64>().ok())
                .flatten()
        })
        .max()
}

/// Podman's storage: it must answer at all (a broken runtime dir shows here first), use
/// overlay, and have room to create a container.
pub fn podman_storage(c: &mut Checks) {
    let storage = match crate::host::podman::Storage::probe() {
        Ok(s) => s,
        Err(e) => {
            c.fail(
                "storage",
                format!("{e:#}"),
                "install Podman (or set SANDBOXCTL_PODMAN) and fix what podman says (a runtime dir owned by another user: remove it and log in again; `podman system migrate` after changing subordinate ids)",
            );
            return;
        }
    };
    match storage.driver.as_str() {
        "overlay" => c.ok("storage", "rootless storage, driver overlay"),
        driver => c.warn(
            "storage",
            format!("rootless storage, driver {driver} (slow and large)"),
            "write `[storage]` `driver = \"overlay\"` to ~/.config/containers/storage.conf, then `podman system reset`",
        ),
    }
    if storage.is_full() {
        c.fail(
            "storage space",
            format!("{}: no sandbox can start", storage.full_in_words()),
            crate::host::podman::STORAGE_FIX,
        );
    } else {
        c.ok(
            "storage space",
            format!(
                "{} free in {}",
                crate::base::sizes::human(storage.available),
                storage.graph_root.display()
            ),
        );
    }
}

/// The user manager over D-Bus; the connection, when there is one.
pub fn user_manager(c: &mut Checks) -> Option<Systemd> {
    let connected = Systemd::connect_user().and_then(|s| {
        s.unit_states(&["default.target".to_owned()])?;
        Ok(s)
    });
    match connected {
        Ok(s) => {
            c.ok("user manager", "reachable over D-Bus");
            Some(s)
        }
        Err(e) => {
            c.fail(
                "user manager",
                format!("{e:#}"),
                "run sandboxctl in a login session of this user (`systemctl --user status` must work); on a server, `loginctl enable-linger $USER`",
            );
            None
        }
    }
}

/// The default image and the agent versions it carries.
pub fn image(c: &mut Checks) {
    let image = crate::host::image::DEFAULT_IMAGE;
    match crate::host::image::exists(image) {
        Ok(true) => match crate::host::image::inspect(image) {
            Ok(s) => c.ok(
                "image",
                format!(
                    "{image}: Claude Code {}, Codex {}",
                    s.claude_version, s.codex_version
                ),
            ),
            Err(e) => c.warn(
                "image",
                format!("{image} is there but cannot be inspected: {e:#}"),
                "rebuild it with `sandboxctl image build`",
            ),
        },
        Ok(false) => c.warn(
            "image",
            format!("{image} is missing (it is built at the first start)"),
            "build it now with `sandboxctl image build`",
        ),
        Err(e) => c.fail(
            "image",
            format!("{e:#}"),
            "fix Podman first (see `storage`)",
        ),
    }
}

/// The proxy template units: installed, and running a binary that exists.
pub fn proxy_units(c: &mut Checks, layout: &Layout, host: &HostProfile, needed: bool) {
    let path = layout
        .systemd_user_dir
        .join(crate::units::proxy::SERVICE_FILE);
    if let crate::host::TemplateUnits::Packaged { dir, binary } = &host.template_units {
        if path.exists() {
            c.warn(
                "proxy units",
                format!(
                    "{} shadows the packaged units in {}",
                    path.display(),
                    dir.display()
                ),
                "run `sandboxctl enable CLIENT` for an allowlist client again: it removes the per-user copies",
            );
        } else {
            c.ok(
                "proxy units",
                format!("packaged: {} runs {}", dir.display(), binary.display()),
            );
        }
        return;
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) if !needed => {
            c.ok(
                "proxy units",
                "not installed (no client uses the allowlist)",
            );
            return;
        }
        Err(e) => {
            c.fail(
                "proxy units",
                format!("cannot read {}: {e}", path.display()),
                "run `sandboxctl enable CLIENT` for an allowlist client again: it installs them",
            );
            return;
        }
    };
    let private_copy = crate::units::proxy::binary_path(layout);
    match exec_start_binary(&text) {
        Some(bin) if is_executable(&bin) && bin == private_copy => c.ok(
            "proxy units",
            format!("per-user copies: {} runs {}", path.display(), bin.display()),
        ),
        Some(bin) if is_executable(&bin) => c.warn(
            "proxy units",
            format!(
                "{} runs {}, not sandboxctl's private copy {}",
                path.display(),
                bin.display(),
                private_copy.display()
            ),
            "run `sandboxctl enable CLIENT` again: it installs the copy no sandbox can reach",
        ),
        Some(bin) => c.fail(
            "proxy units",
            format!(
                "{} runs {}, which is missing or not executable",
                path.display(),
                bin.display()
            ),
            "run `sandboxctl enable CLIENT` again with the sandboxctl you use",
        ),
        None => c.fail(
            "proxy units",
            format!("{} has no ExecStart", path.display()),
            "run `sandboxctl enable CLIENT` again: it rewrites the file",
        ),
    }
}

/// The program of a unit's `ExecStart=` (quotes and the `-`/`@` prefixes removed).
fn exec_start_binary(unit: &str) -> Option<PathBuf> {
    let rest = unit.lines().find_map(|l| l.strip_prefix("ExecStart="))?;
    let rest = rest.trim_start_matches(['-', '@', '+', '!', ':']);
    let word = if let Some(quoted) = rest.strip_prefix('"') {
        quoted.split('"').next()?
    } else {
        rest.split_whitespace().next()?
    };
    Some(PathBuf::from(word))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// One client: its unit file, systemd's view of it, its socket and policy.
pub fn client(
    layout: &Layout,
    host: &HostProfile,
    client: &ClientName,
    settings: &Settings,
    states: &[UnitState],
) -> Checks {
    let mut c = Checks::new(format!("client {client}"));
    // The Quadlet unit, or the plain service where the host has no generator.
    let unit_path = crate::render::all_unit_paths(layout, client)
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| layout.unit_path(client));
    match std::fs::read_to_string(&unit_path) {
        Ok(t) if crate::render::is_ours(&t) => c.ok("unit file", unit_path.display().to_string()),
        Ok(_) => c.fail(
            "unit file",
            format!("{} was not written by sandboxctl", unit_path.display()),
            format!("move it away, then `sandboxctl enable {client}`"),
        ),
        Err(_) => c.fail(
            "unit file",
            format!("{} is missing", unit_path.display()),
            format!("`sandboxctl enable {client}`"),
        ),
    }
    let state = |unit: &str| states.iter().find(|s| s.unit == unit);
    let service = client.service_name();
    match state(&service) {
        None => {}
        Some(s) if s.load_state != "loaded" => c.fail(
            "unit",
            format!("{service} is {}", s.load_state),
            format!(
                "`sandboxctl enable {client}` reloads systemd and names what the Quadlet generator rejects"
            ),
        ),
        Some(s) if s.active_state == "failed" => c.fail(
            "unit",
            format!("{service} failed ({})", s.sub_state),
            format!("`sandboxctl logs {client}` says why; then `sandboxctl start {client}`"),
        ),
        Some(s) if s.is_active() => c.ok("unit", format!("{service} {}", s.sub_state)),
        Some(s) => c.ok(
            "unit",
            format!(
                "{service} {} ({}): stopped; `sandboxctl start {client}` starts it",
                s.active_state, s.sub_state
            ),
        ),
    }
    let running = state(&service).is_some_and(UnitState::is_active);
    if settings.network == NetworkMode::Allowlist {
        let socket = crate::units::proxy::socket_unit(client);
        client_proxy(&mut c, layout, host, client, state(&socket), running);
    }
    c
}

/// The allowlist parts of a client: its proxy socket, drop-in and policy.
fn client_proxy(
    c: &mut Checks,
    layout: &Layout,
    host: &HostProfile,
    client: &ClientName,
    state: Option<&UnitState>,
    running: bool,
) {
    let socket = crate::units::proxy::socket_unit(client);
    match state {
        None => {}
        Some(s) if s.is_active() => c.ok("proxy socket", format!("{socket} {}", s.sub_state)),
        Some(s) if !running => c.ok(
            "proxy socket",
            format!("{socket} {}: it starts with the sandbox", s.active_state),
        ),
        Some(s) => c.fail(
            "proxy socket",
            format!("{socket} {} ({}): the sandbox has no way out", s.active_state, s.sub_state),
            format!("`systemctl --user start {socket}`, or `sandboxctl enable {client}` if it is not found"),
        ),
    }
    let dropin = crate::units::proxy::dropin_path(layout, client);
    let policy = layout.policy_path(client);
    let want = crate::units::proxy::client_dropin(layout, host).ok();
    match std::fs::read_to_string(&dropin) {
        Ok(t) if Some(&t) == want.as_ref() => {
            c.ok("proxy drop-in", dropin.display().to_string());
        }
        Ok(_) => c.fail(
            "proxy drop-in",
            format!(
                "{} is not what `enable` writes for {}: the proxy may enforce another policy than `sandboxctl policy` shows",
                dropin.display(),
                policy.display()
            ),
            format!("`sandboxctl enable {client}` (with the same AGENT_SANDBOX_DATA) rewrites it"),
        ),
        Err(_) => c.fail(
            "proxy drop-in",
            format!(
                "{} is missing: the proxy reads the policy at the default location",
                dropin.display()
            ),
            format!("`sandboxctl enable {client}` writes it"),
        ),
    }
    match crate::proxy::policy::load(&policy) {
        Ok(p) => c.ok(
            "policy",
            format!(
                "{}: {} allow rules, bundles {}",
                policy.display(),
                p.effective_allow().len(),
                if p.bundles.is_empty() {
                    "none".to_owned()
                } else {
                    p.bundles
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        ),
        Err(e) => c.fail(
            "policy",
            format!("{e:#}; every connection is refused"),
            format!(
                "fix {} (or move it away and run `sandboxctl enable {client}` for a new one)",
                policy.display()
            ),
        ),
    }
}

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
fn process_checks(c: &mut Checks, client: &ClientName, status: &str) {
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

fn container_pid(container: &str) -> anyhow::Result<u32> {
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
fn root_mount_options(mountinfo: &str) -> Option<String> {
    mountinfo.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(4) == Some(&"/"))
            .then(|| f.get(5).map(|o| (*o).to_owned()))
            .flatten()
    })
}

/// The interface names in a `/proc/net/dev` text.
fn net_interfaces(dev: &str) -> Vec<String> {
    dev.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|n| n.trim().to_owned()))
        .filter(|n| !n.is_empty())
        .collect()
}

/// Mounts of the container whose source is another client's data dir, project or
/// proxy socket directory.
fn foreign_mounts(
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
        let socket_dir = format!("agent-sandbox/proxy/{other}");
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
fn path_suffixes(p: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    let parts: Vec<_> = p.components().skip(1).collect();
    (1..parts.len()).map(move |i| Path::new("/").join(parts[i..].iter().collect::<PathBuf>()))
}

/// From a fresh process inside: the forwarder reaches the proxy, and the proxy refuses a
/// host no policy allows (`.invalid` can never be allowed by accident).
fn proxy_refuses(c: &mut Checks, container: &str) {
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

/// Makes a control-free single line of text that came from elsewhere.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|ch| if ch.is_control() { ' ' } else { ch })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
#[path = "doctor_tests.rs"]
mod tests;
