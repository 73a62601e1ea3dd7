//! Tests of `host`.

use super::*;

#[test]
fn finds_versions_in_tool_output() {
    assert_eq!(
        Version::find_in("podman version 4.3.1\n"),
        Some(Version::new(4, 3, 1))
    );
    assert_eq!(
        Version::find_in("quadlet version 5.4.2"),
        Some(Version::new(5, 4, 2))
    );
    assert_eq!(
        Version::find_in("podman version 5.0.0-rc1"),
        Some(Version::new(5, 0, 0))
    );
    assert_eq!(Version::find_in("v4.9"), Some(Version::new(4, 9, 0)));
    assert_eq!(Version::find_in("no version here"), None);
    assert!(Version::new(4, 10, 0) > Version::new(4, 9, 9));
}

#[test]
fn unit_target_and_podman_floor() {
    let mut h = fixed_profile(
        Version::new(4, 3, 1),
        Version::new(5, 4, 2),
        Cgroups::Hybrid,
        false,
    );
    assert_eq!(
        h.unit_target().expect("target"),
        UnitTarget::Quadlet(Version::new(5, 4, 2))
    );
    h.quadlet = None;
    h.quadlet_disabled = true;
    assert_eq!(
        h.unit_target().expect("target"),
        UnitTarget::Plain {
            why: "SANDBOXCTL_QUADLET=none".into()
        }
    );
    assert!(
        h.summary()
            .contains("Quadlet disabled (SANDBOXCTL_QUADLET=none)")
    );
    assert_eq!(
        h.require_podman().expect("new enough"),
        Version::new(4, 3, 1)
    );
    h.podman = Some(Version::new(4, 3, 0));
    assert!(h.require_podman().is_ok());
    h.podman = Some(Version::new(3, 4, 4));
    let err = h.require_podman().expect_err("too old").to_string();
    assert_eq!(
        err,
        "podman 3.4.4 is too old: sandboxctl needs Podman 4.3.0 or newer; upgrade podman"
    );
    h.podman = None;
    assert!(h.require_podman().is_err());
}

#[test]
fn detection_never_fails_and_caches() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = HostProfile::detect(tmp.path(), false);
    assert!(!tmp.path().join("host.json").exists());
    let b = HostProfile::detect(tmp.path(), true);
    assert!(tmp.path().join("host.json").exists());
    let c = HostProfile::detect(tmp.path(), true);
    assert_eq!(b, c);
    assert_eq!(a, b);
    assert!(!a.summary().contains('\n'));
}

/// The cache is a hint: garbage, a wrong shape, or a directory in its place is
/// detected afresh (and replaced where it can be), never an error.
#[test]
fn a_corrupt_cache_is_detected_afresh() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let good = HostProfile::detect(tmp.path(), false);
    let file = tmp.path().join("host.json");
    for junk in [&b"{"[..], b"\0\xff\x1b]0;x\x07", b"[]", b"{\"key\": 1}"] {
        std::fs::write(&file, junk).expect("corrupt the cache");
        assert_eq!(HostProfile::detect(tmp.path(), true), good, "{junk:?}");
        let again: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("JSON");
        assert!(again.is_object(), "the cache was not rewritten: {again}");
    }
    std::fs::remove_file(&file).expect("remove");
    std::fs::create_dir(&file).expect("a directory in its place");
    assert_eq!(HostProfile::detect(tmp.path(), true), good);
}

#[test]
fn packaged_template_units_only_when_they_run_the_packaged_binary() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("units");
    std::fs::create_dir(&dir).expect("dir");
    let binary = tmp.path().join("usr-bin-sandboxctl");
    let service = dir.join(crate::sandbox::layout::PROXY_SERVICE_FILE);
    let socket = dir.join(crate::sandbox::layout::PROXY_SOCKET_FILE);
    let exec =
        |bin: &str| format!("[Service]\nExecStart={bin} proxy --client %i --systemd-socket\n");
    let detect = || TemplateUnits::detect(&dir, &binary);

    assert_eq!(detect(), TemplateUnits::PerUser, "nothing installed");
    std::fs::write(&service, exec(&binary.display().to_string())).expect("service");
    std::fs::write(&socket, "[Socket]\n").expect("socket");
    std::fs::write(
        dir.join(crate::sandbox::layout::NOTIFY_SERVICE_FILE),
        "[Service]\n",
    )
    .expect("notify service");
    assert_eq!(detect(), TemplateUnits::PerUser, "no notify socket unit");
    std::fs::write(
        dir.join(crate::sandbox::layout::NOTIFY_SOCKET_FILE),
        "[Socket]\n",
    )
    .expect("notify socket");
    assert_eq!(detect(), TemplateUnits::PerUser, "no binary");
    std::fs::write(&binary, "#!/bin/sh\n").expect("binary");
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_eq!(detect(), TemplateUnits::PerUser, "binary not executable");
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_eq!(
        detect(),
        TemplateUnits::Packaged {
            dir: dir.clone(),
            binary: binary.clone()
        }
    );

    // Units that run another binary (the source tree's, before packaging) are not
    // the package's.
    std::fs::write(&service, exec("%h/.local/libexec/sandboxctl/sandboxctl")).expect("service");
    assert_eq!(detect(), TemplateUnits::PerUser, "another ExecStart");
    std::fs::write(&service, exec(&binary.display().to_string())).expect("service");
    std::fs::remove_file(&socket).expect("rm socket");
    assert_eq!(detect(), TemplateUnits::PerUser, "no socket unit");
}
