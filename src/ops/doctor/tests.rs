//! Tests of `doctor`.

use super::host::*;
use super::live::*;
use super::*;
use crate::host::{Cgroups, HostProfile};
use crate::host::{Version, fixed_profile};
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;
use crate::sandbox::settings::Settings;
use std::path::PathBuf;

fn user() -> User {
    User {
        name: "alice".into(),
        uid: 1000,
    }
}

fn outcome(c: &Checks, name: &str) -> Outcome {
    c.list
        .iter()
        .find(|x| x.name == name)
        .unwrap_or_else(|| panic!("no check {name}"))
        .outcome
}

#[test]
fn host_checks_name_each_problem() {
    let root = tempfile::tempdir().expect("tempdir");
    let etc = root.path().join("etc");
    std::fs::create_dir_all(&etc).expect("mkdir");
    std::fs::write(etc.join("subuid"), "alice:100000:65536\n").expect("write");
    std::fs::write(etc.join("subgid"), "1000:100000:1000\n").expect("write");
    let host = fixed_profile(
        Version::new(4, 3, 1),
        Version::new(5, 4, 2),
        Cgroups::Hybrid,
        false,
    );
    let c = host_static(&host, &user(), &etc, root.path());
    assert_eq!(outcome(&c, "podman"), Outcome::Ok);
    assert_eq!(outcome(&c, "subuid"), Outcome::Ok);
    assert_eq!(outcome(&c, "subgid"), Outcome::Warn, "only 1000 gids");
    assert_eq!(outcome(&c, "quadlet"), Outcome::Ok);
    assert_eq!(outcome(&c, "linger"), Outcome::Warn);

    std::fs::write(etc.join("subgid"), "bob:100000:65536\n").expect("write");
    std::fs::create_dir_all(root.path().join("var/lib/systemd/linger")).expect("mkdir");
    std::fs::write(root.path().join("var/lib/systemd/linger/alice"), "").expect("write");
    let mut old = host.clone();
    old.podman = Some(Version::new(3, 4, 4));
    old.quadlet = None;
    let c = host_static(&old, &user(), &etc, root.path());
    assert_eq!(outcome(&c, "podman"), Outcome::Fail);
    assert_eq!(outcome(&c, "subgid"), Outcome::Fail);
    assert_eq!(outcome(&c, "quadlet"), Outcome::Warn);
    assert_eq!(outcome(&c, "linger"), Outcome::Ok);
    let fix = c
        .list
        .iter()
        .find(|x| x.name == "subgid")
        .and_then(|x| x.fix.clone())
        .expect("fix");
    assert!(fix.contains("usermod --add-subgids"), "{fix}");
}

/// The limits' verdict comes from the host profile: v1 and an undelegated v2 warn
/// with the drop-in to write, a delegated v2 passes.
#[test]
fn cgroups_check_says_whether_limits_apply() {
    let found = |host: &HostProfile| {
        let mut c = Checks::new("host");
        cgroups(&mut c, host);
        let check = c.list.remove(0);
        (check.outcome, check.found, check.fix.unwrap_or_default())
    };
    let mut host = fixed_profile(
        Version::new(5, 4, 2),
        Version::new(5, 4, 2),
        Cgroups::Hybrid,
        true,
    );
    let (o, f, fix) = found(&host);
    assert_eq!(o, Outcome::Warn);
    assert!(f.contains("enable refuses --memory"), "{f}");
    assert!(fix.contains(crate::host::enforce::DELEGATE_LINE), "{fix}");
    host.cgroups = Cgroups::V2;
    host.delegated_controllers = Some(vec!["memory".into(), "pids".into(), "cpu".into()]);
    assert_eq!(found(&host).0, Outcome::Ok);
    host.delegated_controllers = Some(vec!["memory".into(), "pids".into()]);
    let (o, f, fix) = found(&host);
    assert_eq!(o, Outcome::Warn);
    assert!(f.contains("not delegated to the user: cpu"), "{f}");
    assert!(fix.contains("user@.service.d/delegate.conf"), "{fix}");
}

#[test]
fn report_counts_and_prints_fixes() {
    let mut c = Checks::new("host");
    c.ok("a", "fine");
    c.warn("b", "meh", "do b");
    c.fail("c", "broken\n\x1b[2Jline", "do c");
    let mut r = Report::default();
    r.add(c);
    assert_eq!((r.failed, r.warnings), (1, 1));
    let text = r.to_string();
    assert!(text.contains("FAIL  c"), "{text}");
    assert!(text.contains("fix: do c"), "{text}");
    assert!(!text.contains('\x1b'), "{text}");
    assert!(text.ends_with("3 checks: 1 failed, 1 warnings"), "{text}");
}

#[test]
fn exec_start_program() {
    assert_eq!(
        exec_start_binary("[Service]\nExecStart=/a/b proxy --client %i\n"),
        Some(PathBuf::from("/a/b"))
    );
    assert_eq!(
        exec_start_binary("ExecStart=-\"/a b/c\" x\n"),
        Some(PathBuf::from("/a b/c"))
    );
    assert_eq!(exec_start_binary("[Service]\n"), None);
}

#[test]
fn mount_and_net_parsing() {
    let mi = "1 0 0:40 / / ro,nosuid - overlay overlay rw\n\
              2 1 8:1 /home/u/.local/share/agent-sandbox/clients/acme/claude /home/agent/.claude rw - ext4 /dev/sda1 rw\n\
              3 1 8:1 /home/u/.local/share/agent-sandbox/clients/other/codex /x rw - ext4 /dev/sda1 rw\n\
              4 1 0:30 /agent-sandbox/proxy/other /run/sandbox-proxy ro - tmpfs tmpfs rw\n";
    assert_eq!(root_mount_options(mi).as_deref(), Some("ro,nosuid"));
    let layout = Layout {
        data_dir: "/home/u/.local/share/agent-sandbox".into(),
        unit_dir: "/u".into(),
        cache_dir: "/c".into(),
        systemd_user_dir: "/s".into(),
        libexec_dir: "/l".into(),
        home_dir: "/home/u".into(),
        runtime_dir: None,
        user_config: "/home/u/.config/sandboxctl/config.toml".into(),
    };
    let me = ClientName::parse("acme").expect("name");
    let other = ClientName::parse("other").expect("name");
    let leaks = foreign_mounts(mi, &layout, &me, &[(other, Settings::default())]);
    assert_eq!(
        leaks,
        vec![
            "/home/u/.local/share/agent-sandbox/clients/other/codex".to_owned(),
            "/agent-sandbox/proxy/other".to_owned()
        ]
    );
    let dev = "Inter-|   Receive\n face |bytes\n    lo: 0 0\n  eth0: 1 2\n";
    assert_eq!(
        net_interfaces(dev),
        vec!["lo".to_owned(), "eth0".to_owned()]
    );
}
