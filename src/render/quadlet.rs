//! The Quadlet target: a `.container` unit for the user's Quadlet generator. Each
//! Quadlet key has one named field here and one line in `templates/agent.container.j2`;
//! keys the installed generator does not know become `PodmanArgs=` in one step
//! (`downgrade`), from one table of key → introducing version → podman flag.

use anyhow::Result;
use serde::Serialize;

use crate::base::escape::{self, Raw, Word};
use crate::host::{HostProfile, Version};
use crate::render::model::{AdaptationKind, Network, SandboxSpec};

const TEMPLATE: &str = include_str!("../../templates/agent.container.j2");

/// The oldest Quadlet (Podman 4.4); units for a host without a generator are written
/// for it, the most portable form.
pub const OLDEST: Version = Version::new(4, 4, 0);
const V4_5: Version = Version::new(4, 5, 0);
const V4_6: Version = Version::new(4, 6, 0);
const V5_3: Version = Version::new(5, 3, 0);
const V4_7: Version = Version::new(4, 7, 0);
const V5_5: Version = Version::new(5, 5, 0);

/// The Quadlet version units are written for on this host.
pub fn target_version(host: &HostProfile) -> Version {
    host.quadlet.as_ref().map_or(OLDEST, |q| q.version)
}

/// The keys newer than Quadlet 4.4 that sandboxctl uses, unescaped.
#[derive(Debug, Default, PartialEq, Eq)]
struct VersionedKeys {
    user_ns: Option<String>,
    tmpfs: Vec<String>,
    host_name: Option<String>,
    working_dir: Option<String>,
    secrets: Vec<String>,
    pids_limit: Option<String>,
    memory: Option<String>,
    auto_update: Option<String>,
}

/// A key, the Quadlet version that introduced it and the podman flag it stands for.
struct Fallback {
    key: &'static str,
    since: Version,
    flag: &'static str,
    take: fn(&mut VersionedKeys) -> Vec<String>,
}

const FALLBACKS: [Fallback; 8] = [
    Fallback {
        key: "UserNS",
        since: V4_5,
        flag: "--userns",
        take: |k| k.user_ns.take().into_iter().collect(),
    },
    Fallback {
        key: "Tmpfs",
        since: V4_5,
        flag: "--tmpfs",
        take: |k| std::mem::take(&mut k.tmpfs),
    },
    Fallback {
        key: "HostName",
        since: V4_6,
        flag: "--hostname",
        take: |k| k.host_name.take().into_iter().collect(),
    },
    Fallback {
        key: "WorkingDir",
        since: V4_6,
        flag: "--workdir",
        take: |k| k.working_dir.take().into_iter().collect(),
    },
    Fallback {
        key: "Secret",
        since: V4_5,
        flag: "--secret",
        take: |k| std::mem::take(&mut k.secrets),
    },
    Fallback {
        key: "PidsLimit",
        since: V4_7,
        flag: "--pids-limit",
        take: |k| k.pids_limit.take().into_iter().collect(),
    },
    Fallback {
        key: "Memory",
        since: V5_5,
        flag: "--memory",
        take: |k| k.memory.take().into_iter().collect(),
    },
    Fallback {
        key: "AutoUpdate",
        since: V4_6,
        flag: "--label",
        take: |k| {
            k.auto_update
                .take()
                .map(|v| format!("{}={v}", crate::render::model::AUTO_UPDATE_LABEL))
                .into_iter()
                .collect()
        },
    },
];

const FALLBACK_WHY: &str = "this Quadlet version has no key for this option";
const LIMIT_WHY: &str = "resource limit: Quadlet has no key for this option";

/// Moves the keys `quadlet` does not know out of `keys`, as podman arguments in table
/// order (like podlet's `Downgrade`).
fn downgrade(keys: &mut VersionedKeys, quadlet: Version) -> Vec<(&'static str, String)> {
    let mut args = Vec::new();
    for f in &FALLBACKS {
        if quadlet < f.since {
            for value in (f.take)(keys) {
                args.push((f.key, format!("{}={value}", f.flag)));
            }
        }
    }
    args
}

#[derive(Debug, Serialize)]
struct PodmanArg {
    value: Word,
    why: Option<&'static str>,
}

/// The template's context: one field per Quadlet key, every value escaped.
#[derive(Debug, Serialize)]
#[allow(clippy::struct_excessive_bools)] // Quadlet's boolean keys, one field each
struct Unit {
    client: Raw,
    agent: &'static str,
    autonomy: &'static str,
    host_summary: String,
    dependencies: Vec<super::Dependency>,
    container_name: Raw,
    image: Raw,
    labels: Vec<Word>,
    run_init: bool,
    drop_capability: Vec<Raw>,
    no_new_privileges: bool,
    read_only: bool,
    user_ns: Option<Raw>,
    tmpfs: Vec<Raw>,
    host_name: Option<Raw>,
    working_dir: Option<Raw>,
    secrets: Vec<Raw>,
    pids_limit: Option<Raw>,
    memory: Option<Raw>,
    auto_update: Option<Raw>,
    network: Option<Raw>,
    environment: Vec<Word>,
    volumes: Vec<Raw>,
    podman_args: Vec<PodmanArg>,
    restart_on_failure: bool,
    timeout_start_sec: u32,
    /// Why the stale cid file is removed before each start, when it is.
    remove_stale_cid: Option<&'static str>,
    log_file: Option<super::LogFile>,
    /// Why Quadlet's default dependencies are off, when they are.
    no_default_dependencies: Option<&'static str>,
}

fn opt_raw(what: &str, v: Option<&String>) -> Result<Option<Raw>> {
    v.map(|v| escape::raw(what, v)).transpose()
}

fn unit(spec: &SandboxSpec, quadlet: Version) -> Result<Unit> {
    let mut keys = VersionedKeys {
        user_ns: Some(spec.userns.as_str().to_owned()),
        tmpfs: spec
            .tmpfs()
            .map(crate::render::model::Tmpfs::spec)
            .collect(),
        host_name: Some(spec.hostname.clone()),
        working_dir: Some(spec.working_dir.clone()),
        secrets: spec
            .secrets
            .iter()
            .map(crate::render::model::SecretMount::spec)
            .collect(),
        pids_limit: spec.limits.pids.map(|p| p.to_string()),
        memory: spec.limits.memory.map(|m| m.to_string()),
        auto_update: spec.auto_update.map(|a| a.as_str().to_owned()),
    };
    let podman_args = podman_args(spec, downgrade(&mut keys, quadlet))?;
    let log_file = super::log_file(spec)?;
    Ok(Unit {
        client: escape::raw("client name", spec.client.as_str())?,
        agent: spec.agent.as_str(),
        autonomy: spec.autonomy.as_str(),
        host_summary: escape::comment(&spec.host_summary),
        dependencies: super::dependencies(spec)?,
        container_name: escape::raw("container name", &spec.container_name)?,
        image: escape::raw("image", &spec.image)?,
        labels: spec
            .labels
            .iter()
            .map(|l| escape::word("label", &l.assignment()))
            .collect::<Result<_>>()?,
        run_init: spec.security.init,
        drop_capability: spec
            .security
            .drop_capabilities
            .iter()
            .map(|c| escape::raw("capability", c))
            .collect::<Result<_>>()?,
        no_new_privileges: spec.security.no_new_privileges,
        read_only: spec.security.read_only,
        user_ns: opt_raw("user namespace", keys.user_ns.as_ref())?,
        tmpfs: keys
            .tmpfs
            .iter()
            .map(|t| escape::raw("tmpfs", t))
            .collect::<Result<_>>()?,
        host_name: opt_raw("host name", keys.host_name.as_ref())?,
        working_dir: opt_raw("working directory", keys.working_dir.as_ref())?,
        secrets: keys
            .secrets
            .iter()
            .map(|s| escape::raw("secret", s))
            .collect::<Result<_>>()?,
        pids_limit: opt_raw("pid limit", keys.pids_limit.as_ref())?,
        memory: opt_raw("memory limit", keys.memory.as_ref())?,
        auto_update: opt_raw("auto-update policy", keys.auto_update.as_ref())?,
        network: match spec.network {
            Network::Default => None,
            Network::None => Some(escape::raw("network", "none")?),
        },
        environment: spec
            .environment
            .iter()
            .map(|e| escape::word("environment value", &e.assignment()))
            .collect::<Result<_>>()?,
        volumes: spec
            .binds()
            .map(|b| escape::volume("volume", b.escape_source(), &b.target, &b.options()))
            .collect::<Result<_>>()?,
        podman_args,
        restart_on_failure: spec.service.restart_on_failure,
        timeout_start_sec: spec.service.timeout_start_sec,
        remove_stale_cid: spec
            .adaptation(|k| *k == AdaptationKind::RemoveStaleCidFile)
            .map(|a| a.why),
        log_file,
        // `[Quadlet] DefaultDependencies=` exists since Quadlet 5.3 (older generators
        // reject it), which is also when the 90 s network-online wait came; 5.1 and 5.2
        // add `network-online.target` itself, which is no unit in a user manager.
        no_default_dependencies: spec.skip_network_online.filter(|_| quadlet >= V5_3),
    })
}

/// `PodmanArgs=`: the downgraded keys, the host's podman adaptations, the user's own.
fn podman_args(
    spec: &SandboxSpec,
    downgraded: Vec<(&'static str, String)>,
) -> Result<Vec<PodmanArg>> {
    let mut podman_args = Vec::new();
    for (_, arg) in downgraded {
        podman_args.push(PodmanArg {
            value: escape::word("podman argument", &arg)?,
            why: Some(FALLBACK_WHY),
        });
    }
    for arg in super::limit_args(&spec.limits) {
        podman_args.push(PodmanArg {
            value: escape::word("podman argument", &arg)?,
            why: Some(LIMIT_WHY),
        });
    }
    if spec.pull_never() {
        podman_args.push(PodmanArg {
            value: escape::word("podman argument", "--pull=never")?,
            why: Some(crate::render::model::PULL_NEVER_WHY),
        });
    }
    if let Some(a) = spec.adaptation(|k| *k == AdaptationKind::CgroupsDisabled) {
        podman_args.push(PodmanArg {
            value: escape::word("podman argument", "--cgroups=disabled")?,
            why: Some(a.why),
        });
    }
    if let Some(cap) = super::container_log_cap(spec) {
        podman_args.push(PodmanArg {
            value: escape::word("podman argument", cap)?,
            why: Some(super::CONTAINER_LOG_CAP_WHY),
        });
    }
    for a in &spec.extra_podman_args {
        podman_args.push(PodmanArg {
            value: escape::word("podman argument", a)?,
            why: None,
        });
    }
    Ok(podman_args)
}

/// The `.container` unit text for `spec`, for the Quadlet generator of version `quadlet`.
pub fn render(spec: &SandboxSpec, quadlet: Version) -> Result<String> {
    super::render_template("agent.container", TEMPLATE, &unit(spec, quadlet)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> VersionedKeys {
        VersionedKeys {
            user_ns: Some("keep-id".into()),
            tmpfs: vec!["/t:rw".into()],
            host_name: Some("acme".into()),
            working_dir: Some("/w".into()),
            secrets: vec!["s1,type=mount,target=A".into(), "s2".into()],
            pids_limit: Some("4096".into()),
            memory: Some("8g".into()),
            auto_update: Some("local".into()),
        }
    }

    #[test]
    fn downgrade_moves_exactly_the_keys_a_version_lacks() {
        let mut k = keys();
        assert!(downgrade(&mut k, Version::new(5, 5, 0)).is_empty());
        assert_eq!(k, keys());

        let mut k = keys();
        assert_eq!(
            downgrade(&mut k, Version::new(5, 4, 2)),
            vec![("Memory", "--memory=8g".to_owned())]
        );
        assert_eq!(k.pids_limit.as_deref(), Some("4096"));

        let mut k = keys();
        let args = downgrade(&mut k, Version::new(4, 5, 0));
        assert_eq!(
            args,
            vec![
                ("HostName", "--hostname=acme".to_owned()),
                ("WorkingDir", "--workdir=/w".to_owned()),
                ("PidsLimit", "--pids-limit=4096".to_owned()),
                ("Memory", "--memory=8g".to_owned()),
                (
                    "AutoUpdate",
                    "--label=io.containers.autoupdate=local".to_owned()
                ),
            ]
        );
        assert_eq!(k.host_name, None);
        assert_eq!(k.working_dir, None);
        assert_eq!(k.user_ns.as_deref(), Some("keep-id"));

        let mut k = keys();
        let args = downgrade(&mut k, OLDEST);
        let flags: Vec<&str> = args.iter().map(|(_, a)| a.as_str()).collect();
        assert_eq!(
            flags,
            [
                "--userns=keep-id",
                "--tmpfs=/t:rw",
                "--hostname=acme",
                "--workdir=/w",
                "--secret=s1,type=mount,target=A",
                "--secret=s2",
                "--pids-limit=4096",
                "--memory=8g",
                "--label=io.containers.autoupdate=local",
            ]
        );
        assert_eq!(k, VersionedKeys::default());
    }

    #[test]
    fn every_fallback_key_is_a_template_key() {
        for f in &FALLBACKS {
            assert!(
                TEMPLATE.contains(&format!("\n{}={{{{", f.key)),
                "{} has no line in the template",
                f.key
            );
        }
    }
}
