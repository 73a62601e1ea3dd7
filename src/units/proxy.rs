//! The egress proxy's systemd template units (`systemd/sandboxctl-proxy@.socket` and
//! `.service`), installed into the user's unit directory with the host's logging
//! adaptation. One pair serves every client: the instance name is the client name.
//!
//! The service runs a copy of sandboxctl in `Layout::libexec_dir`, never the binary that
//! ran `enable`: that one may lie in a project or a read-write mount, where the agent
//! could replace it and have its code run on the host at the next connection. Each
//! client gets a drop-in naming the absolute policy file the CLI edits, so the proxy
//! enforces exactly that file whatever `AGENT_SANDBOX_DATA` or `XDG_DATA_HOME` the user
//! manager has.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::host::{HostProfile, TemplateUnits};
use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;

const SOCKET: &str = include_str!("../../systemd/sandboxctl-proxy@.socket");
const SERVICE: &str = include_str!("../../systemd/sandboxctl-proxy@.service");

pub use crate::sandbox::layout::{
    PROXY_SERVICE_FILE as SERVICE_FILE, PROXY_SOCKET_FILE as SOCKET_FILE,
};

/// Where a client's proxy socket lives inside the container.
pub const CONTAINER_SOCKET_DIR: &str = "/run/sandbox-proxy";
/// The port of the in-container forwarder to the socket.
pub const FORWARDER_PORT: u16 = 3128;

pub fn socket_unit(client: &ClientName) -> String {
    format!("sandboxctl-proxy@{client}.socket")
}

pub fn service_unit(client: &ClientName) -> String {
    format!("sandboxctl-proxy@{client}.service")
}

pub use crate::sandbox::layout::proxy_socket_dir_relative as socket_dir_relative;

/// The service template with `ExecStart=` pointing at `exe`, and its log file where
/// there is no journald.
pub fn render_service(exe: &Path, journald: bool) -> Result<String> {
    let log = (!journald).then_some(
        "# host adaptation: no journald here; `sandboxctl logs CLIENT --network` reads this file\n\
         StandardError=append:%t/sandboxctl-proxy-%i.log\n",
    );
    rewrite_exec_start(SERVICE, "proxy", exe, log)
}

/// A service template (`what` names it in errors) with its `ExecStart=` program
/// replaced by `exe`, escaped, and `log_lines` after it where there is no journald.
/// The one place template units get the binary they run.
pub fn rewrite_exec_start(
    template: &str,
    what: &str,
    exe: &Path,
    log_lines: Option<&str>,
) -> Result<String> {
    let exe = exe
        .to_str()
        .with_context(|| format!("the sandboxctl path {} is not UTF-8", exe.display()))?;
    let exe = crate::base::escape::word("sandboxctl path", exe)?;
    let mut out = String::with_capacity(template.len() + 200);
    let mut replaced = false;
    for line in template.lines() {
        if let Some(rest) = line.strip_prefix("ExecStart=") {
            let args = rest.split_once(' ').map(|(_, a)| a).with_context(|| {
                format!("the {what} service template's ExecStart has no arguments")
            })?;
            out.push_str("ExecStart=");
            out.push_str(&exe);
            out.push(' ');
            out.push_str(args);
            out.push('\n');
            replaced = true;
            if let Some(log) = log_lines {
                out.push_str(log);
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        bail!("the {what} service template has no ExecStart line");
    }
    Ok(out)
}

/// The file name of the proxy's copy of sandboxctl in `Layout::libexec_dir`.
pub const BINARY_FILE: &str = "sandboxctl";

/// The file name of a client's drop-in in `sandboxctl-proxy@<client>.service.d/`.
pub const DROPIN_FILE: &str = "sandboxctl.conf";

/// The binary the proxy units run.
pub fn binary_path(layout: &Layout) -> PathBuf {
    layout.libexec_dir.join(BINARY_FILE)
}

/// The directory of a client's drop-ins for its proxy service.
pub fn dropin_dir(layout: &Layout, client: &ClientName) -> PathBuf {
    layout
        .systemd_user_dir
        .join(format!("{}.d", service_unit(client)))
}

/// The drop-in file `enable` writes for a client.
pub fn dropin_path(layout: &Layout, client: &ClientName) -> PathBuf {
    dropin_dir(layout, client).join(DROPIN_FILE)
}

/// Writes the template units if they differ from what is installed, after making the
/// proxy's copy of this sandboxctl binary; returns whether any unit file changed
/// (systemd must then be reloaded).
pub fn install(layout: &Layout, journald: bool) -> Result<bool> {
    let exe = std::env::current_exe().context("cannot find the path of the sandboxctl binary")?;
    install_from(layout, &exe, journald)
}

/// `install` with the binary to copy given.
pub(crate) fn install_from(layout: &Layout, exe: &Path, journald: bool) -> Result<bool> {
    install_binary(exe, &layout.libexec_dir)?;
    let service = render_service(&binary_path(layout), journald)?;
    fs::create_dir_all(&layout.systemd_user_dir)
        .with_context(|| format!("cannot create {}", layout.systemd_user_dir.display()))?;
    let mut changed = false;
    for (name, text) in [(SOCKET_FILE, SOCKET), (SERVICE_FILE, service.as_str())] {
        let path = layout.systemd_user_dir.join(name);
        if fs::read_to_string(&path).ok().as_deref() != Some(text) {
            crate::base::atomic::write(&path, text.as_bytes(), 0o644)?;
            changed = true;
        }
    }
    Ok(changed)
}

/// Whether `install_from` would change nothing: the binary's copy is there, as large
/// and as old as `exe` (the copy takes its time of modification, as `cp -p` does), and
/// both template units hold their text.
pub(crate) fn installed(layout: &Layout, exe: &Path, journald: bool) -> bool {
    let target = binary_path(layout);
    let Ok(service) = render_service(&target, journald) else {
        return false;
    };
    same_size_and_time(exe, &target)
        && [(SOCKET_FILE, SOCKET), (SERVICE_FILE, service.as_str())]
            .iter()
            .all(|(name, text)| {
                fs::read(layout.systemd_user_dir.join(name)).ok().as_deref()
                    == Some(text.as_bytes())
            })
}

/// Copies `source` to `dir/sandboxctl` (the directory made 0700, the copy 0700) unless
/// an identical copy is there; returns whether it wrote one. The copy replaces the old
/// one atomically, so a proxy starting meanwhile runs the old binary or the new one.
fn install_binary(source: &Path, dir: &Path) -> Result<bool> {
    crate::sandbox::layout::create_private_dir(dir)?;
    let target = dir.join(BINARY_FILE);
    if same_size_and_time(source, &target) || same_content(source, &target)? {
        return Ok(false);
    }
    let mut from = fs::File::open(source)
        .with_context(|| format!("cannot read the sandboxctl binary {}", source.display()))?;
    let modified = from.metadata().and_then(|m| m.modified()).ok();
    crate::base::atomic::write_with(&target, 0o700, |to| {
        io::copy(&mut from, to)?;
        modified.map_or(Ok(()), |t| to.set_modified(t))
    })
    .with_context(|| format!("cannot copy {} to {}", source.display(), target.display()))?;
    Ok(true)
}

/// Whether `b` is as large as `a` and was last modified at the same time: a copy made
/// by `install_binary` of the binary as it is now.
fn same_size_and_time(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => {
            b.is_file()
                && a.len() == b.len()
                && a.modified()
                    .ok()
                    .is_some_and(|t| b.modified().ok() == Some(t))
        }
        _ => false,
    }
}

/// Whether `a` and `b` hold the same bytes; false when `b` does not exist.
fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let mut fb = match fs::File::open(b) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", b.display())),
    };
    let mut fa = fs::File::open(a)
        .with_context(|| format!("cannot read the sandboxctl binary {}", a.display()))?;
    let len = |f: &fs::File, p: &Path| {
        f.metadata()
            .map(|m| m.len())
            .with_context(|| format!("cannot read {}", p.display()))
    };
    if len(&fa, a)? != len(&fb, b)? {
        return Ok(false);
    }
    let mut ba = vec![0u8; 1 << 16];
    let mut bb = vec![0u8; 1 << 16];
    loop {
        let n =
            read_full(&mut fa, &mut ba).with_context(|| format!("cannot read {}", a.display()))?;
        let m =
            read_full(&mut fb, &mut bb).with_context(|| format!("cannot read {}", b.display()))?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A client's drop-in: the proxy runs with the absolute data directory that the CLI
/// used, so the policy `allow`, `deny` and `policy` edit, the settings and the held key
/// are that client's, whatever the user manager's environment says.
pub fn render_dropin(exe: &Path, data_dir: &Path) -> Result<String> {
    if !data_dir.is_absolute() {
        bail!(
            "the data directory {} is not absolute; set AGENT_SANDBOX_DATA or XDG_DATA_HOME to an absolute directory",
            data_dir.display()
        );
    }
    let word = |what: &str, p: &Path| -> Result<crate::base::escape::Word> {
        let s = p.to_str().with_context(|| {
            format!("the {what} {} is not UTF-8; use a UTF-8 path", p.display())
        })?;
        crate::base::escape::word(what, s)
    };
    let exe = word("sandboxctl path", exe)?;
    let data_dir = word("data directory", data_dir)?;
    Ok(format!(
        "# Written by `sandboxctl enable`, removed by `sandboxctl disable`: this client's\n\
         # proxy reads its policy, settings and key from the data directory the CLI uses.\n\
         [Service]\n\
         ExecStart=\n\
         ExecStart={exe} proxy --client %i --systemd-socket --data-dir {data_dir}\n"
    ))
}

/// The binary the proxy units run on this host: the packaged one, or the private copy.
pub fn proxy_binary(layout: &Layout, host: &HostProfile) -> PathBuf {
    match &host.template_units {
        TemplateUnits::Packaged { binary, .. } => binary.clone(),
        TemplateUnits::PerUser => binary_path(layout),
    }
}

/// The drop-in `enable` writes for a client on this host. The packaged service cannot
/// know whether the host has journald, so without it the drop-in adds the log file that
/// the per-user copy gets in its template.
pub fn client_dropin(layout: &Layout, host: &HostProfile) -> Result<String> {
    let mut text = render_dropin(&proxy_binary(layout, host), &layout.data_dir)?;
    if matches!(host.template_units, TemplateUnits::Packaged { .. }) && !host.journald {
        text.push_str(
            "# host adaptation: no journald here; `sandboxctl logs CLIENT --network` reads this file\n\
             StandardError=append:%t/sandboxctl-proxy-%i.log\n",
        );
    }
    Ok(text)
}

/// Writes the client's drop-in if it differs; returns whether it changed.
pub fn install_client(layout: &Layout, host: &HostProfile, client: &ClientName) -> Result<bool> {
    let text = client_dropin(layout, host)?;
    let path = dropin_path(layout, client);
    if fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(false);
    }
    let dir = dropin_dir(layout, client);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    crate::base::atomic::write(&path, text.as_bytes(), 0o644)?;
    Ok(true)
}

/// Whether the client's drop-in holds what `install_client` would write.
pub fn dropin_current(layout: &Layout, host: &HostProfile, client: &ClientName) -> bool {
    client_dropin(layout, host).is_ok_and(|text| {
        fs::read(dropin_path(layout, client)).ok().as_deref() == Some(text.as_bytes())
    })
}

/// The client's drop-in as it is on disk, if any.
pub fn existing_dropin(layout: &Layout, client: &ClientName) -> Result<Option<String>> {
    let path = dropin_path(layout, client);
    match fs::read_to_string(&path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Removes the client's drop-in, and its directory when nothing else is in it (a
/// drop-in the user added stays); returns whether the drop-in was there.
pub fn remove_client(layout: &Layout, client: &ClientName) -> Result<bool> {
    let path = dropin_path(layout, client);
    let removed = match fs::remove_file(&path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
    };
    // Fails (and is left) when the user put something else there.
    let _ = fs::remove_dir(dropin_dir(layout, client));
    Ok(removed)
}

/// Deletes a client's socket directory (once its socket unit is stopped); returns the
/// path when there was one.
pub fn remove_socket_dir(layout: &Layout, client: &ClientName) -> Result<Option<PathBuf>> {
    let Some(dir) = layout.proxy_socket_dir(client) else {
        return Ok(None);
    };
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(Some(dir)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot delete {}", dir.display())),
    }
}

/// The proxy's log file on a host without journald.
pub fn log_file(client: &ClientName) -> Option<std::path::PathBuf> {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").filter(|r| !r.is_empty())?;
    Some(Path::new(&runtime).join(format!("sandboxctl-proxy-{client}.log")))
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
