//! Commands as plans: a command that changes several things (files, secrets, systemd)
//! lists its effects, each with its undo, then applies them as a whole. If one fails,
//! the applied ones are undone in reverse order and the error says so; an undo that
//! fails is reported with the original error, never swallowed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use crate::txn::journal::Journal;
pub use crate::txn::journal::Touch;

type Action<'a> = Box<dyn FnOnce() -> Result<()> + 'a>;

/// What undoes an applied effect.
pub struct Undo<'a> {
    what: String,
    run: Action<'a>,
    /// Runs after every other undo (e.g. a reload that must see the restored files).
    last: bool,
}

impl<'a> Undo<'a> {
    pub fn new(what: impl Into<String>, run: impl FnOnce() -> Result<()> + 'a) -> Self {
        Self {
            what: what.into(),
            run: Box::new(run),
            last: false,
        }
    }

    /// Runs this undo now (for an undo made of others).
    pub fn run(self) -> Result<()> {
        (self.run)()
    }

    /// An undo that runs after all the others, whatever its place in the plan.
    pub fn last(what: impl Into<String>, run: impl FnOnce() -> Result<()> + 'a) -> Self {
        Self {
            last: true,
            ..Self::new(what, run)
        }
    }
}

/// What an applied effect leaves to do: undo it on failure, or finish it on success.
#[derive(Default)]
pub struct Applied<'a> {
    undo: Option<Undo<'a>>,
    commit: Option<Action<'a>>,
}

impl<'a> Applied<'a> {
    /// Nothing changed, so nothing to undo.
    pub fn nothing() -> Self {
        Self::default()
    }

    pub fn undo(undo: Undo<'a>) -> Self {
        Self {
            undo: Some(undo),
            commit: None,
        }
    }

    /// Also runs `commit` once the whole plan applied (e.g. drop a backup).
    #[must_use]
    pub fn on_commit(mut self, commit: impl FnOnce() -> Result<()> + 'a) -> Self {
        self.commit = Some(Box::new(commit));
        self
    }
}

struct Step<'a> {
    what: String,
    /// What the step may change, written to the journal before it runs.
    touches: Vec<Touch>,
    apply: Box<dyn FnOnce() -> Result<Applied<'a>> + 'a>,
    /// Whether the step would change nothing (a file that already holds its bytes):
    /// then it is neither journaled nor run.
    unchanged: Option<Box<dyn Fn() -> bool + 'a>>,
    /// Runs only when an earlier step that touches something ran, or `needed` says
    /// so (a reload after files that were all unchanged).
    only_after_change: Option<Box<dyn Fn() -> Result<bool> + 'a>>,
}

/// A list of effects applied as a whole.
#[derive(Default)]
pub struct Plan<'a> {
    steps: Vec<Step<'a>>,
    /// Test hook: fail instead of applying the step with this index.
    fail_at: Option<usize>,
    /// The undo log on disk, for a command that dies half-way.
    journal: Option<Journal>,
    /// Test hook: stop dead before the step with this index, as a killed command
    /// does (no undo, the log left on disk).
    die_at: Option<usize>,
}

impl<'a> Plan<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records each step's [`Touch`]es in `journal` before the step runs, so that a
    /// command killed half-way is undone by the next one (see `journal`).
    #[must_use]
    pub fn journaled(mut self, journal: Journal) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Adds an effect that changes nothing on disk: `apply` does it and says how to
    /// undo it.
    pub fn step(
        &mut self,
        what: impl Into<String>,
        apply: impl FnOnce() -> Result<Applied<'a>> + 'a,
    ) {
        self.step_touching(what, Vec::new(), apply);
    }

    /// Adds an effect that may change `touches`: `apply` does it and says how to undo
    /// it.
    pub fn step_touching(
        &mut self,
        what: impl Into<String>,
        touches: Vec<Touch>,
        apply: impl FnOnce() -> Result<Applied<'a>> + 'a,
    ) {
        self.steps.push(Step {
            what: what.into(),
            touches,
            apply: Box::new(apply),
            unchanged: None,
            only_after_change: None,
        });
    }

    /// The step added last is skipped (neither journaled nor run) when `unchanged`
    /// says it would change nothing; the check runs when the step's turn comes.
    pub fn skip_if(&mut self, unchanged: impl Fn() -> bool + 'a) {
        if let Some(step) = self.steps.last_mut() {
            step.unchanged = Some(Box::new(unchanged));
        }
    }

    /// The step added last runs only if an earlier step that touches something ran,
    /// or `needed` says it must anyway.
    pub fn only_after_change(&mut self, needed: impl Fn() -> Result<bool> + 'a) {
        if let Some(step) = self.steps.last_mut() {
            step.only_after_change = Some(Box::new(needed));
        }
    }

    /// Writes `contents` to `path` atomically (creating its directory); the undo puts
    /// back what was there, or removes the file if there was none.
    pub fn write_file(&mut self, path: PathBuf, contents: Vec<u8>, mode: u32) {
        let mut touches = vec![Touch::Path(path.clone())];
        touches.extend(path.parent().map(|d| Touch::Dir(d.to_path_buf())));
        let (same_path, same_contents) = (path.clone(), contents.clone());
        self.step_touching(format!("write {}", path.display()), touches, move || {
            let before = read_if_exists(&path)?;
            if before.as_ref().map(|(b, _)| b.as_slice()) == Some(contents.as_slice()) {
                return Ok(Applied::nothing());
            }
            let new_dirs = path.parent().map(missing_dirs).unwrap_or_default();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            crate::base::atomic::write(&path, &contents, mode)?;
            let file = restore(path, before);
            let dirs = remove_dirs(new_dirs);
            Ok(Applied::undo(Undo::new(file.what.clone(), move || {
                file.run()?;
                dirs.run()
            })))
        });
        self.skip_if(move || holds(&same_path, &same_contents, mode));
    }

    /// Removes `path` if it exists; the undo writes it back.
    pub fn remove_file(&mut self, path: PathBuf) {
        let touches = vec![Touch::Path(path.clone())];
        let absent = path.clone();
        self.step_touching(format!("remove {}", path.display()), touches, move || {
            let Some(before) = read_if_exists(&path)? else {
                return Ok(Applied::nothing());
            };
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
            Ok(Applied::undo(restore(path, Some(before))))
        });
        self.skip_if(move || std::fs::symlink_metadata(&absent).is_err());
    }

    /// Links `link` to `target` (as `systemctl --user enable` does), creating its
    /// directory; the undo removes both. A file there that is not this link is the
    /// user's and stops the plan. Skipped when the link is there already.
    pub fn link(&mut self, link: PathBuf, target: PathBuf) {
        let touches = vec![
            Touch::Dir(link.parent().map(Path::to_path_buf).unwrap_or_default()),
            Touch::Path(link.clone()),
        ];
        let (linked, wanted) = (link.clone(), target.clone());
        self.step_touching(format!("link {}", link.display()), touches, move || {
            match std::fs::read_link(&link) {
                Ok(t) if t == target => return Ok(Applied::nothing()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                _ => bail!(
                    "{} exists and was not made by sandboxctl; move it away, then try again",
                    link.display()
                ),
            }
            let dir = link.parent().context("a link has a directory")?;
            let dirs = remove_dirs(missing_dirs(dir));
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            if let Err(e) = std::os::unix::fs::symlink(&target, &link) {
                let e = anyhow::Error::from(e).context(format!("cannot create {}", link.display()));
                return Err(match dirs.run() {
                    Ok(()) => e,
                    Err(u) => e.context(format!("and undoing it failed too: {u:#}")),
                });
            }
            Ok(Applied::undo(Undo::new(
                format!("remove {}", link.display()),
                move || {
                    remove_if_there(&link)?;
                    dirs.run()
                },
            )))
        });
        self.skip_if(move || std::fs::read_link(&linked).is_ok_and(|t| t == wanted));
    }

    /// Removes `link` if it is a symbolic link (to `target`, when given); the undo puts
    /// it back.
    pub fn unlink(&mut self, link: PathBuf, target: Option<PathBuf>) {
        let touches = vec![Touch::Path(link.clone())];
        let ours = move |l: &Path| {
            std::fs::read_link(l)
                .ok()
                .filter(|t| target.as_ref().is_none_or(|want| want == t))
        };
        let (unlinked, check) = (link.clone(), ours.clone());
        self.step_touching(format!("remove {}", link.display()), touches, move || {
            let Some(was) = ours(&link) else {
                return Ok(Applied::nothing());
            };
            remove_if_there(&link)?;
            Ok(Applied::undo(Undo::new(
                format!("put back {}", link.display()),
                move || {
                    std::os::unix::fs::symlink(&was, &link)
                        .with_context(|| format!("cannot create {}", link.display()))
                },
            )))
        });
        self.skip_if(move || check(&unlinked).is_none());
    }

    /// The number of effects.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// What each effect does, in order.
    pub fn describe(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.what.as_str()).collect()
    }

    /// Test hook: the step with index `n` fails instead of running.
    #[doc(hidden)]
    pub fn fail_at(&mut self, n: usize) {
        self.fail_at = Some(n);
    }

    /// Test hook: the plan stops dead before the step with index `n` (`n` = the
    /// number of steps: after the last), leaving what a SIGKILL leaves.
    #[doc(hidden)]
    pub fn die_at(&mut self, n: usize) {
        self.die_at = Some(n);
    }

    /// Applies every effect; on the first failure, undoes the applied ones (last
    /// first) and returns the failure, with any undo that failed named in it.
    pub fn apply(self) -> Result<()> {
        let mut undos: Vec<Undo<'a>> = Vec::new();
        let mut commits: Vec<Action<'a>> = Vec::new();
        let journal = self.journal;
        // Whether a step that touches something has run.
        let mut changed = false;
        for (i, step) in self.steps.into_iter().enumerate() {
            let skip = match &step.only_after_change {
                Some(needed) if !changed => match needed() {
                    Ok(needed) => !needed,
                    Err(e) => {
                        let e = rollback(e, undos);
                        return Err(finish_after_failure(e, journal));
                    }
                },
                _ => false,
            } || step.unchanged.as_ref().is_some_and(|same| same());
            changed |= !skip && !step.touches.is_empty();
            let recorded = match &journal {
                Some(j) if !skip => j.record(&step.touches),
                _ => Ok(()),
            };
            crate::base::fault::checkpoint();
            if self.die_at == Some(i) {
                recorded?;
                bail!("died before: {}", step.what);
            }
            let result = if self.fail_at == Some(i) {
                Err(anyhow!("injected failure before: {}", step.what))
            } else if skip {
                Ok(Applied::nothing())
            } else {
                recorded.and_then(|()| (step.apply)())
            };
            match result {
                Ok(applied) => {
                    undos.extend(applied.undo);
                    commits.extend(applied.commit);
                }
                Err(e) => {
                    let e = rollback(e, undos);
                    return Err(finish_after_failure(e, journal));
                }
            }
        }
        // Killed here, every step is applied but the log is still there: the next
        // command undoes the whole plan, as if it had never run.
        crate::base::fault::checkpoint();
        if self.die_at.is_some() {
            bail!("died after the last step");
        }
        if let Some(j) = journal {
            j.finish()?;
        }
        for commit in commits {
            // The plan is applied; a failed clean-up is worth a warning, not an error.
            if let Err(e) = commit() {
                eprintln!("sandboxctl: warning: {e:#}");
            }
        }
        Ok(())
    }
}

/// Removes the log of a plan whose applied steps were undone in memory.
fn finish_after_failure(e: anyhow::Error, journal: Option<Journal>) -> anyhow::Error {
    match journal.map(Journal::finish) {
        Some(Err(j)) => e.context(format!("{j:#}")),
        _ => e,
    }
}

fn rollback(error: anyhow::Error, undos: Vec<Undo<'_>>) -> anyhow::Error {
    let (last, mut now): (Vec<_>, Vec<_>) = undos.into_iter().partition(|u| u.last);
    now.reverse();
    let mut failed = String::new();
    for undo in now.into_iter().chain(last) {
        if let Err(e) = (undo.run)() {
            let _ = write!(failed, "; could not {}: {e:#}", undo.what);
        }
    }
    if failed.is_empty() {
        error.context("nothing was changed")
    } else {
        error.context(format!(
            "some changes could not be undone{failed}; fix those by hand"
        ))
    }
}

/// Reads `paths` now; the returned undo puts each back as it was (or removes it).
/// For effects made by code that writes several files itself, in places a sandbox can
/// write (the agent's login and state files): read as [`read_agent_file`] does.
pub fn keep_files<'a>(what: impl Into<String>, paths: Vec<PathBuf>) -> Result<Undo<'a>> {
    let before = paths
        .into_iter()
        .map(|p| read_agent_file(&p).map(|b| (p, b)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Undo::new(what, move || {
        for (path, b) in before {
            restore(path, b).run()?;
        }
        Ok(())
    }))
}

pub use crate::base::made_dirs::missing as missing_dirs;

/// The undo of creating `dirs` (outermost first): remove them, innermost first, where
/// they are empty (whatever else put there since is left alone, with its directory).
pub fn remove_dirs<'a>(dirs: Vec<PathBuf>) -> Undo<'a> {
    Undo::new("remove the directories it created", move || {
        crate::base::made_dirs::remove_empty(&dirs)
    })
}

/// Removes `path`; one that is not there is fine.
pub fn remove_if_there(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// A file's contents and mode, if it exists.
/// Largest file of a sandbox's that [`keep_files`] keeps a copy of.
const MAX_KEPT: u64 = 1 << 20;

/// [`read_if_exists`] for a file the sandbox can write (the agent's login and state
/// files): no symbolic link, no FIFO, no huge file (see [`AgentPath`]).
///
/// [`AgentPath`]: crate::base::agent_file::AgentPath
fn read_agent_file(path: &Path) -> Result<Option<(Vec<u8>, u32)>> {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(bytes) = crate::base::agent_file::AgentPath::new(path).read(MAX_KEPT)? else {
        return Ok(None);
    };
    let mode = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .permissions()
        .mode()
        & 0o7777;
    Ok(Some((bytes, mode)))
}

/// Whether `path` is a regular file (not a link) with exactly `contents` and `mode`;
/// read bounded, without following or blocking (the file may be the agent's).
fn holds(path: &Path, contents: &[u8], mode: u32) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    meta.is_file()
        && meta.len() == contents.len() as u64
        && meta.permissions().mode() & 0o7777 == mode
        && crate::base::agent_file::AgentPath::new(path)
            .read(contents.len() as u64)
            .ok()
            .flatten()
            .is_some_and(|b| b == contents)
}

fn read_if_exists(path: &Path) -> Result<Option<(Vec<u8>, u32)>> {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::read(path) {
        Ok(b) => {
            let mode = std::fs::metadata(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .permissions()
                .mode()
                & 0o7777;
            Ok(Some((b, mode)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The undo of a change to `path`: its old contents and mode back, or no file.
fn restore<'a>(path: PathBuf, before: Option<(Vec<u8>, u32)>) -> Undo<'a> {
    match before {
        Some((bytes, mode)) => Undo::new(format!("restore {}", path.display()), move || {
            crate::base::atomic::write(&path, &bytes, mode)
        }),
        None => Undo::new(
            format!("remove {}", path.display()),
            move || match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).with_context(|| format!("cannot remove {}", path.display()))
                }
                _ => Ok(()),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[test]
    fn a_failure_undoes_everything_applied_in_reverse_and_says_nothing_changed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = tmp.path().join("a");
        let b = tmp.path().join("sub/b");
        std::fs::write(&a, "old a").expect("write");
        let log = RefCell::new(Vec::new());
        let mut plan = Plan::new();
        plan.write_file(a.clone(), b"new a".to_vec(), 0o600);
        plan.write_file(b.clone(), b"new b".to_vec(), 0o600);
        plan.step("reload", || {
            log.borrow_mut().push("reload");
            Ok(Applied::undo(Undo::last("reload again", || {
                log.borrow_mut().push("reload again");
                Ok(())
            })))
        });
        plan.step("record", || {
            log.borrow_mut().push("record");
            Ok(Applied::undo(Undo::new("unrecord", || {
                log.borrow_mut().push("unrecord");
                Ok(())
            })))
        });
        plan.step("fail", || Err(anyhow!("boom")));
        let err = format!("{:#}", plan.apply().expect_err("fails"));
        assert_eq!(err, "nothing was changed: boom");
        assert_eq!(std::fs::read_to_string(&a).expect("a"), "old a");
        assert!(!b.exists());
        assert!(
            !tmp.path().join("sub").exists(),
            "created directory removed"
        );
        assert_eq!(
            *log.borrow(),
            ["reload", "record", "unrecord", "reload again"]
        );
    }

    /// A file that already holds its bytes and mode is neither journaled nor written;
    /// one that differs is both.
    #[test]
    fn an_unchanged_file_is_neither_journaled_nor_written() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let layout = crate::sandbox::layout::Layout::under(tmp.path());
        let dir = layout.clients_dir();
        std::fs::create_dir_all(&dir).expect("mkdir");
        let (same, other) = (dir.join("same"), dir.join("other"));
        for f in [&same, &other] {
            crate::base::atomic::write(f, b"text", 0o600).expect("write");
        }
        let inode =
            |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).expect("meta"));
        let (same_ino, other_ino) = (inode(&same), inode(&other));
        let journal = crate::txn::journal::Journal::begin(&layout).expect("journal");
        let mut plan = Plan::new().journaled(journal);
        plan.write_file(same.clone(), b"text".to_vec(), 0o600);
        plan.write_file(other.clone(), b"new text".to_vec(), 0o600);
        // Killed after both steps: the log holds what a kill leaves.
        plan.die_at(2);
        assert!(plan.apply().is_err());
        assert_eq!(inode(&same), same_ino, "an unchanged file was rewritten");
        assert_ne!(inode(&other), other_ino, "a changed file was not written");
        let entries: Vec<PathBuf> = std::fs::read_dir(layout.data_dir.join(".journal"))
            .expect("the log")
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        // The changed file's entry (its directory was there: no entry for it), nothing
        // for the unchanged one.
        assert_eq!(entries.len(), 1, "{entries:?}");
        crate::txn::journal::recover(&layout).expect("recover");
    }

    #[test]
    fn a_failed_undo_is_reported_with_the_error() {
        let mut plan = Plan::new();
        plan.step("first", || {
            Ok(Applied::undo(Undo::new("put the secret back", || {
                Err(anyhow!("podman is gone"))
            })))
        });
        plan.step("second", || Err(anyhow!("boom")));
        let err = format!("{:#}", plan.apply().expect_err("fails"));
        assert_eq!(
            err,
            "some changes could not be undone; could not put the secret back: podman is gone; fix those by hand: boom"
        );
    }

    #[test]
    fn commits_run_only_when_everything_applied() {
        let done = RefCell::new(0);
        for fail in [None, Some(1)] {
            let mut plan = Plan::new();
            plan.step("a", || {
                Ok(Applied::nothing().on_commit(|| {
                    *done.borrow_mut() += 1;
                    Ok(())
                }))
            });
            plan.step("b", || Ok(Applied::nothing()));
            if let Some(n) = fail {
                plan.fail_at(n);
            }
            let _ = plan.apply();
        }
        assert_eq!(*done.borrow(), 1);
    }

    #[test]
    fn unchanged_and_missing_files_need_no_undo() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let same = tmp.path().join("same");
        std::fs::write(&same, "x").expect("write");
        let gone = tmp.path().join("gone");
        let mut plan = Plan::new();
        plan.write_file(same.clone(), b"x".to_vec(), 0o600);
        plan.remove_file(gone);
        plan.apply().expect("applies");
        assert_eq!(std::fs::read_to_string(&same).expect("same"), "x");
    }
}
