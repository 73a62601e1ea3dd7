//! Whether this host can enforce a client's resource limits: rootless Podman limits a
//! container only on cgroup v2, with the controllers delegated to the user's manager.

use anyhow::{Result, bail};

use super::{Cgroups, HostProfile};
use crate::sandbox::limits::Limits;

/// The drop-in that delegates the controllers limits need to every user's manager.
pub const DELEGATE_DROP_IN: &str = "/etc/systemd/system/user@.service.d/delegate.conf";
/// What that drop-in says.
pub const DELEGATE_LINE: &str = "Delegate=cpu cpuset io memory pids";

/// Why this host cannot enforce `limits`, as one line saying how to fix it; `None` when
/// every limit that is set applies here. The same rule holds when run as root (which
/// sandboxctl does not support for sandboxes): the units run under the user's manager.
pub fn unenforceable(limits: &Limits, host: &HostProfile) -> Option<String> {
    let wanted = limits.requested();
    let (flag, _) = *wanted.first()?;
    let flags: Vec<&str> = wanted.iter().map(|(f, _)| *f).collect();
    let flags = flags.join(", ");
    let how = format!(
        "a drop-in {DELEGATE_DROP_IN} with `[Service]` `{DELEGATE_LINE}`, then `sudo systemctl daemon-reload` and log in again"
    );
    if host.cgroups != Cgroups::V2 {
        return Some(format!(
            "cannot apply {flags}: cgroups are {} on this host and rootless Podman can only limit a container on cgroup v2 with the controllers delegated to your user; boot with cgroup v2 (`systemd.unified_cgroup_hierarchy=1`) and add {how}, or drop the limit ({flag} none)",
            host.cgroups
        ));
    }
    let delegated = host.delegated_controllers.as_deref().unwrap_or_default();
    let missing: Vec<&str> = wanted
        .iter()
        .map(|(_, c)| *c)
        .filter(|c| !delegated.iter().any(|d| d == c))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let found = if host.delegated_controllers.is_some() {
        format!("delegates only: {}", delegated.join(" "))
    } else {
        "has no readable cgroup.controllers".to_owned()
    };
    Some(format!(
        "cannot apply {flags}: cgroup v2 here, but the {} controller{} {} not delegated to your user's systemd manager (user@{}.service {found}); add {how}, or drop the limit ({flag} none)",
        missing.join(", "),
        if missing.len() == 1 { "" } else { "s" },
        if missing.len() == 1 { "is" } else { "are" },
        rustix::process::getuid().as_raw(),
    ))
}

/// Refuses `limits` this host cannot enforce.
pub fn check(limits: &Limits, host: &HostProfile) -> Result<()> {
    if let Some(why) = unenforceable(limits, host) {
        bail!("{why}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{Version, fixed_profile};

    fn limits() -> Limits {
        Limits {
            memory: Some("1g".parse().expect("memory")),
            cpus: None,
            pids: Some(256),
        }
    }

    #[test]
    fn refused_on_cgroup_v1_with_how_to_delegate() {
        let host = fixed_profile(
            Version::new(4, 3, 1),
            Version::new(5, 4, 2),
            Cgroups::Hybrid,
            false,
        );
        assert_eq!(unenforceable(&Limits::default(), &host), None);
        let why = unenforceable(&limits(), &host).expect("refused");
        assert!(why.contains("cannot apply --memory, --pids"), "{why}");
        assert!(why.contains("cgroups are v1 (hybrid)"), "{why}");
        assert!(why.contains(DELEGATE_LINE), "{why}");
        assert!(why.contains(DELEGATE_DROP_IN), "{why}");
        assert!(!why.contains('\n'));
    }

    #[test]
    fn on_v2_exactly_the_missing_controllers_are_named() {
        let mut host = fixed_profile(
            Version::new(5, 4, 2),
            Version::new(5, 4, 2),
            Cgroups::V2,
            true,
        );
        host.delegated_controllers = Some(vec!["memory".into(), "pids".into()]);
        assert_eq!(unenforceable(&limits(), &host), None);
        let mut with_cpus = limits();
        with_cpus.cpus = Some("2".parse().expect("cpus"));
        let why = unenforceable(&with_cpus, &host).expect("cpu missing");
        assert!(why.contains("the cpu controller is not delegated"), "{why}");
        assert!(why.contains("delegates only: memory pids"), "{why}");
        host.delegated_controllers = None;
        let why = unenforceable(&limits(), &host).expect("nothing delegated");
        assert!(why.contains("memory, pids controllers are not"), "{why}");
        assert!(check(&limits(), &host).is_err());
    }
}
