//! A home that persists per client, and git identity and credentials per client
//! (issue 12, parts 2 and 3): `git config --global` and `~/.config` survive a restart
//! and stay with their client; `disable --purge` deletes the home without following
//! what the agent planted; git over HTTPS-style HTTP (a local `git http-backend` with
//! Basic auth) and over SSH (an sshd of the test user's own) reached through the
//! allowlist, with the client's `GH_TOKEN` and deploy key only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::harness::{Client, Cmd, Output, env, sbx, wait_for};

/// Runs `script` with bash in the agent's own environment (the tmux pane's, which holds
/// the secrets the entry program exported), not `podman exec`'s.
fn agent_sh(c: &Client, script: &str) -> Output {
    wait_for(
        &format!("{}'s agent session", c.name),
        Duration::from_secs(30),
        || {
            c.exec(&["tmux", "display", "-p", "-t", "main", "#{pane_pid}"])
                .status
                .success()
                .then_some(())
        },
        || c.diagnostics(),
    );
    let wrapped = format!(
        "pid=$(tmux display -p -t main '#{{pane_pid}}') || exit 97\n\
         while IFS= read -r -d '' kv; do export \"$kv\"; done < /proc/$pid/environ\n\
         cd \"$HOME\" || exit 98\n{script}"
    );
    c.exec(&["bash", "-c", &wrapped])
}

/// `sandboxctl secret set CLIENT NAME < file`.
fn secret_set(c: &Client, name: &str, file: &Path) {
    Cmd::new("sh")
        .arg("-c")
        .arg(format!("\"$0\" secret set {} {name} < \"$1\"", c.name))
        .arg(&env().bin)
        .arg(file)
        .run()
        .success();
}

fn home_of(c: &Client) -> PathBuf {
    c.data_dir().join("home")
}

#[test]
fn hg1_home_persists_across_restart_and_stays_with_its_client() {
    let a = Client::new("hg1a");
    let b = Client::new("hg1b");
    a.enable(&["--network", "none"]);
    b.enable(&["--network", "none"]);
    let home = home_of(&a);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&home)
            .expect("the home exists after enable")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o700, "{}", home.display());
    a.start();
    b.start();
    a.sh(
        "git config --global user.name 'Persistent Ada' && mkdir -p ~/.config/hg && \
         echo kept >~/.config/hg/file && echo 'alias hg1=true' >>~/.bashrc && \
         mkdir -p ~/.local/state/hg && echo state >~/.local/state/hg/s && \
         echo scratch >~/.cache/scratch",
    )
    .success();
    // The home is the client's dir on the host, the cache a capped tmpfs.
    let mounts = a.sh("cat /proc/self/mountinfo").success().stdout;
    let home_line = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/home/agent"))
        .unwrap_or_else(|| panic!("no /home/agent mount:\n{mounts}"));
    assert!(
        home_line.contains(&format!("{}/home", a.name)) && !home_line.contains(" - tmpfs "),
        "the home is not the client's dir: {home_line}"
    );
    let cache_line = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/home/agent/.cache"))
        .unwrap_or_else(|| panic!("no ~/.cache mount:\n{mounts}"));
    assert!(
        cache_line.contains(" - tmpfs ") && cache_line.contains("size=1048576k"),
        "~/.cache is not a 1 GiB tmpfs: {cache_line}"
    );

    sbx(["restart", &a.name]).run().success();
    let out = a
        .sh(
            "git config --global user.name; cat ~/.config/hg/file ~/.local/state/hg/s; \
             grep -c hg1 ~/.bashrc; ls ~/.cache",
        )
        .success();
    assert_eq!(
        out.stdout, "Persistent Ada\nkept\nstate\n1\n",
        "the home did not survive the restart (or the cache did):\n{out}"
    );
    assert!(
        home.join(".config/hg/file").is_file(),
        "not on the host's disk"
    );

    // The other client's home is its own.
    let out = b.sh("git config --global user.name; ls ~/.config/hg ~/.bashrc 2>&1; true");
    assert!(
        !out.stdout.contains("Persistent Ada") && out.stdout.contains("No such file"),
        "client b sees a's home:\n{out}"
    );
}

#[test]
fn hg2_purge_deletes_the_home_without_following_what_the_agent_planted() {
    let mut c = Client::new("hg2");
    // A host directory the agent knows the path of: it must survive the purge.
    let host = c.scratch_dir("host-secrets");
    std::fs::write(host.join("id_ed25519"), "host key\n").expect("write");
    let host_str = host.to_str().expect("UTF-8");
    c.enable(&["--network", "none"]);

    // A client whose home is gone (deleted by hand, or enabled before homes existed)
    // gets it back at start, and says so.
    std::fs::remove_dir(home_of(&c)).expect("remove the empty home");
    let out = c.start();
    assert!(
        out.stderr.contains("was missing; created it empty"),
        "no note about the recreated home:\n{out}"
    );

    c.sh(&format!(
        "set -e; cd ~; ln -s '{host_str}' ssh-link; ln -s '{host_str}/id_ed25519' key-link; \
         ln -s / root-link; mkfifo fifo; mkdir -p locked/deeper sealed; \
         echo x >locked/deeper/f; chmod 000 locked; chmod 500 sealed; \
         mkdir -p .config; ln -s '{host_str}' .config/gh"
    ))
    .success();
    let out = sbx(["disable", &c.name, "--purge"]).run().success();
    assert!(out.stdout.contains("purged"), "{out}");
    assert!(!c.data_dir().exists(), "the client's data survived:\n{out}");
    assert_eq!(
        std::fs::read_to_string(host.join("id_ed25519")).expect("the host file survives"),
        "host key\n"
    );
}

/// A git server over HTTP on the host's loopback: `git http-backend` (CGI) behind Basic
/// auth that accepts only `token`. Counts refused requests.
struct GitHttp {
    port: u16,
    refused: Arc<AtomicUsize>,
}

impl GitHttp {
    fn start(root: &Path, token: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the git server");
        let port = listener.local_addr().expect("addr").port();
        let want = format!(
            "Basic {}",
            base64(format!("x-access-token:{token}").as_bytes())
        );
        let refused = Arc::new(AtomicUsize::new(0));
        let (root, r) = (root.to_owned(), refused.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (root, want, r) = (root.clone(), want.clone(), r.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &root, &want, &r);
                });
            }
        });
        Self { port, refused }
    }
}

/// One HTTP request as the server needs it.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

fn serve(stream: TcpStream, root: &Path, want: &str, refused: &AtomicUsize) -> std::io::Result<()> {
    let req = read_request(&stream)?;
    let mut out = stream;
    if req.header("authorization").as_deref() != Some(want) {
        refused.fetch_add(1, Ordering::SeqCst);
        return out.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let raw = http_backend(root, req)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, content) = match split {
        Some((i, n)) => (
            String::from_utf8_lossy(&raw[..i]).into_owned(),
            &raw[i + n..],
        ),
        None => (String::new(), &raw[..]),
    };
    let mut status = "200 OK".to_owned();
    let mut response = String::new();
    for l in head.lines() {
        match l.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => v.trim().clone_into(&mut status),
            Some(_) => {
                response.push_str(l.trim_end());
                response.push_str("\r\n");
            }
            None => {}
        }
    }
    write!(
        out,
        "HTTP/1.1 {status}\r\n{response}Content-Length: {}\r\nConnection: close\r\n\r\n",
        content.len()
    )?;
    out.write_all(content)
}

fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    // The proxy forwards plain HTTP in origin form; an absolute URL is cut down too.
    let target = target
        .strip_prefix("http://")
        .and_then(|t| t.find('/').map(|i| t[i..].to_owned()))
        .unwrap_or(target);
    let mut req = Request {
        method,
        target,
        headers: Vec::new(),
        body: Vec::new(),
    };
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            req.headers
                .push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    if let Some(n) = req.header("content-length").and_then(|v| v.parse().ok()) {
        req.body.resize(n, 0);
        reader.read_exact(&mut req.body)?;
    } else if req
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            if n == 0 {
                line.clear();
                reader.read_line(&mut line)?;
                break;
            }
            reader.read_exact(&mut chunk)?;
            req.body.extend_from_slice(&chunk[..n]);
        }
    }
    Ok(req)
}

/// Runs `git http-backend` for `req`; its raw CGI output.
fn http_backend(root: &Path, req: Request) -> std::io::Result<Vec<u8>> {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let mut cgi = Command::new("git");
    cgi.arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &req.method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", req.body.len().to_string())
        .env("REMOTE_USER", "x-access-token")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (h, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
    ] {
        if let Some(v) = req.header(h) {
            cgi.env(var, v);
        }
    }
    let mut child = cgi.spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let body = req.body;
    std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    Ok(child.wait_with_output()?.stdout)
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(char::from(A[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// An sshd of the test user's own on a loopback port, with its own host key, that
/// accepts only the keys in `authorized`.
struct Sshd {
    port: u16,
    child: Child,
}

impl Sshd {
    fn start(dir: &Path, authorized: &Path) -> Self {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "{} is missing: tests/system/setup-host.sh installs openssh-server",
            sshd.display()
        );
        let host_key = dir.join("ssh_host_ed25519_key");
        keygen(&host_key);
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile none\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n",
                host_key.display(),
                authorized.display()
            ),
        )
        .expect("write sshd_config");
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sshd");
        wait_for(
            "the test sshd",
            Duration::from_secs(10),
            || TcpStream::connect(("127.0.0.1", port)).ok(),
            String::new,
        );
        Self { port, child }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    Cmd::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "hg-test", "-f"])
        .arg(path)
        .run()
        .success();
}

/// Every file under `dir` (links not followed) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            found.extend(files_containing(&p, needle));
        } else if t.is_file()
            && std::fs::read(&p)
                .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        {
            found.push(p);
        }
    }
    found
}

/// The two git servers of hg3 over one bare repository with a commit.
struct GitServers {
    work: PathBuf,
    repo: PathBuf,
    token: String,
    http: GitHttp,
    deploy: PathBuf,
    sshd: Sshd,
}

impl GitServers {
    fn start(c: &mut Client) -> Self {
        let work = c.scratch_dir("git-server");
        let token = format!("ghp_hg3sentinel{}", std::process::id());
        // The server's repository, with one commit.
        let repo = work.join("repo.git");
        Cmd::new("git")
            .args(["init", "-q", "--bare", "-b", "main"])
            .arg(&repo)
            .run()
            .success();
        let seed = work.join("seed");
        Cmd::new("sh")
            .arg("-c")
            .arg(
                "set -e; git init -q -b main \"$1\"; cd \"$1\"; echo seed >README; git add README; \
                 git -c user.name=seed -c user.email=seed@example.com commit -q -m seed; \
                 git push -q \"$2\" main",
            )
            .arg("sh")
            .arg(&seed)
            .arg(&repo)
            .run()
            .success();
        let http = GitHttp::start(&work, &token);
        let deploy = work.join("deploy_key");
        keygen(&deploy);
        let authorized = work.join("authorized_keys");
        std::fs::copy(deploy.with_extension("pub"), &authorized).expect("authorize the deploy key");
        let sshd = Sshd::start(&work, &authorized);

        Self {
            work,
            repo,
            token,
            http,
            deploy,
            sshd,
        }
    }
}

#[test]
fn hg3_git_over_http_and_ssh_with_the_clients_credentials_only() {
    let mut c = Client::new("hg3");
    let GitServers {
        work,
        repo,
        token,
        http,
        deploy,
        sshd,
    } = GitServers::start(&mut c);
    let http_base = format!("http://127.0.0.1:{}", http.port);
    let out = c.enable(&[
        "--network",
        "allowlist",
        "--git-name",
        "Ada Sandbox",
        "--git-email",
        "ada@example.com",
        "--git-credential-host",
        &http_base,
    ]);
    assert!(
        out.stderr.contains("unencrypted"),
        "no warning about a plain-HTTP credential host:\n{out}"
    );
    for port in [http.port, sshd.port] {
        sbx(["allow", &c.name, "--private", &format!("127.0.0.1:{port}")])
            .run()
            .success();
    }
    c.start();

    assert_identity_and_no_ssh_agent(&c);

    let repo_path = repo.to_str().expect("UTF-8");
    let ssh_url = format!("ssh://{}@127.0.0.1:{}{repo_path}", user(), sshd.port);
    let http_url = format!("{http_base}/repo.git");
    // NO_PROXY lists 127.0.0.1, which here is the host's loopback as the proxy reaches it.
    let git = "env -u NO_PROXY -u no_proxy GIT_TERMINAL_PROMPT=0 \
               GIT_SSH_COMMAND='ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new' git";

    // Without the client's credentials: refused both ways.
    let out = agent_sh(&c, &format!("{git} clone -q {http_url} no-http"));
    assert!(
        !out.status.success(),
        "an HTTP clone without a token worked:\n{out}"
    );
    assert!(
        http.refused.load(Ordering::SeqCst) > 0,
        "the server saw nothing:\n{out}"
    );
    let out = agent_sh(&c, &format!("{git} clone -q {ssh_url} no-ssh"));
    assert!(
        !out.status.success() && out.stderr.contains("Permission denied"),
        "an SSH clone without a key worked (or never reached the server):\n{out}"
    );

    // With them (secrets reach the sandbox at its next start).
    let token_file = work.join("token");
    std::fs::write(&token_file, format!("{token}\n")).expect("write token");
    secret_set(&c, "GH_TOKEN", &token_file);
    secret_set(&c, "GIT_SSH_KEY", &deploy);
    sbx(["restart", &c.name]).run().success();
    let out = agent_sh(
        &c,
        &format!(
            "set -e; {git} clone -q {http_url} via-http; cd via-http; echo http >http.txt; \
             git add http.txt; git commit -q -m 'over http'; {git} push -q origin main; cd ..; \
             {git} clone -q {ssh_url} via-ssh; cd via-ssh; echo ssh >ssh.txt; git add ssh.txt; \
             git commit -q -m 'over ssh'; {git} push -q origin HEAD:refs/heads/from-ssh"
        ),
    );
    assert!(
        out.status.success(),
        "clone/push with the credentials:\n{out}\n{}",
        c.diagnostics()
    );
    let log = Cmd::new("git")
        .arg("--git-dir")
        .arg(&repo)
        .args(["log", "--format=%an <%ae> %cn %s", "main", "from-ssh", "--"])
        .run()
        .success();
    assert!(
        log.stdout
            .contains("Ada Sandbox <ada@example.com> Ada Sandbox over http")
            && log
                .stdout
                .contains("Ada Sandbox <ada@example.com> Ada Sandbox over ssh"),
        "the pushes did not arrive with the client's identity:\n{log}"
    );

    // The token is only ever answered for a listed host.
    let refused = http.refused.load(Ordering::SeqCst);
    let out = agent_sh(
        &c,
        &format!(
            "SANDBOX_GIT_CREDENTIAL_HOSTS=https://github.com {git} ls-remote {http_url} 2>&1; \
             printf 'protocol=https\\nhost=evil.example\\n\\n' | git credential fill 2>&1; true"
        ),
    );
    assert!(
        !out.stdout.contains(&token),
        "the token went to an unlisted host:\n{out}"
    );
    assert!(http.refused.load(Ordering::SeqCst) > refused, "{out}");

    assert_token_written_nowhere(&c, &token);
}

/// The token is in no file of the project, the client's data (its home included) or
/// the unit, and in no git config inside.
fn assert_token_written_nowhere(c: &Client, token: &str) {
    // The token is in no file of the project, the client's data (its home included) or
    // the unit, and in no git config inside.
    for dir in [c.project.clone(), c.data_dir()] {
        let found = files_containing(&dir, token);
        assert!(found.is_empty(), "the token is written in {found:?}");
    }
    let unit = std::fs::read_to_string(c.unit_file()).expect("unit");
    assert!(!unit.contains(token), "the token is in the unit");
    let out = agent_sh(
        c,
        "cd via-http && git config --show-origin --list; grep -rl \"$GH_TOKEN\" ~ /tmp 2>/dev/null; true",
    )
    .success();
    assert!(
        !out.stdout.contains(token),
        "the token is in a git config or file:\n{out}"
    );
    assert!(
        out.stdout.contains("remote.origin.url=http://127.0.0.1"),
        "{out}"
    );
}

/// Inside, git's identity is the client's; no agent of the user's is reachable.
fn assert_identity_and_no_ssh_agent(c: &Client) {
    let out = agent_sh(
        c,
        "git config user.name; git config user.email; echo \"auth=${SSH_AUTH_SOCK:-none}\"; \
         ssh-add -l >/dev/null 2>&1; echo \"ssh-add=$?\"; \
         find / -xdev -type s -name 'agent*' 2>/dev/null; ls -d /tmp/ssh-* 2>/dev/null; true",
    )
    .success();
    assert_eq!(
        out.stdout, "Ada Sandbox\nada@example.com\nauth=none\nssh-add=2\n",
        "identity or an agent socket:\n{out}"
    );
}

/// The test user's name, which the test sshd accepts.
fn user() -> String {
    Cmd::new("id")
        .arg("-un")
        .run()
        .success()
        .stdout
        .trim()
        .to_owned()
}
