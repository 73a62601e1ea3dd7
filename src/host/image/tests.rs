//! Tests of `image`.

use super::state::*;
use super::*;

const PEM: &str =
    "-----BEGIN CERTIFICATE-----\nTUlJQmZ6Q0NBU1dn\nQXdJQkFnSVU=\n-----END CERTIFICATE-----\n";

fn file(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, contents).expect("write");
    path
}

#[test]
fn exact_versions_only_and_changes_are_named() {
    for good in ["2.1.332", "0.171.0", "1.0.0-rc.1", "2.0.0+build.7"] {
        assert!(check_version("--claude-version", good).is_ok(), "{good}");
    }
    for bad in [
        "latest",
        "",
        "^2.1",
        "2.1 && x",
        "v1",
        "1/2",
        &"9".repeat(65),
    ] {
        let err = check_version("--codex-version", bad)
            .expect_err(bad)
            .to_string();
        assert!(err.starts_with("--codex-version "), "{err}");
    }
    let summary = |claude: &str, codex: &str| BuildSummary {
        tag: "t".into(),
        size_bytes: 1,
        claude_version: claude.into(),
        codex_version: codex.into(),
        node_version: "22.23.3".into(),
        seconds: 0.0,
    };
    assert_eq!(
        changes(
            &summary("2.1.300", "0.171.0"),
            &summary("2.1.332", "0.171.0")
        ),
        [
            "Claude Code: 2.1.300 → 2.1.332",
            "Codex: 0.171.0 (unchanged)",
            "Node.js: 22.23.3 (unchanged)"
        ]
    );
}

#[test]
fn image_state_from_inspect_json() {
    let json = br#"[{"Id":"0123abcd","Digest":"sha256:feed","Labels":{
        "io.sandboxctl.claude-code.version":"2.1.332",
        "io.sandboxctl.codex.version":"0.1\u001b]0;x\u0007"}}]"#;
    let s = parse_image_state(json).expect("parses");
    assert_eq!(s.id, "sha256:0123abcd");
    assert_eq!(s.digest.as_deref(), Some("sha256:feed"));
    assert_eq!(s.claude_version, "2.1.332");
    assert!(!s.codex_version.contains('\u{1b}'), "{}", s.codex_version);
    assert!(!s.newer_image);
    let bare = parse_image_state(br#"[{"Id":"sha256:99","Labels":null}]"#).expect("parses");
    assert_eq!(bare.claude_version, "unknown");
    assert_eq!(bare.digest, None);
    assert!(parse_image_state(b"[]").is_none());
    assert!(parse_image_state(b"not json").is_none());
}

#[test]
fn previous_names_and_short_ids() {
    for (image, previous) in [
        (
            "localhost/agent-sandbox:latest",
            Some("localhost/agent-sandbox:latest-previous"),
        ),
        (
            "localhost/agent-sandbox:upd-a",
            Some("localhost/agent-sandbox:upd-a-previous"),
        ),
        ("localhost:5000/x", Some("localhost:5000/x:latest-previous")),
        (
            "registry.example/a/b:1.2",
            Some("registry.example/a/b:1.2-previous"),
        ),
        ("agent-sandbox", Some("agent-sandbox:latest-previous")),
        ("localhost/x@sha256:00ff", None),
        ("localhost/x:t@sha256:00ff", None),
    ] {
        assert_eq!(previous_name(image).as_deref(), previous, "{image}");
    }
    assert_eq!(previous_name(&format!("x:{}", "t".repeat(120))), None);
    let acme = crate::sandbox::client::ClientName::parse("acme").expect("a name");
    assert_eq!(
        pinned_name("localhost/agent-sandbox:latest", &acme).as_deref(),
        Some("localhost/agent-sandbox:latest-pinned-acme")
    );
    assert_eq!(pinned_name("localhost/x@sha256:00ff", &acme), None);
    assert_eq!(
        short_id(&format!("sha256:{}", "ab".repeat(32))),
        "abababababab"
    );
    assert_eq!(short_id("sha256:12"), "12");
}

#[test]
fn context_embeds_every_file_of_the_image_directory() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("image");
    let mut on_disk = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let rel = path.strip_prefix(&root).expect("prefix");
                // A copy for a plain `podman build image/` (ignored by git); each
                // build adds the running one instead.
                if rel != Path::new(CONTEXT_BINARY) {
                    on_disk.push(rel.to_string_lossy().into_owned());
                }
            }
        }
    }
    on_disk.sort();
    let embedded: Vec<String> = CONTEXT.iter().map(|f| f.path.to_owned()).collect();
    assert_eq!(embedded, on_disk);
}

#[test]
fn context_is_written_with_modes_and_no_certificates_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_context(dir.path(), &[], b"\x7fELF sandboxctl").expect("context");
    let containerfile = fs::read_to_string(dir.path().join("Containerfile")).expect("read");
    assert!(containerfile.contains("ARG BASE_IMAGE="));
    let mode = |p: &str| {
        fs::metadata(dir.path().join(p))
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("agent-entry"), 0o755);
    assert_eq!(mode("agent-session"), 0o755);
    assert_eq!(mode("agent-package-hosts"), 0o755);
    assert_eq!(mode("git-credential-sandbox"), 0o755);
    assert_eq!(mode("tmux.conf"), 0o644);
    assert_eq!(mode(CONTEXT_BINARY), 0o755);
    assert_eq!(
        fs::read(dir.path().join(CONTEXT_BINARY)).expect("read"),
        b"\x7fELF sandboxctl"
    );
    let mut certs: Vec<String> = fs::read_dir(dir.path().join("certs"))
        .expect("certs")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    certs.sort();
    assert_eq!(certs, [".keep", "README.md"]);
}

#[test]
fn ca_certificates_are_copied_one_per_file() {
    let src = tempfile::tempdir().expect("tempdir");
    let single = file(src.path(), "corp proxy.pem", PEM.as_bytes());
    let bundle = file(
        src.path(),
        "bundle.crt",
        format!("subject=CN = a\n{PEM}\n# second\n{PEM}").as_bytes(),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    write_context(dir.path(), &[single, bundle], b"").expect("context");
    let certs = dir.path().join("certs");
    assert_eq!(
        fs::read_to_string(certs.join("01-corp_proxy.crt")).expect("read"),
        PEM
    );
    assert_eq!(
        fs::read_to_string(certs.join("02-bundle-1.crt")).expect("read"),
        PEM
    );
    assert_eq!(
        fs::read_to_string(certs.join("02-bundle-2.crt")).expect("read"),
        PEM
    );
}

#[test]
fn certificate_errors_name_the_file() {
    let src = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("der.crt", &[0x30u8, 0x82, 0x01, 0xff, 0x80][..]),
        ("notes.txt", b"just some text\n"),
        (
            "key.pem",
            b"-----BEGIN PRIVATE KEY-----\nTUlJ\n-----END PRIVATE KEY-----\n",
        ),
        ("cut.crt", b"-----BEGIN CERTIFICATE-----\nTUlJQmZ6\n"),
        (
            "junk.crt",
            b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        ),
        (
            "empty.crt",
            b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        ),
    ];
    for (name, contents) in cases {
        let path = file(src.path(), name, contents);
        let err = read_ca_certs(&path).expect_err(name);
        let msg = format!("{err:#}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("not a PEM CA certificate"), "{msg}");
    }
    let missing = src.path().join("missing.crt");
    let msg = format!("{:#}", read_ca_certs(&missing).expect_err("missing"));
    assert!(
        msg.starts_with(&format!("reading CA certificate {}", missing.display())),
        "{msg}"
    );
}

#[test]
fn an_unreadable_certificate_fails_the_context() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = write_context(dir.path(), &[PathBuf::from("/nonexistent/ca.crt")], b"")
        .expect_err("missing cert");
    assert!(format!("{err:#}").contains("/nonexistent/ca.crt"));
}

#[test]
fn build_arguments() {
    let opts = BuildOptions {
        base: Some("localhost/debian:bookworm".to_owned()),
        tag: "localhost/x:1".to_owned(),
        ca_certs: Vec::new(),
        build_args: vec![("CODEX_VERSION".to_owned(), "0.1.0".to_owned())],
    };
    assert_eq!(
        build_args(&opts, Path::new("/tmp/ctx")),
        [
            "build",
            "--tag",
            "localhost/x:1",
            "--build-arg",
            "BASE_IMAGE=localhost/debian:bookworm",
            "--build-arg",
            "CODEX_VERSION=0.1.0",
            "/tmp/ctx"
        ]
    );
    let default = build_args(&BuildOptions::default_image(), Path::new("/c"));
    assert_eq!(default, ["build", "--tag", DEFAULT_IMAGE, "/c"]);
}

#[test]
fn the_containerfile_defaults_match_the_labels_read_back() {
    let containerfile = include_str!("../../../image/Containerfile");
    for label in [LABEL_CLAUDE, LABEL_CODEX, LABEL_NODE] {
        assert!(containerfile.contains(label), "{label}");
    }
    for package in [CLAUDE_PACKAGE, CODEX_PACKAGE] {
        assert!(
            containerfile.contains(&format!("\"{package}@")),
            "{package}"
        );
    }
}

/// The exported proxy runs `PROXY_BINARY` from the image: the Containerfile copies the
/// context's binary there in its last layer (only a check runs after it), so a
/// rebuilt binary rebuilds nothing else.
#[test]
fn the_binary_is_the_last_layer_at_the_proxy_path() {
    let containerfile = include_str!("../../../image/Containerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in containerfile.lines() {
        if line.trim_start().starts_with('#') && current.is_empty() {
            continue;
        }
        current.push_str(line.trim_end_matches('\\'));
        if !line.ends_with('\\') {
            if !current.trim().is_empty() {
                instructions.push(std::mem::take(&mut current));
            }
            current.clear();
        }
    }
    let layers: Vec<&String> = instructions
        .iter()
        .filter(|i| ["COPY ", "ADD ", "RUN "].iter().any(|k| i.starts_with(k)))
        .collect();
    let [.., copy, check] = layers.as_slice() else {
        panic!("no layers")
    };
    assert_eq!(
        copy.as_str(),
        format!(
            "COPY {CONTEXT_BINARY} {}",
            crate::render::kube::PROXY_BINARY
        )
    );
    assert!(
        check.starts_with(&format!(
            "RUN {} --version",
            crate::render::kube::PROXY_BINARY
        )),
        "{check}"
    );
}

#[test]
fn inspect_output_is_parsed() {
    let s = parse_inspect("img", "1203456789\t2.1.332\t0.171.0\t22.23.3\n").expect("parse");
    assert_eq!(s.size_bytes, 1_203_456_789);
    assert_eq!(s.claude_version, "2.1.332");
    assert_eq!(s.codex_version, "0.171.0");
    assert_eq!(s.node_version, "22.23.3");
    let s = parse_inspect("img", "10\t<no value>\t\t1\n").expect("parse");
    assert_eq!(s.claude_version, "unknown");
    assert_eq!(s.codex_version, "unknown");
    assert!(parse_inspect("img", "garbage").is_err());
}

#[test]
fn summary_is_readable() {
    let s = BuildSummary {
        tag: DEFAULT_IMAGE.to_owned(),
        size_bytes: 1_203_456_789,
        claude_version: "2.1.332".to_owned(),
        codex_version: "0.171.0".to_owned(),
        node_version: "22.23.3".to_owned(),
        seconds: 56.4,
    };
    assert_eq!(
        s.to_string(),
        "built localhost/agent-sandbox:latest in 56 s\n  size         1.20 GB\n  \
         Claude Code  2.1.332\n  Codex        0.171.0\n  Node.js      22.23.3"
    );
}

#[test]
fn missing_podman_is_a_one_line_error() {
    let mut cmd = Command::new("/nonexistent/podman");
    let msg = format!("{:#}", output_checked(&mut cmd).expect_err("absent"));
    assert!(msg.starts_with("podman not found: install podman"), "{msg}");
    assert!(!msg.contains('\n'));
    let msg = format!("{:#}", spawn_checked(&mut cmd).expect_err("absent"));
    assert!(msg.starts_with("podman not found: install podman"), "{msg}");
}
