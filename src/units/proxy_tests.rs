//! Tests of `proxy`.

use super::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn service_runs_this_binary_quoted() {
    let text = render_service(Path::new("/opt/my tools/sandboxctl"), true).expect("render");
    assert!(
        text.contains(
            "ExecStart=\"/opt/my tools/sandboxctl\" proxy --client %i --systemd-socket\n"
        ),
        "{text}"
    );
    assert!(!text.contains("StandardError="), "{text}");
    let text = render_service(Path::new("/usr/bin/sandboxctl"), false).expect("render");
    assert!(
        text.contains("StandardError=append:%t/sandboxctl-proxy-%i.log"),
        "{text}"
    );
}

#[test]
fn socket_template_listens_privately() {
    assert!(SOCKET.contains("ListenStream=%t/agent-sandbox/proxy/%i/proxy.sock"));
    assert!(SOCKET.contains("SocketMode=0600"));
}

/// A host with per-user template units and journald.
fn per_user() -> HostProfile {
    use crate::host::{Cgroups, Version, fixed_profile};
    fixed_profile(
        Version::new(4, 3, 1),
        Version::new(5, 4, 2),
        Cgroups::V2,
        true,
    )
}

/// A stand-in for the sandboxctl binary.
fn fake_binary(dir: &Path, content: &[u8]) -> PathBuf {
    let path = dir.join("built-sandboxctl");
    fs::write(&path, content).expect("write the fake binary");
    path
}

#[test]
fn install_writes_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = Layout::under(tmp.path());
    let exe = fake_binary(tmp.path(), b"binary one");
    assert!(install_from(&layout, &exe, true).expect("install"));
    assert!(
        !install_from(&layout, &exe, true).expect("again"),
        "unchanged the second time"
    );
    assert!(layout.systemd_user_dir.join(SOCKET_FILE).is_file());
    assert!(install_from(&layout, &exe, false).expect("adaptation changes it"));
}

#[test]
fn the_unit_runs_a_private_copy_not_the_binary_that_ran_enable() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = Layout::under(tmp.path());
    let exe = fake_binary(tmp.path(), b"binary one");
    install_from(&layout, &exe, true).expect("install");

    let copy = binary_path(&layout);
    assert_eq!(fs::read(&copy).expect("the copy"), b"binary one");
    let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&layout.libexec_dir), 0o700);
    assert_eq!(mode(&copy), 0o700);
    let service = fs::read_to_string(layout.systemd_user_dir.join(SERVICE_FILE)).expect("service");
    let exec = service
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("ExecStart");
    assert_eq!(
        exec,
        format!(
            "ExecStart=\"{}\" proxy --client %i --systemd-socket",
            copy.display()
        )
    );
    assert!(!service.contains(exe.to_str().expect("UTF-8")), "{service}");

    // The same content again: the copy is left alone (same inode, no temp files).
    let ino = fs::metadata(&copy).expect("meta").ino();
    install_from(&layout, &exe, true).expect("again");
    assert_eq!(fs::metadata(&copy).expect("meta").ino(), ino, "rewritten");

    // A new build: replaced by rename (a new inode), nothing left behind.
    fs::write(&exe, b"binary two, longer").expect("rebuild");
    install_from(&layout, &exe, true).expect("update");
    assert_eq!(fs::read(&copy).expect("the copy"), b"binary two, longer");
    assert_ne!(
        fs::metadata(&copy).expect("meta").ino(),
        ino,
        "not replaced"
    );
    let names: Vec<_> = fs::read_dir(&layout.libexec_dir)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, [BINARY_FILE]);

    // Same length, different bytes: still replaced.
    fs::write(&exe, b"binary TWO, longer").expect("rebuild");
    install_from(&layout, &exe, true).expect("update");
    assert_eq!(fs::read(&copy).expect("the copy"), b"binary TWO, longer");
}

#[test]
fn a_missing_binary_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = Layout::under(tmp.path());
    let err = install_from(&layout, &tmp.path().join("gone"), true)
        .expect_err("no binary")
        .to_string();
    assert!(err.contains("gone"), "{err}");
    assert!(!layout.systemd_user_dir.join(SERVICE_FILE).exists());
}

#[test]
fn dropin_gives_the_proxy_the_absolute_data_dir() {
    let text = render_dropin(
        Path::new("/home/u/.local/libexec/sandboxctl/sandboxctl"),
        Path::new("/srv/data 100%/$x"),
    )
    .expect("render");
    assert!(text.contains("[Service]\nExecStart=\nExecStart="), "{text}");
    assert!(
        text.ends_with(
            "ExecStart=\"/home/u/.local/libexec/sandboxctl/sandboxctl\" proxy --client %i \
             --systemd-socket --data-dir \"/srv/data 100%%/$$x\"\n"
        ),
        "{text}"
    );
    let err = render_dropin(Path::new("/bin/sandboxctl"), Path::new("data"))
        .expect_err("relative")
        .to_string();
    assert!(err.contains("not absolute"), "{err}");
    assert!(render_dropin(Path::new("/bin/x"), Path::new("/a\nb")).is_err());
}

#[test]
fn client_dropin_is_written_once_and_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = Layout::under(tmp.path());
    let client = ClientName::parse("acme").expect("name");
    assert!(install_client(&layout, &per_user(), &client).expect("write"));
    assert!(!install_client(&layout, &per_user(), &client).expect("again"));
    let path = dropin_path(&layout, &client);
    assert_eq!(
        path,
        tmp.path()
            .join("systemd-user/sandboxctl-proxy@acme.service.d/sandboxctl.conf")
    );
    let text = fs::read_to_string(&path).expect("drop-in");
    assert!(
        text.contains(&format!("--data-dir \"{}\"", layout.data_dir.display())),
        "{text}"
    );
    assert_eq!(
        existing_dropin(&layout, &client).expect("read").as_deref(),
        Some(text.as_str())
    );

    assert!(remove_client(&layout, &client).expect("remove"));
    assert!(!dropin_dir(&layout, &client).exists());
    assert!(!remove_client(&layout, &client).expect("twice"));

    // A drop-in of the user's own in the same directory stays.
    install_client(&layout, &per_user(), &client).expect("write");
    let mine = dropin_dir(&layout, &client).join("mine.conf");
    fs::write(&mine, "[Service]\n").expect("user drop-in");
    assert!(remove_client(&layout, &client).expect("remove"));
    assert!(mine.is_file());
    assert!(!path.exists());
}

#[test]
fn service_template_hardening() {
    for line in [
        "LimitNOFILE=4096",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "MemoryDenyWriteExecute=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
    ] {
        assert!(SERVICE.lines().any(|l| l == line), "missing {line}");
    }
    // Directives that stop the proxy from starting under an unprivileged user
    // manager (218/CAPABILITIES or 226/NAMESPACE), measured on systemd 252.
    for key in [
        "PrivateUsers=",
        "PrivateDevices=",
        "CapabilityBoundingSet=",
        "ProtectKernelModules=",
        "ProtectKernelLogs=",
        "ProtectClock=",
    ] {
        assert!(
            !SERVICE.lines().any(|l| l.starts_with(key)),
            "{key} must not be set"
        );
    }
}

#[test]
fn packaged_dropin_runs_the_packaged_binary_and_logs_without_journald() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = Layout::under(tmp.path());
    let mut host = per_user();
    host.template_units = TemplateUnits::Packaged {
        dir: PathBuf::from("/usr/lib/systemd/user"),
        binary: PathBuf::from("/usr/bin/sandboxctl"),
    };
    let text = client_dropin(&layout, &host).expect("render");
    assert!(
        text.contains("\nExecStart=\"/usr/bin/sandboxctl\" proxy --client %i"),
        "{text}"
    );
    assert!(
        !text.contains("StandardError="),
        "journald is there: {text}"
    );
    host.journald = false;
    let text = client_dropin(&layout, &host).expect("render");
    assert!(
        text.ends_with("StandardError=append:%t/sandboxctl-proxy-%i.log\n"),
        "{text}"
    );

    // Per-user units carry the log file in their template, not in the drop-in.
    let mut host = per_user();
    host.journald = false;
    let text = client_dropin(&layout, &host).expect("render");
    assert!(!text.contains("StandardError="), "{text}");
    assert!(
        text.contains(&format!("ExecStart=\"{}\"", binary_path(&layout).display())),
        "{text}"
    );
}
