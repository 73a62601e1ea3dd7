//! Port forwards: a server listening on `127.0.0.1:PORT` inside a client's sandbox made
//! reachable at `127.0.0.1:HOSTPORT` on the host, whatever the sandbox's network mode.
//!
//! A forward is a pair of units the user manager runs: a socket listening on the host's
//! loopback only (`Accept=yes`, capped), and a template service that, per connection,
//! runs `podman exec -i agent-<client> /usr/bin/python3 -I -S -c RELAY`, a relay to
//! 127.0.0.1:PORT inside. The bytes travel through podman's exec stream, so the
//! container needs no network, and the host never connects to a socket or follows a
//! path the sandbox could write (a Unix socket in a directory the sandbox can write
//! could be swapped for a symlink to the user's D-Bus or ssh-agent socket).
//!
//! The units live in the user manager's runtime unit directory
//! (`$XDG_RUNTIME_DIR/systemd/user`, gone at logout or reboot) or, with `--persist`, in
//! `~/.config/systemd/user` with a link in `sockets.target.wants/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::base::escape;
use crate::sandbox::client::ClientName;
use crate::sandbox::forward::PREFIX;
pub use crate::sandbox::forward::{MIN_HOST_PORT, PortForward, runtime_unit_dir};
use crate::sandbox::layout::Layout;

/// At most this many connections of one forward at once; each runs a `podman exec`.
pub const MAX_CONNECTIONS: u32 = 32;

/// The program that relays a connection inside the sandbox (the image's, read-only: an
/// absolute path, so nothing the agent puts on its `PATH` is run instead). `-I -S`:
/// no environment variables, user site or `site` module (and a faster start).
pub const PYTHON: &str = "/usr/bin/python3";

/// The relay inside the sandbox, one line (a unit word cannot hold a line break):
/// stdin (the host's connection) to the server, the server to stdout. The host
/// client's half-close is passed on and the server's answer still read to its end; the
/// server's close ends the relay at once, so the host's client sees its end without
/// delay. (`socat` lingers 0.5 s after either side's end, +0.45 s on every
/// close-delimited response measured here, and `socat -t0` drops the answer to a
/// client that half-closes.)
pub fn relay_script(port: u16) -> String {
    format!(
        "import os,socket,threading;\
         s=socket.create_connection(('127.0.0.1',{port}));\
         up=lambda:([s.sendall(b) for b in iter(lambda:os.read(0,65536),b'')],s.shutdown(socket.SHUT_WR));\
         w=lambda b:b and w(b[os.write(1,b):]);\
         threading.Thread(target=up,daemon=True).start();\
         [w(b) for b in iter(lambda:s.recv(65536),b'')];\
         os._exit(0)"
    )
}

/// The socket unit: `127.0.0.1:HOSTPORT` only, one service per connection, capped.
pub fn render_socket(client: &ClientName, f: PortForward) -> Result<String> {
    f.validate(client)?;
    Ok(format!(
        "{marker}\n\
         [Unit]\n\
         Description=sandboxctl: 127.0.0.1:{host} on the host to port {port} in {name}'s sandbox\n\
         \n\
         [Socket]\n\
         # Loopback only: nothing on another address or interface reaches the sandbox.\n\
         ListenStream=127.0.0.1:{host}\n\
         Accept=yes\n\
         # Each connection runs a podman exec; more at once are refused until one ends.\n\
         MaxConnections={MAX_CONNECTIONS}\n\
         NoDelay=yes\n\
         \n\
         [Install]\n\
         WantedBy=sockets.target\n",
        marker = marker(client, f),
        name = escape::raw("client name", client.as_str())?,
        host = f.host,
        port = f.container,
    ))
}

/// The per-connection service: the accepted connection is podman exec's stdin and
/// stdout, relayed to the port on the sandbox's loopback by `relay_script`.
pub fn render_service(
    client: &ClientName,
    f: PortForward,
    podman: &Path,
    journald: bool,
) -> Result<String> {
    f.validate(client)?;
    let podman = podman
        .to_str()
        .with_context(|| format!("the podman path {} is not UTF-8", podman.display()))?;
    let script = relay_script(f.container);
    let container = client.container_name();
    let words = [
        ("podman path", podman),
        ("podman argument", "exec"),
        ("podman argument", "-i"),
        // No detach keys: the stream is binary and must pass whole.
        ("podman argument", "--detach-keys="),
        ("container name", container.as_str()),
        ("relay", PYTHON),
        ("relay argument", "-I"),
        ("relay argument", "-S"),
        ("relay argument", "-c"),
        ("relay script", script.as_str()),
    ]
    .into_iter()
    .map(|(what, v)| escape::word(what, v).map(|w| w.to_string()))
    .collect::<Result<Vec<_>>>()?;
    let stderr = if journald {
        "StandardError=journal"
    } else {
        "# host adaptation: no journald here, and the socket is no place for podman's errors\n\
         StandardError=null"
    };
    Ok(format!(
        "{marker}\n\
         [Unit]\n\
         Description=sandboxctl: a connection to port {port} in {name}'s sandbox\n\
         CollectMode=inactive-or-failed\n\
         \n\
         [Service]\n\
         ExecStart={exec}\n\
         StandardInput=socket\n\
         StandardOutput=socket\n\
         {stderr}\n",
        marker = marker(client, f),
        name = escape::raw("client name", client.as_str())?,
        port = f.container,
        exec = words.join(" "),
    ))
}

fn marker(client: &ClientName, f: PortForward) -> String {
    format!(
        "{}{client}: `sandboxctl port {client} {} --host-port {} --rm` removes this forward.",
        crate::base::unit_text::MARKER,
        f.container,
        f.host
    )
}

/// The forward's unit files' contents, in the order of `unit_paths`.
pub fn render_units(
    client: &ClientName,
    f: PortForward,
    podman: &Path,
    journald: bool,
) -> Result<[String; 2]> {
    Ok([
        render_socket(client, f)?,
        render_service(client, f, podman, journald)?,
    ])
}

/// Every port unit file of `client` sandboxctl wrote, in both unit directories, and
/// the `sockets.target.wants` links to them: what `disable` removes, whatever the
/// settings say.
pub fn files_of(layout: &Layout, client: &ClientName) -> Result<Vec<PathBuf>> {
    let stem = format!("{PREFIX}{client}-");
    let mut dirs = vec![layout.systemd_user_dir.clone()];
    dirs.extend(runtime_unit_dir(layout).ok());
    let mut out = Vec::new();
    for dir in &dirs {
        for (path, name) in entries(dir)? {
            if is_port_unit(&name, &stem)
                && std::fs::read_to_string(&path).is_ok_and(|t| crate::base::unit_text::is_ours(&t))
            {
                out.push(path);
            }
        }
    }
    let wants = layout.systemd_user_dir.join("sockets.target.wants");
    for (path, name) in entries(&wants)? {
        if is_port_unit(&name, &stem)
            && std::fs::read_link(&path).is_ok_and(|t| t.parent() == Some(&layout.systemd_user_dir))
        {
            out.push(path);
        }
    }
    Ok(out)
}

/// `<stem><digits>.socket` or `<stem><digits>@.service`.
fn is_port_unit(name: &str, stem: &str) -> bool {
    let Some(rest) = name.strip_prefix(stem) else {
        return false;
    };
    let digits = rest
        .strip_suffix(".socket")
        .or_else(|| rest.strip_suffix("@.service"));
    digits.is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The entries of `dir` (none if it does not exist).
fn entries(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut out = Vec::new();
    for e in read {
        let e = e.with_context(|| format!("cannot read {}", dir.display()))?;
        if let Some(name) = e.file_name().to_str() {
            out.push((e.path(), name.to_owned()));
        }
    }
    Ok(out)
}

/// Refuses a host port something already listens on (on 127.0.0.1 or on every address).
pub fn check_free(port: u16) -> Result<()> {
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            bail!("127.0.0.1:{port} is already in use on the host; choose another with --host-port")
        }
        Err(e) => Err(e).with_context(|| format!("cannot check whether 127.0.0.1:{port} is free")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> ClientName {
        ClientName::parse("acme").expect("name")
    }

    const FWD: PortForward = PortForward {
        host: 8080,
        container: 3000,
        persist: false,
    };

    #[test]
    fn socket_listens_on_loopback_only_with_a_cap() {
        let text = render_socket(&acme(), FWD).expect("render");
        assert!(crate::base::unit_text::is_ours(&text), "{text}");
        let listen: Vec<&str> = text.lines().filter(|l| l.starts_with("Listen")).collect();
        assert_eq!(listen, ["ListenStream=127.0.0.1:8080"]);
        for line in ["Accept=yes", "MaxConnections=32", "WantedBy=sockets.target"] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        for key in ["FreeBind=", "BindToDevice=", "BindIPv6Only=", "ReusePort="] {
            assert!(!text.contains(key), "{key}:\n{text}");
        }
    }

    #[test]
    fn service_relays_through_podman_exec_with_escaped_words() {
        let text = render_service(&acme(), FWD, Path::new("/opt/po dman 100%/podman"), true)
            .expect("render");
        assert!(
            text.lines().any(|l| l
                == format!(
                    "ExecStart=\"/opt/po dman 100%%/podman\" \"exec\" \"-i\" \"--detach-keys=\" \
                     \"agent-acme\" \"/usr/bin/python3\" \"-I\" \"-S\" \"-c\" \"{}\"",
                    relay_script(3000)
                )),
            "{text}"
        );
        let script = relay_script(3000);
        assert!(
            script.contains("create_connection(('127.0.0.1',3000))"),
            "{script}"
        );
        // One line, nothing systemd or the quoting would change.
        assert!(!script.contains(['\n', '"', '\\', '%', '$']), "{script}");
        for line in [
            "StandardInput=socket",
            "StandardOutput=socket",
            "StandardError=journal",
            "CollectMode=inactive-or-failed",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        let text =
            render_service(&acme(), FWD, Path::new("/usr/bin/podman"), false).expect("render");
        assert!(text.lines().any(|l| l == "StandardError=null"), "{text}");
        assert!(
            render_service(&acme(), FWD, Path::new("/usr/bin/pod\nman"), true).is_err(),
            "a line break in the podman path"
        );
    }

    #[test]
    fn privileged_host_ports_and_port_zero_are_refused() {
        let low = PortForward { host: 80, ..FWD };
        let err = render_socket(&acme(), low)
            .expect_err("privileged")
            .to_string();
        assert!(err.contains("host port 80 is privileged"), "{err}");
        let zero = PortForward {
            container: 0,
            ..FWD
        };
        assert!(render_service(&acme(), zero, Path::new("/p"), true).is_err());
        assert!(PortForward { host: 1024, ..FWD }.validate(&acme()).is_ok());
    }

    #[test]
    fn units_go_to_the_runtime_dir_unless_persistent() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let layout = Layout::under(tmp.path());
        let [socket, service] = FWD.unit_paths(&layout, &acme()).expect("paths");
        assert_eq!(
            socket,
            tmp.path()
                .join("run/systemd/user/sandboxctl-port-acme-8080.socket")
        );
        assert_eq!(
            service,
            tmp.path()
                .join("run/systemd/user/sandboxctl-port-acme-8080@.service")
        );
        let persist = PortForward {
            persist: true,
            ..FWD
        };
        let [socket, _] = persist.unit_paths(&layout, &acme()).expect("paths");
        assert_eq!(
            socket,
            tmp.path()
                .join("systemd-user/sandboxctl-port-acme-8080.socket")
        );
        assert_eq!(
            persist.wants_link(&layout, &acme()),
            tmp.path()
                .join("systemd-user/sockets.target.wants/sandboxctl-port-acme-8080.socket")
        );
        let no_runtime = Layout {
            runtime_dir: None,
            ..layout
        };
        let err = FWD
            .unit_paths(&no_runtime, &acme())
            .expect_err("no runtime dir")
            .to_string();
        assert!(err.contains("--persist"), "{err}");
    }

    #[test]
    fn files_of_finds_only_this_clients_units_that_sandboxctl_wrote() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let layout = Layout::under(tmp.path());
        let acme = acme();
        let a1 = ClientName::parse("acme-1").expect("name");
        let persist = PortForward {
            host: 9090,
            persist: true,
            ..FWD
        };
        let mut want = Vec::new();
        for (client, f) in [
            (&acme, FWD),
            (&acme, persist),
            (&a1, PortForward { host: 8081, ..FWD }),
        ] {
            let texts =
                render_units(client, f, Path::new("/usr/bin/podman"), true).expect("render");
            for (path, text) in f
                .unit_paths(&layout, client)
                .expect("paths")
                .iter()
                .zip(texts)
            {
                std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
                std::fs::write(path, text).expect("write");
                if *client == acme {
                    want.push(path.clone());
                }
            }
        }
        let link = persist.wants_link(&layout, &acme);
        std::fs::create_dir_all(link.parent().expect("dir")).expect("mkdir");
        std::os::unix::fs::symlink(
            &persist.unit_paths(&layout, &acme).expect("paths")[0],
            &link,
        )
        .expect("link");
        want.push(link);
        // A user's own unit with a matching name is not ours.
        std::fs::write(
            layout
                .systemd_user_dir
                .join("sandboxctl-port-acme-7000.socket"),
            "[Socket]\n",
        )
        .expect("write");
        let mut got = files_of(&layout, &acme).expect("scan");
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn a_listening_port_is_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let err = check_free(port).expect_err("in use").to_string();
        assert_eq!(
            err,
            format!(
                "127.0.0.1:{port} is already in use on the host; choose another with --host-port"
            )
        );
        drop(l);
        check_free(port).expect("free again");
    }

    #[test]
    fn settings_round_trip() {
        let text = toml::to_string(&PortForward {
            persist: true,
            ..FWD
        })
        .expect("ser");
        assert_eq!(text, "host = 8080\ncontainer = 3000\npersist = true\n");
        let back: PortForward = toml::from_str("host = 8080\ncontainer = 3000\n").expect("de");
        assert_eq!(back, FWD);
    }
}
