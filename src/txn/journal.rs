//! The undo log on disk. A plan's in-memory undo covers a step that fails, but not a
//! command that dies (SIGKILL, OOM, power cut): then only what is on disk is left. So
//! before each step runs, the plan writes here what that step may change, as it is
//! now — a file's bytes and mode, a link's target, that a directory or a secret did not
//! exist — and removes the log once every step is applied. The next command that takes
//! the change lock (`lock::ChangeLock`) and finds a log puts each of those back, in
//! reverse order, and reloads the user manager: the interrupted command's clients are
//! then exactly as they were before it, and running it again applies it whole.
//!
//! Layout: `DATA/.journal/NNNN.json`, one entry each (a file's bytes inside it), each
//! written atomically, and the directory synced once per step, so a log cut short by
//! the kill is still a valid log.
//!
//! Recovery trusts a log only as far as a plan could have written it: every path it
//! restores lies below sandboxctl's own directories or a client's projects or shared
//! Claude config (as the client's settings name them), without `..`; a saved copy is
//! the entry's own bytes, its link next to the file, or (in a log an earlier version
//! wrote) its `NNNN.data`. A log with any other
//! entry is refused whole, before anything is undone.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::sandbox::client::ClientName;
use crate::sandbox::layout::Layout;

/// Files larger than this are kept by a hard link next to them, not by a copy in the
/// log (the private sandboxctl binary; the log may be on another file system): every
/// file a plan replaces is replaced by a rename, so the old inode the link holds is
/// never written to.
const LINK_ABOVE: u64 = 1 << 20;

/// The prefix of those links' names.
const LINK_PREFIX: &str = ".sandboxctl-journal-";

/// What a step may change.
#[derive(Debug, Clone)]
pub enum Touch {
    /// A file or symbolic link that may be written, replaced or removed.
    Path(PathBuf),
    /// A directory that may be created with its missing parents; recovery removes
    /// the ones that were missing if they are empty again.
    Dir(PathBuf),
    /// A directory that may be created and filled (a client's data directory);
    /// recovery deletes it whole if it was missing.
    Tree(PathBuf),
    /// A Podman secret of a client that may be created.
    Secret(ClientName, String),
    /// The user manager is reloaded: recovery reloads it after restoring the files.
    Reload,
}

#[derive(Debug, Serialize, Deserialize)]
enum Before {
    Absent,
    /// `data`: a file in the log's directory, or (for a large file) the absolute path
    /// of a hard link next to the file.
    File {
        data: PathBuf,
        mode: u32,
    },
    /// A file's bytes, kept in the entry itself.
    Bytes {
        bytes: Vec<u8>,
        mode: u32,
    },
    Link {
        target: PathBuf,
    },
    /// A directory or a special file where a file is expected: left alone.
    Other,
}

#[derive(Debug, Serialize, Deserialize)]
enum Entry {
    Path {
        path: PathBuf,
        before: Before,
    },
    /// Directories that did not exist, outermost first.
    Dirs {
        missing: Vec<PathBuf>,
    },
    Tree {
        path: PathBuf,
    },
    Secret {
        client: String,
        name: String,
    },
    Reload,
}

/// The log of one plan being applied.
pub struct Journal {
    dir: PathBuf,
    next: std::cell::Cell<usize>,
    /// The hard links made next to large files, removed with the log.
    links: std::cell::RefCell<Vec<PathBuf>>,
    /// The directories the log's own directory needed (a first `enable`).
    made: Vec<PathBuf>,
}

fn journal_dir(layout: &Layout) -> PathBuf {
    layout.data_dir.join(".journal")
}

impl Journal {
    /// Starts a log; call with the change lock held (so no other log exists).
    pub fn begin(layout: &Layout) -> Result<Self> {
        let dir = journal_dir(layout);
        let made = crate::base::made_dirs::missing(&layout.data_dir);
        crate::sandbox::layout::create_private_dir(&dir)?;
        Ok(Self {
            dir,
            next: std::cell::Cell::new(0),
            links: std::cell::RefCell::new(Vec::new()),
            made,
        })
    }

    /// Writes down, before a step runs, the present state of what it may change (a
    /// file's bytes in its entry, a large file's as a link next to it), made durable
    /// by one sync of the log's directory for the whole step: a step's entries are on
    /// disk before the step runs.
    pub fn record(&self, touches: &[Touch]) -> Result<()> {
        let mut entries = Vec::new();
        for t in touches {
            let n = self.next.get() + entries.len();
            let entry = match t {
                Touch::Path(path) => Entry::Path {
                    path: path.clone(),
                    before: self.save(path, n)?,
                },
                Touch::Dir(dir) => {
                    let missing = crate::base::made_dirs::missing(dir);
                    if missing.is_empty() {
                        continue;
                    }
                    Entry::Dirs { missing }
                }
                Touch::Tree(dir) => {
                    if fs::symlink_metadata(dir).is_ok() {
                        continue;
                    }
                    Entry::Tree { path: dir.clone() }
                }
                Touch::Secret(client, name) => {
                    if crate::state::secrets::list(client)?
                        .iter()
                        .any(|s| s == name)
                    {
                        // An existing value cannot be read back: not undoable.
                        continue;
                    }
                    Entry::Secret {
                        client: client.to_string(),
                        name: name.clone(),
                    }
                }
                Touch::Reload => Entry::Reload,
            };
            entries.push(entry);
        }
        if entries.is_empty() {
            return Ok(());
        }
        for entry in &entries {
            let n = self.next.get();
            let text = serde_json::to_vec(entry).context("cannot encode a journal entry")?;
            crate::base::atomic::write_before_dir_sync(
                &self.dir.join(format!("{n:04}.json")),
                &text,
                0o600,
            )?;
            self.next.set(n + 1);
        }
        crate::base::atomic::sync_dir(&self.dir)
    }

    /// Keeps a copy of `path` as entry `n`'s data.
    fn save(&self, path: &Path, n: usize) -> Result<Before> {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Before::Absent),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        if meta.file_type().is_symlink() {
            let target =
                fs::read_link(path).with_context(|| format!("cannot read {}", path.display()))?;
            return Ok(Before::Link { target });
        }
        if !meta.is_file() {
            return Ok(Before::Other);
        }
        let mode = meta.permissions().mode() & 0o7777;
        if meta.size() > LINK_ABOVE
            && let Some(dir) = path.parent()
        {
            let link = dir.join(format!("{LINK_PREFIX}{n:04}"));
            let _ = fs::remove_file(&link);
            if fs::hard_link(path, &link).is_ok() {
                crate::base::atomic::sync_dir(dir)?;
                self.links.borrow_mut().push(link.clone());
                return Ok(Before::File { data: link, mode });
            }
        }
        // Some of these files are the agent's (its login files, git pins in a project):
        // read without following a link, without blocking on a FIFO swapped in since the
        // check above, and no more than a small file holds.
        let bytes = crate::base::agent_file::AgentPath::new(path)
            .read(LINK_ABOVE)?
            .with_context(|| format!("{} disappeared while read", path.display()))?;
        Ok(Before::Bytes { bytes, mode })
    }

    /// The plan is applied (or undone in memory): the log is not needed any more.
    pub fn finish(self) -> Result<()> {
        for link in self.links.borrow().iter() {
            let _ = fs::remove_file(link);
        }
        fs::remove_dir_all(&self.dir)
            .with_context(|| format!("cannot remove {}", self.dir.display()))?;
        // Left empty by a plan that was undone: as if the command never ran.
        for d in self.made.iter().rev() {
            if fs::remove_dir(d).is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// Whether an undo log is there (an interrupted command's, or a running one's).
pub fn pending(layout: &Layout) -> bool {
    journal_dir(layout).exists()
}

/// Undoes what an interrupted command left (if it left a log); call with the change
/// lock held. Says on stderr what it did.
pub fn recover(layout: &Layout) -> Result<()> {
    recover_with(layout, &|| {
        crate::host::systemd::Systemd::connect_user()?.reload()
    })
}

/// [`recover`], with the reload of the user manager given.
pub fn recover_with(layout: &Layout, reload: &dyn Fn() -> Result<()>) -> Result<()> {
    let dir = journal_dir(layout);
    let entries = match read_entries(&dir) {
        Ok(Some(entries)) => entries,
        Ok(None) => return Ok(()),
        Err(e) => return Err(e.context(recover_hint(&dir))),
    };
    let roots = Roots::of(layout);
    for (name, entry) in &entries {
        if let Err(why) = roots.check(name, entry) {
            bail!(
                "refusing to undo {}: {why}; nothing was undone: look at {}, remove it and run the command again",
                dir.join(name).display(),
                dir.display()
            );
        }
    }
    let count = entries.len();
    let mut reloaded = false;
    for (_, entry) in entries.into_iter().rev() {
        match entry {
            Entry::Reload => reloaded = true,
            entry => undo(&dir, entry).with_context(|| recover_hint(&dir))?,
        }
    }
    if reloaded {
        reload().with_context(|| recover_hint(&dir))?;
    }
    fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    eprintln!(
        "sandboxctl: an earlier command was interrupted; undid its {count} recorded change(s), so its clients are as they were before it (run it again to apply it)"
    );
    Ok(())
}

fn recover_hint(dir: &Path) -> String {
    format!(
        "cannot undo the interrupted change recorded in {}; fix what the error names and run the command again",
        dir.display()
    )
}

/// The log's entries in order, with their file names; `None` if there is no log. An
/// entry whose JSON is not there yet was never started: the log ends before it.
fn read_entries(dir: &Path) -> Result<Option<Vec<(String, Entry)>>> {
    let list = match fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut names: Vec<String> = list
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            n.strip_suffix(".json")
                .is_some_and(|stem| !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    names.sort();
    let mut entries = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let entry = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a journal entry", path.display()))?;
        entries.push((name, entry));
    }
    Ok(Some(entries))
}

/// Where a plan's entries may restore to.
struct Roots {
    /// sandboxctl's own directories: data, Quadlet units, user units, its binary copy.
    own: Vec<PathBuf>,
    /// The clients' projects (git pins) and shared Claude configs. A plan writes a
    /// client's settings before these, and recovery restores the settings after them.
    clients: Vec<PathBuf>,
    clients_dir: PathBuf,
}

impl Roots {
    fn of(layout: &Layout) -> Self {
        let mut clients = Vec::new();
        for client in layout.list_clients().unwrap_or_default() {
            if let Ok(settings) = crate::sandbox::settings::Settings::load_client(layout, &client) {
                clients.extend(settings.projects);
                clients.extend(settings.claude_config);
            }
        }
        Self {
            own: vec![
                layout.data_dir.clone(),
                layout.unit_dir.clone(),
                layout.systemd_user_dir.clone(),
                layout.libexec_dir.clone(),
            ],
            clients,
            clients_dir: layout.clients_dir(),
        }
    }

    /// Why entry `name` is not one a plan writes, if it is not.
    fn check(&self, name: &str, entry: &Entry) -> Result<(), String> {
        match entry {
            Entry::Path { path, before } => {
                self.below(path)?;
                let Before::File { data, .. } = before else {
                    return Ok(());
                };
                let n = name.trim_end_matches(".json");
                let own = data == Path::new(&format!("{n}.data"))
                    || path
                        .parent()
                        .is_some_and(|d| *data == d.join(format!("{LINK_PREFIX}{n}")));
                if own {
                    Ok(())
                } else {
                    Err(format!(
                        "its saved copy of {} is {}, not a file of the undo log",
                        path.display(),
                        data.display()
                    ))
                }
            }
            Entry::Dirs { missing } => missing.iter().try_for_each(|d| {
                // Creating a root creates its missing parents too.
                if plain(d) && self.own.iter().any(|r| r.starts_with(d)) {
                    Ok(())
                } else {
                    self.below(d)
                }
            }),
            Entry::Tree { path } => {
                let named = path.file_name().and_then(|n| n.to_str());
                if plain(path)
                    && path.parent() == Some(self.clients_dir.as_path())
                    && named.is_some_and(|n| ClientName::parse(n).is_ok())
                {
                    Ok(())
                } else {
                    Err(format!(
                        "{} is not a client's data directory",
                        path.display()
                    ))
                }
            }
            Entry::Secret { client, name } => ClientName::parse(client)
                .and_then(|_| crate::state::secrets::check_name(name))
                .map_err(|e| format!("{e:#}")),
            Entry::Reload => Ok(()),
        }
    }

    /// `path` lies below one of the roots, without `..`.
    fn below(&self, path: &Path) -> Result<(), String> {
        let inside = |r: &PathBuf| path.starts_with(r) && path != r;
        if plain(path) && self.own.iter().chain(&self.clients).any(inside) {
            Ok(())
        } else {
            Err(format!(
                "{} is outside sandboxctl's directories and its clients' projects",
                path.display()
            ))
        }
    }
}

/// An absolute path without `.` or `..`.
fn plain(path: &Path) -> bool {
    use std::path::Component;
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

fn undo(dir: &Path, entry: Entry) -> Result<()> {
    match entry {
        Entry::Path { path, before } => {
            restore_path(dir, &path, before)?;
            if let Some(parent) = path.parent() {
                remove_temporaries(parent);
            }
            Ok(())
        }
        Entry::Dirs { missing } => crate::base::made_dirs::remove_empty(&missing),
        Entry::Tree { path } => {
            if fs::symlink_metadata(&path).is_ok() {
                crate::sandbox::layout::remove_client_tree(&path)?;
            }
            Ok(())
        }
        Entry::Secret { client, name } => {
            let client = ClientName::parse(&client)?;
            if crate::state::secrets::list(&client)?.contains(&name) {
                crate::state::secrets::remove(&client, &name)?;
            }
            Ok(())
        }
        Entry::Reload => Ok(()),
    }
}

fn restore_path(dir: &Path, path: &Path, before: Before) -> Result<()> {
    let remove = || match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    };
    match before {
        Before::Absent => remove(),
        Before::Other => Ok(()),
        Before::Link { target } => {
            if fs::read_link(path).ok().as_ref() == Some(&target) {
                return Ok(());
            }
            remove()?;
            std::os::unix::fs::symlink(&target, path)
                .with_context(|| format!("cannot create {}", path.display()))
        }
        Before::Bytes { bytes, mode } => write_back(path, &bytes, mode),
        Before::File { data, mode } => {
            let saved = dir.join(data);
            if saved.starts_with(dir) {
                let bytes =
                    fs::read(&saved).with_context(|| format!("cannot read {}", saved.display()))?;
                return write_back(path, &bytes, mode);
            }
            // A link next to the file: it becomes the file again. Gone already means
            // an earlier recovery did this and was stopped before removing the log.
            if fs::symlink_metadata(&saved).is_ok() {
                fs::rename(&saved, path).with_context(|| {
                    format!("cannot put {} back as {}", saved.display(), path.display())
                })?;
            }
            Ok(())
        }
    }
}

fn write_back(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    crate::base::atomic::write(path, bytes, mode)
}

/// Removes the temporary files an atomic write killed half-way leaves in `dir`.
fn remove_temporaries(dir: &Path) {
    let Ok(list) = fs::read_dir(dir) else {
        return;
    };
    for e in list.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if (name.starts_with(".sandboxctl-") && name.ends_with(".tmp"))
            || name.starts_with(LINK_PREFIX)
        {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
