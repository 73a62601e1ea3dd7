//! Turning command-line options into a client's validated settings. Everything a user
//! typed is checked here, before anything is written: paths exist, nothing can break a
//! unit file, and a project cannot expose sandboxctl's own data or another client's
//! project.

pub(crate) mod guard;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::base::escape;
use crate::cli::SandboxOptions;
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::{ExtraMount, NetworkMode, Settings};

use guard::{Guard, mount_flag, overlaps, real_path};

/// What one `enable`/`render`/`run` asks for.
pub struct Request<'a> {
    pub projects: &'a [PathBuf],
    pub options: &'a SandboxOptions,
    pub network: Option<NetworkMode>,
    pub reset: bool,
}

/// Podman arguments that undo part of the sandbox; allowed, but said out loud.
const WEAKENING_ARGS: [&str; 10] = [
    "--privileged",
    "--cap-add",
    "--security-opt",
    "--userns",
    "--network",
    "--net",
    "--pid",
    "--ipc",
    "--volume",
    "--device",
];

/// Applies `req` to the client's current settings (or the defaults) and validates the
/// result against `others`, every client's settings on disk.
pub fn apply(
    layout: &Layout,
    client: &ClientName,
    others: &[(ClientName, Settings)],
    req: &Request<'_>,
) -> Result<Settings> {
    let current = others
        .iter()
        .find(|(c, _)| c == client)
        .map(|(_, s)| s.clone());
    let ports = current
        .as_ref()
        .map(|c| c.ports.clone())
        .unwrap_or_default();
    // A new client (or one reset) starts from the user's defaults where no option is
    // given; a client that exists keeps its settings.
    let fresh = req.reset || current.is_none();
    let defaults = if fresh {
        crate::ops::user_config::Defaults::load(&layout.user_config)?
    } else {
        crate::ops::user_config::Defaults::default()
    };
    let with_defaults = defaults.under(req.options);
    let mut s = if req.reset {
        Settings::default()
    } else {
        current.unwrap_or_default()
    };
    // Forwards are installed units, not options: `--reset` keeps them, `port --rm` ends them.
    s.ports = ports;
    let o = &with_defaults;
    if let Some(agent) = o.agent {
        s.agent = agent;
    }
    if let Some(image) = &o.image
        && *image != s.image
    {
        s.image.clone_from(image);
        // A pin after a failed update was to the image of the old name.
        s.image_pin = None;
    }
    if let Some(network) = req.network.or(defaults.network) {
        s.network = network;
    }
    if !req.projects.is_empty() {
        s.projects = req
            .projects
            .iter()
            .map(|p| existing_dir("project directory", p))
            .collect::<Result<_>>()?;
    }
    if !o.mounts.is_empty() || !o.mounts_rw.is_empty() {
        let ro = o.mounts.iter().map(|m| parse_mount(m, false));
        let rw = o.mounts_rw.iter().map(|m| parse_mount(m, true));
        s.mounts = ro.chain(rw).collect::<Result<_>>()?;
    }
    if !o.podman_args.is_empty() {
        s.podman_args.clone_from(&o.podman_args);
    }
    if let Some(dir) = &o.claude_config {
        s.claude_config = Some(existing_dir("Claude config directory", dir)?);
    }
    if let Some(writable) = o.git_writable_config {
        s.git_writable_config = writable;
    }
    if let Some(autonomy) = o.autonomy {
        s.autonomy = autonomy;
    }
    if !o.agent_args.is_empty() {
        s.agent_args.clone_from(&o.agent_args);
    }
    crate::sandbox::git_identity::apply(
        &mut s,
        o.git_name.as_deref(),
        o.git_email.as_deref(),
        &o.git_credential_hosts,
    )?;
    if let Some(notify) = o.notify {
        s.notify = notify;
    }
    apply_limits(&mut s.limits, o)?;
    if !o.key_paths.is_empty() {
        for p in &o.key_paths {
            crate::proxy::keyed::check_path_pattern(p)?;
        }
        s.key_paths.clone_from(&o.key_paths);
    }
    if !o.masks.is_empty() {
        for p in &o.masks {
            crate::state::mask::check_pattern(p)?;
        }
        s.masks.clone_from(&o.masks);
    }
    if let Some(d) = o.default_masks {
        s.default_masks = d;
    }
    if let Some(k) = o.key_in_sandbox {
        s.key_in_sandbox = k;
        if k {
            eprintln!(
                "warning: {client}'s agent gets its API key itself (--key-in-sandbox on): an agent tricked into it can read the key and send it to any allowed host; `--key-in-sandbox off` lets the egress proxy hold it"
            );
        }
    }
    validate(layout, client, &s, others)?;
    Ok(s)
}

/// `--memory`, `--cpus`, `--pids`: each replaces its limit, `none` removes it.
fn apply_limits(l: &mut crate::sandbox::limits::Limits, o: &SandboxOptions) -> Result<()> {
    use crate::sandbox::limits::{parse_option, parse_pids};
    let one_line = |flag: &str, e: String| anyhow::anyhow!("--{flag}: {e}");
    if let Some(v) = &o.memory {
        l.memory = parse_option(v).map_err(|e| one_line("memory", e))?;
    }
    if let Some(v) = &o.cpus {
        l.cpus = parse_option(v).map_err(|e| one_line("cpus", e))?;
        if let Some(c) = l.cpus {
            let have = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
            if u64::from(c.millis()) > 1000 * have as u64 {
                bail!("--cpus: {c} is more CPUs than this host has ({have}); use at most {have}");
            }
        }
    }
    if let Some(v) = &o.pids {
        l.pids = if v == "none" {
            None
        } else {
            Some(parse_pids(v).map_err(|e| one_line("pids", e))?)
        };
    }
    Ok(())
}

/// Checks settings that may also have been edited by hand.
pub fn validate(
    layout: &Layout,
    client: &ClientName,
    s: &Settings,
    others: &[(ClientName, Settings)],
) -> Result<()> {
    for a in &s.podman_args {
        escape::check("podman argument", a)?;
    }
    check_agent_args(&s.agent_args)?;
    crate::sandbox::git_identity::validate(s)?;
    let guard = Guard::new(layout);
    for p in &s.projects {
        guard.check("project directory", p, false)?;
    }
    for m in &s.mounts {
        guard.check(mount_flag(m), &m.host, false)?;
    }
    if let Some(dir) = &s.claude_config {
        guard.check("Claude config directory", dir, true)?;
    }
    let mine: Vec<(&str, PathBuf)> = s
        .projects
        .iter()
        .map(|p| ("project directory", real_path(p)))
        .chain(s.mounts.iter().map(|m| (mount_flag(m), real_path(&m.host))))
        .collect();
    for (other, theirs) in others {
        if other == client {
            continue;
        }
        for (kind, p) in &mine {
            if let Some(q) = theirs.projects.iter().find(|q| overlaps(p, &real_path(q))) {
                bail!(
                    "{kind} {} overlaps project directory {} of client {other}; one client's project must not be visible to another",
                    p.display(),
                    q.display()
                );
            }
        }
        for p in &s.projects {
            let p = real_path(p);
            if let Some(m) = theirs
                .mounts
                .iter()
                .find(|m| overlaps(&p, &real_path(&m.host)))
            {
                bail!(
                    "project directory {} overlaps {} {} of client {other}; one client's project must not be visible to another",
                    p.display(),
                    mount_flag(m),
                    m.host.display()
                );
            }
        }
    }
    Ok(())
}

/// Most `--agent-arg` values a client may have, and the longest one (bytes): each is an
/// environment variable of the container and a line of its unit.
pub const MAX_AGENT_ARGS: usize = 32;

pub const MAX_AGENT_ARG_LEN: usize = 1024;

/// Agent arguments travel as one environment variable each: no line breaks or other
/// control characters, a bounded count and length.
fn check_agent_args(args: &[String]) -> Result<()> {
    if args.len() > MAX_AGENT_ARGS {
        bail!(
            "too many agent arguments ({}): at most {MAX_AGENT_ARGS} --agent-arg values",
            args.len()
        );
    }
    for a in args {
        escape::check("agent argument", a)?;
        if a.len() > MAX_AGENT_ARG_LEN {
            bail!(
                "agent argument {}… is {} bytes long: at most {MAX_AGENT_ARG_LEN}; shorten it",
                escape::display(&a.chars().take(40).collect::<String>()),
                a.len()
            );
        }
    }
    Ok(())
}

/// Warnings for options that weaken the sandbox on purpose, or put a credential where
/// others can read it.
pub fn warnings(client: &ClientName, s: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    for a in &s.podman_args {
        let flag = a.split('=').next().unwrap_or(a);
        if WEAKENING_ARGS.contains(&flag) {
            out.push(format!(
                "warning: --podman-arg {a} may weaken the sandbox's isolation"
            ));
        }
    }
    out.extend(credential_warnings(client, &s.podman_args));
    out.extend(crate::sandbox::git_identity::warnings(s));
    if let Some(dir) = &s.claude_config {
        out.push(format!(
            "note: the Claude login in {} is shared with this sandbox (its credentials file only; settings and history stay the client's own)",
            dir.display()
        ));
    }
    if s.agent == crate::sandbox::settings::Agent::Shell
        && (s.autonomy != crate::sandbox::settings::Autonomy::Ask || !s.agent_args.is_empty())
    {
        out.push(
            "note: the shell agent ignores --autonomy and --agent-arg (they apply to claude and codex)"
                .to_owned(),
        );
    }
    if s.git_writable_config && !s.projects.is_empty() {
        out.push(
            "warning: --git-writable-config: the agent can write the projects' .git/config and .git/hooks, which git on the host runs at your next git command"
                .to_owned(),
        );
    }
    out
}

/// Podman arguments that set an environment variable whose name looks like a
/// credential: its value ends up in the unit file, `systemctl show` and `podman
/// inspect`, where a Podman secret would not. The value itself is never repeated.
fn credential_warnings(client: &ClientName, args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let warn = |arg: &str, name: &str| {
        format!(
            "warning: --podman-arg {arg} sets {name}, which looks like a credential: its value is written into the unit and shown by `podman inspect`; use `sandboxctl secret set {client} {name}` instead"
        )
    };
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        // `--env=V`, `-e=V`, `-eV`, or the flag alone with its value in the next argument.
        let (flag, value) = if let Some((f, v)) = a.split_once('=')
            && ["--env", "-e", "--env-file"].contains(&f)
        {
            (f, Some(v))
        } else if ["--env", "-e", "--env-file"].contains(&a) {
            i += 1;
            (a, args.get(i).map(String::as_str))
        } else if let Some(v) = a.strip_prefix("-e") {
            ("-e", Some(v))
        } else {
            (a, None)
        };
        i += 1;
        let Some(value) = value else { continue };
        if flag == "--env-file" {
            let names = std::fs::read_to_string(value).unwrap_or_default();
            let file_name = Path::new(value)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let shown = format!("--env-file={}", escape::display(value));
            match names
                .lines()
                .map(|l| l.trim().trim_start_matches("export "))
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split('=').next())
                .find(|n| looks_like_credential(n))
            {
                Some(name) => out.push(warn(&shown, name.trim())),
                None if looks_like_credential(&file_name) => out.push(format!(
                    "warning: --podman-arg {shown} looks like a file of credentials: its values are shown by `podman inspect`; use `sandboxctl secret set {client} NAME` for each"
                )),
                None => {}
            }
        } else {
            let name = value.split('=').next().unwrap_or(value);
            if looks_like_credential(name) {
                out.push(warn(&format!("{flag} {name}=…"), name));
            }
        }
    }
    out
}

/// Whether a variable (or file) name looks like it holds a credential.
fn looks_like_credential(name: &str) -> bool {
    const ANYWHERE: [&str; 9] = [
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "PASSPHRASE",
        "CREDENTIAL",
        "APIKEY",
        "PRIVATE",
        "COOKIE",
    ];
    const WORDS: [&str; 6] = ["KEY", "KEYS", "AUTH", "PASS", "PAT", "CREDS"];
    let upper = name.to_ascii_uppercase();
    ANYWHERE.iter().any(|w| upper.contains(w))
        || upper
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| WORDS.contains(&w) || (w.len() > 3 && w.ends_with("KEY")))
}

fn existing_dir(what: &str, p: &Path) -> Result<PathBuf> {
    escape::check(what, &p.to_string_lossy())?;
    let abs = std::fs::canonicalize(p).with_context(|| {
        format!(
            "{what} {} does not exist; create it or fix the path",
            escape::display(&p.to_string_lossy())
        )
    })?;
    if !abs.is_dir() {
        bail!("{what} {} is not a directory", abs.display());
    }
    escape::check(what, &abs.to_string_lossy())?;
    Ok(abs)
}

fn parse_mount(spec: &str, writable: bool) -> Result<ExtraMount> {
    let flag = if writable { "--mount-rw" } else { "--mount" };
    escape::check(flag, spec)?;
    let Some((host, container)) = spec.split_once(':') else {
        bail!(
            "{flag} {} is not HOST:CONTAINER; give both paths separated by ':'",
            escape::display(spec)
        );
    };
    if container.contains(':') {
        bail!(
            "{flag} {}: paths cannot contain ':' (options are not supported here; {flag} decides read-only or read-write)",
            escape::display(spec)
        );
    }
    if !container.starts_with('/') {
        bail!(
            "{flag} {}: the container path must be absolute",
            escape::display(spec)
        );
    }
    let host = std::fs::canonicalize(host)
        .with_context(|| format!("{flag} host path {} does not exist", escape::display(host)))?;
    Ok(ExtraMount {
        host,
        container: crate::base::lexical::normalize(Path::new(container)),
        writable,
    })
}
