//! The policy as the proxy sees it: re-read whenever the file changes (one `stat` per
//! request), so `sandboxctl allow` applies without a restart. A file that cannot be
//! read or is invalid yields an error, and the caller denies everything.

use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::log::LogSink;
use super::policy::{self, Policy};

/// Identity of one version of the file. The inode changes on every atomic rename, the
/// mtime and size on in-place edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mtime: i64,
    mtime_nsec: i64,
    size: u64,
}

/// A loaded policy or why there is none (a one-line message).
pub type Loaded = Arc<Result<Policy, String>>;

pub(crate) struct PolicyStore {
    path: PathBuf,
    client: String,
    log: LogSink,
    cached: Mutex<Option<(Option<Stamp>, Loaded)>>,
}

impl PolicyStore {
    pub(crate) fn new(path: PathBuf, client: String, log: LogSink) -> Self {
        Self {
            path,
            client,
            log,
            cached: Mutex::new(None),
        }
    }

    /// The policy in force now.
    pub(crate) fn current(&self) -> Loaded {
        let stamp = std::fs::metadata(&self.path).ok().map(|m| Stamp {
            dev: m.dev(),
            ino: m.ino(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            size: m.size(),
        });
        let mut cached = match self.cached.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some((s, loaded)) = cached.as_ref()
            && *s == stamp
            && stamp.is_some()
        {
            return loaded.clone();
        }
        let loaded: Loaded = Arc::new(policy::load(&self.path).map_err(|e| format!("{e:#}")));
        let changed = cached
            .as_ref()
            .is_none_or(|(_, old)| old.as_ref().as_ref().err() != loaded.as_ref().as_ref().err());
        if changed || loaded.is_ok() {
            self.log_load(&loaded);
        }
        *cached = Some((stamp, loaded.clone()));
        loaded
    }

    fn log_load(&self, loaded: &Loaded) {
        #[derive(serde::Serialize)]
        struct PolicyEvent<'a> {
            client: &'a str,
            path: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<&'a str>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            warnings: Vec<String>,
            result: &'a str,
        }
        let path = self.path.display().to_string();
        let event = match loaded.as_ref() {
            Ok(p) => PolicyEvent {
                client: &self.client,
                path,
                error: None,
                warnings: p.warnings(),
                result: "loaded",
            },
            Err(e) => PolicyEvent {
                client: &self.client,
                path,
                error: Some(e),
                warnings: Vec::new(),
                result: "invalid, denying everything",
            },
        };
        self.log.event("policy", &event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloads_on_change_and_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("network.toml");
        let mem = Arc::new(Mutex::new(Vec::new()));
        let store = PolicyStore::new(path.clone(), "c".into(), LogSink::Memory(mem.clone()));
        assert!(store.current().is_err(), "missing file must deny");
        std::fs::write(&path, "allow = [\"a.example.com\"]\n").unwrap();
        assert_eq!(store.current().as_ref().as_ref().unwrap().allow.len(), 1);
        // Unchanged file: cached, no new log line.
        let n = mem.lock().unwrap().len();
        store.current();
        assert_eq!(mem.lock().unwrap().len(), n);
        // Same size, in place: the mtime or inode differs after a rewrite.
        policy::add_allow(&path, &["b.example.com"]).unwrap();
        assert_eq!(store.current().as_ref().as_ref().unwrap().allow.len(), 2);
        std::fs::write(&path, "allow = [\"https://x\"]\n").unwrap();
        let err = store.current();
        assert!(
            err.as_ref()
                .as_ref()
                .unwrap_err()
                .contains("invalid network policy")
        );
        assert!(
            mem.lock()
                .unwrap()
                .last()
                .unwrap()
                .contains("denying everything")
        );
    }
}
