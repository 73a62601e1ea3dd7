//! Turning command-line options into a client's validated settings. Everything a user
//! typed is checked here, before anything is written: paths exist, nothing can break a
//! unit file, and a project cannot expose sandboxctl's own data or another client's
//! project.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cli::SandboxOptions;
use crate::client::ClientName;
use crate::escape;
use crate::layout::Layout;
use crate::settings::{ExtraMount, NetworkMode, Settings};

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

/// Every client's settings on disk, read once per command for the overlap checks.
pub fn all_settings(layout: &Layout) -> Result<Vec<(ClientName, Settings)>> {
    layout
        .list_clients()?
        .into_iter()
        .map(|c| {
            let s = Settings::load(&layout.settings_path(&c))?;
            Ok((c, s))
        })
        .collect()
}

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
    let mut s = if req.reset {
        Settings::default()
    } else {
        current.unwrap_or_default()
    };
    let o = req.options;
    if let Some(agent) = o.agent {
        s.agent = agent;
    }
    if let Some(image) = &o.image {
        s.image.clone_from(image);
    }
    if let Some(network) = req.network {
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
    validate(layout, client, &s, others)?;
    Ok(s)
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
    let data = normalize(&layout.data_dir);
    let units = normalize(&layout.unit_dir);
    for p in &s.projects {
        if p == Path::new("/") || data.starts_with(p) || units.starts_with(p) {
            bail!(
                "project directory {} contains sandboxctl's own state ({} or {}); choose the project's own directory",
                p.display(),
                layout.data_dir.display(),
                layout.unit_dir.display()
            );
        }
        if p.starts_with(&data) {
            bail!(
                "project directory {} is inside sandboxctl's data directory; choose a directory outside {}",
                p.display(),
                layout.data_dir.display()
            );
        }
    }
    for m in &s.mounts {
        if m.host == Path::new("/") || data.starts_with(&m.host) {
            bail!(
                "mount {} would expose sandboxctl's data directory {}; mount something narrower",
                m.host.display(),
                layout.data_dir.display()
            );
        }
    }
    for (other, theirs) in others {
        if other == client {
            continue;
        }
        for p in &s.projects {
            if let Some(q) = theirs
                .projects
                .iter()
                .find(|q| p.starts_with(q) || q.starts_with(p))
            {
                bail!(
                    "project directory {} overlaps {} of client {other}; one client's project must not be visible to another",
                    p.display(),
                    q.display()
                );
            }
        }
    }
    Ok(())
}

/// Warnings for options that weaken the sandbox on purpose.
pub fn warnings(s: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    for a in &s.podman_args {
        let flag = a.split('=').next().unwrap_or(a);
        if WEAKENING_ARGS.contains(&flag) {
            out.push(format!(
                "warning: --podman-arg {a} may weaken the sandbox's isolation"
            ));
        }
    }
    if let Some(dir) = &s.claude_config {
        out.push(format!(
            "note: the Claude login in {} is shared with this sandbox (its credentials file only; settings and history stay the client's own)",
            dir.display()
        ));
    }
    if s.git_writable_config && !s.projects.is_empty() {
        out.push(
            "warning: --git-writable-config: the agent can write the projects' .git/config and .git/hooks, which git on the host runs at your next git command"
                .to_owned(),
        );
    }
    out
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
        container: normalize(Path::new(container)),
        writable,
    })
}

/// Lexically cleans a path (`.` and `..`), without touching the filesystem.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Layout) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let layout = Layout::under(tmp.path());
        (tmp, layout)
    }

    fn req<'a>(projects: &'a [PathBuf], options: &'a SandboxOptions) -> Request<'a> {
        Request {
            projects,
            options,
            network: None,
            reset: false,
        }
    }

    #[test]
    fn merges_over_current_settings() {
        let (tmp, layout) = setup();
        let client = ClientName::parse("acme").expect("name");
        let proj = tmp.path().join("p");
        std::fs::create_dir(&proj).expect("mkdir");
        let opts = SandboxOptions {
            agent: Some(crate::settings::Agent::Shell),
            ..Default::default()
        };
        let first = apply(
            &layout,
            &client,
            &[],
            &req(std::slice::from_ref(&proj), &opts),
        )
        .expect("apply");
        assert_eq!(
            first.projects,
            vec![std::fs::canonicalize(&proj).expect("canon")]
        );
        let again = apply(
            &layout,
            &client,
            &[(client.clone(), first.clone())],
            &Request {
                network: Some(NetworkMode::None),
                ..req(&[], &SandboxOptions::default())
            },
        )
        .expect("apply");
        assert_eq!(again.projects, first.projects, "projects kept");
        assert_eq!(again.agent, crate::settings::Agent::Shell, "agent kept");
        assert_eq!(again.network, NetworkMode::None);
    }

    #[test]
    fn refuses_bad_inputs() {
        let (tmp, layout) = setup();
        std::fs::create_dir_all(&layout.data_dir).expect("mkdir");
        let client = ClientName::parse("acme").expect("name");
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").expect("write");
        let cases: Vec<(Vec<PathBuf>, SandboxOptions, &str)> = vec![
            (
                vec![tmp.path().join("missing")],
                SandboxOptions::default(),
                "does not exist",
            ),
            (
                vec![file.clone()],
                SandboxOptions::default(),
                "is not a directory",
            ),
            (
                vec![tmp.path().to_path_buf()],
                SandboxOptions::default(),
                "sandboxctl's own state",
            ),
            (
                vec![layout.data_dir.clone()],
                SandboxOptions::default(),
                "sandboxctl's own state",
            ),
            (
                vec![PathBuf::from("/tmp/x\ny")],
                SandboxOptions::default(),
                "line break",
            ),
            (
                vec![],
                SandboxOptions {
                    mounts: vec!["/etc".into()],
                    ..Default::default()
                },
                "is not HOST:CONTAINER",
            ),
            (
                vec![],
                SandboxOptions {
                    mounts: vec!["/etc:rel".into()],
                    ..Default::default()
                },
                "must be absolute",
            ),
            (
                vec![],
                SandboxOptions {
                    mounts: vec!["/etc:/x:ro".into()],
                    ..Default::default()
                },
                "cannot contain ':'",
            ),
            (
                vec![],
                SandboxOptions {
                    mounts_rw: vec!["/nope-x:/x".into()],
                    ..Default::default()
                },
                "does not exist",
            ),
            (
                vec![],
                SandboxOptions {
                    mounts: vec!["/:/host".into()],
                    ..Default::default()
                },
                "expose sandboxctl's data",
            ),
            (
                vec![],
                SandboxOptions {
                    podman_args: vec!["--env=A\nB".into()],
                    ..Default::default()
                },
                "line break",
            ),
        ];
        for (projects, opts, want) in cases {
            let err = format!(
                "{:#}",
                apply(&layout, &client, &[], &req(&projects, &opts)).expect_err(want)
            );
            assert!(err.contains(want), "want {want:?} in {err}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn refuses_overlap_with_another_clients_project() {
        let (tmp, layout) = setup();
        let proj = tmp.path().join("shared/sub");
        std::fs::create_dir_all(&proj).expect("mkdir");
        let other = ClientName::parse("globex").expect("name");
        layout.create_client_dirs(&other).expect("dirs");
        let theirs = Settings {
            projects: vec![std::fs::canonicalize(&proj).expect("canon")],
            ..Settings::default()
        };
        theirs
            .save(&layout.settings_path(&other), &other)
            .expect("save");
        let client = ClientName::parse("acme").expect("name");
        let parent = tmp.path().join("shared");
        let err = format!(
            "{:#}",
            apply(
                &layout,
                &client,
                &all_settings(&layout).expect("settings"),
                &req(&[parent], &SandboxOptions::default())
            )
            .expect_err("overlap")
        );
        assert!(err.contains("overlaps") && err.contains("globex"), "{err}");
    }

    #[test]
    fn warns_about_weakening_args() {
        let s = Settings {
            podman_args: vec!["--privileged".into(), "--pids-limit=100".into()],
            ..Settings::default()
        };
        let w = warnings(&s);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("--privileged"));
    }
}
