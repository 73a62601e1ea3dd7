//! Masks (issue 26, part 12): secret files of a project are empty and read-only inside
//! the sandbox, looked for again at each start; a link the agent plants is never
//! followed, and a file that cannot be masked stops the start rather than showing it.

use std::path::Path;

use crate::harness::{Client, sbx};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// What `cat` shows of `path` inside the sandbox.
fn cat(c: &Client, path: &Path) -> String {
    let p = path.to_str().expect("UTF-8");
    c.exec(&["cat", p]).success().stdout
}

/// The default set hides `.env` and a key at any depth but not other files; `--mask`
/// adds a path; the agent can neither read nor write a masked file; `status` lists
/// them; a secret file added on the host after `enable` is masked at the next start.
#[test]
fn mk1_secret_files_are_empty_and_read_only_inside() {
    let c = Client::new("mk1");
    let p = c.project.clone();
    write(&p.join(".env"), "API_TOKEN=host-secret\n");
    write(&p.join("certs/server.pem"), "-----BEGIN PRIVATE KEY-----\n");
    write(&p.join("config/secrets.yml"), "password: hunter2\n");
    write(&p.join("notes.txt"), "readable\n");
    let out = c.enable(&["--mask", "config/secrets.yml"]);
    assert!(out.stdout.contains("masks: 3 files"), "{out}");
    assert!(
        out.stdout.contains(".env.*") && out.stdout.contains("*.pem"),
        "{out}"
    );
    c.start();

    for f in [".env", "certs/server.pem", "config/secrets.yml"] {
        assert_eq!(cat(&c, &p.join(f)), "", "{f} is readable inside");
    }
    assert_eq!(cat(&c, &p.join("notes.txt")), "readable\n");
    let env_file = p.join(".env");
    let w = c.sh(&format!(
        "echo stolen > '{}'",
        env_file.to_str().expect("UTF-8")
    ));
    assert!(!w.status.success(), "a masked file was writable: {w}");
    assert_eq!(
        std::fs::read_to_string(&env_file).expect("the host's .env"),
        "API_TOKEN=host-secret\n"
    );
    let status = sbx(["status", &c.name]).run().success();
    for f in [".env", "certs/server.pem", "config/secrets.yml"] {
        let line = format!("{}: masked: {}", c.name, p.join(f).display());
        assert!(status.stdout.contains(&line), "{line}\n{status}");
    }
    let json = sbx(["status", &c.name, "--json"]).run().success().json();
    assert_eq!(json["masked"].as_array().map(Vec::len), Some(3), "{json}");

    // Added on the host after `enable`: masked at the next start.
    write(&p.join("api/.env.local"), "LOCAL_TOKEN=1\n");
    let out = sbx(["restart", &c.name]).run().success();
    assert!(out.stdout.contains("masks: 4 files"), "{out}");
    assert_eq!(cat(&c, &p.join("api/.env.local")), "");
}

/// The agent plants a link named like a secret, pointing at a file of the host, and a
/// file whose name no mount can express: the next start follows and masks no link
/// (the host file stays as it was), and the unmaskable file stops the start with its
/// name, until it is gone.
#[test]
fn mk2_planted_links_and_unmaskable_names_fail_closed() {
    let mut c = Client::new("mk2");
    let host_dir = c.scratch_dir("host-only");
    let host_file = host_dir.join("id_rsa");
    write(&host_file, "host key\n");
    c.enable(&[]);
    c.start();
    let link = c.project.join("id_rsa");
    c.exec(&[
        "ln",
        "-s",
        host_file.to_str().expect("UTF-8"),
        link.to_str().expect("UTF-8"),
    ])
    .success();
    let out = sbx(["restart", &c.name]).run().success();
    assert!(
        !out.stdout.contains("masks:"),
        "the unit was rewritten: {out}"
    );
    let status = sbx(["status", &c.name, "--json"]).run().success().json();
    assert_eq!(status["masked"], serde_json::json!([]), "{status}");
    assert!(link.is_symlink(), "the planted link was replaced");
    assert_eq!(
        std::fs::read_to_string(&host_file).expect("the host file"),
        "host key\n"
    );

    let odd = c.project.join("a:b.pem");
    c.exec(&["sh", "-c", &format!("echo x > '{}'", odd.display())])
        .success();
    let out = sbx(["restart", &c.name]).run().failure();
    assert!(
        out.stderr.contains("cannot mask") && out.stderr.contains("a:b.pem"),
        "{out}"
    );
    std::fs::remove_file(&odd).expect("rm");
    sbx(["start", &c.name]).run().success();
}
