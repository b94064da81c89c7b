//! Crash-safe restore of host settings the daemon changes (sysctls such as
//! `net.ipv6.neigh.U.proxy_delay`).
//!
//! Before a value is changed, its original is written to a journal file under the runtime
//! directory (`/run/autoclat/` by default), one file per network namespace (sysctls under
//! `/proc/sys/net` belong to the namespace). Restoring removes the entry. A daemon started after
//! a SIGKILL restores every entry it finds before it changes anything, so the host gets back its
//! true originals, never the values a killed run left behind.
//!
//! The journal is rewritten whole (write to a temporary file, fsync, rename) on every change, so
//! a crash at any moment leaves either the old or the new journal, never a torn one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A journal failure, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The journal could not be read, written or removed.
    #[error("restore journal {path}: {source}")]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The journal exists but is not ours or is damaged.
    #[error("restore journal {path} is unreadable: {reason}")]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A sysctl could not be read or written.
    #[error("sysctl {path}: {source}")]
    Sysctl {
        /// The `/proc/sys` path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The journal's on-disk form: original values by `/proc/sys` path.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalFile {
    /// Original value of each changed sysctl, by its path under `/proc/sys`.
    sysctls: BTreeMap<PathBuf, String>,
}

/// The journal of original values for one network namespace.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    entries: JournalFile,
}

impl Journal {
    /// The journal of the current network namespace under `runtime_dir`; reads what a
    /// previous run left (call [`Journal::restore_all`] before changing anything).
    pub fn open(runtime_dir: &Path) -> Result<Self, RestoreError> {
        let ns = netns_id().unwrap_or_else(|| "unknown".into());
        Self::open_file(runtime_dir.join(format!("restore-netns-{ns}.json")))
    }

    /// A journal kept in `path` (tests, or a fixed location).
    pub fn open_file(path: PathBuf) -> Result<Self, RestoreError> {
        let entries = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| RestoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => JournalFile::default(),
            Err(source) => return Err(RestoreError::Journal { path, source }),
        };
        Ok(Self { path, entries })
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recorded originals, by sysctl path.
    pub fn entries(&self) -> impl Iterator<Item = (&Path, &str)> {
        self.entries
            .sysctls
            .iter()
            .map(|(p, v)| (p.as_path(), v.as_str()))
    }

    /// Sets the sysctl at `path` to `value`, recording its original value first (an original
    /// already recorded is kept: it is the true one). Returns the original, or `None` when the
    /// value already was `value` (nothing changed, nothing recorded).
    pub fn set_sysctl(&mut self, path: &Path, value: &str) -> Result<Option<String>, RestoreError> {
        let current = read_sysctl(path)?;
        if current == value {
            return Ok(None);
        }
        let original = self
            .entries
            .sysctls
            .entry(path.to_path_buf())
            .or_insert(current)
            .clone();
        self.save()?;
        write_sysctl(path, value)?;
        Ok(Some(original))
    }

    /// Puts back the original of `path` (if recorded) unless someone else changed the value
    /// since (`ours` is the value we set), and forgets the entry. A vanished sysctl (the link is
    /// gone) is not an error.
    pub fn restore(&mut self, path: &Path, ours: &str) -> Result<(), RestoreError> {
        let Some(original) = self.entries.sysctls.get(path).cloned() else {
            return Ok(());
        };
        let result = match read_sysctl(path) {
            Ok(v) if v == ours => write_sysctl(path, &original),
            Ok(_) => Ok(()), // changed by someone else: theirs now
            Err(RestoreError::Sysctl { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        };
        self.entries.sysctls.remove(path);
        self.save()?;
        result
    }

    /// Restores every recorded original (what a killed run changed) and empties the journal.
    /// Returns the paths restored; every failure is returned, none stops the others.
    pub fn restore_all(&mut self) -> (Vec<PathBuf>, Vec<RestoreError>) {
        let mut restored = Vec::new();
        let mut errors = Vec::new();
        for (path, original) in std::mem::take(&mut self.entries.sysctls) {
            match write_sysctl(&path, &original) {
                Ok(()) => restored.push(path),
                Err(RestoreError::Sysctl { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => errors.push(e),
            }
        }
        if let Err(e) = self.save() {
            errors.push(e);
        }
        (restored, errors)
    }

    fn save(&self) -> Result<(), RestoreError> {
        let err = |source| RestoreError::Journal {
            path: self.path.clone(),
            source,
        };
        if self.entries.sysctls.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(e)),
                _ => Ok(()),
            };
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let text = serde_json::to_string_pretty(&self.entries)
            .map_err(|e| err(std::io::Error::other(e)))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)
    }
}

/// `/proc/sys/net/ipv6/neigh/<uplink>/proxy_delay`.
pub fn proxy_delay_path(uplink: &str) -> PathBuf {
    PathBuf::from(format!("/proc/sys/net/ipv6/neigh/{uplink}/proxy_delay"))
}

fn read_sysctl(path: &Path) -> Result<String, RestoreError> {
    std::fs::read_to_string(path)
        .map(|v| v.trim().to_owned())
        .map_err(|source| RestoreError::Sysctl {
            path: path.to_path_buf(),
            source,
        })
}

fn write_sysctl(path: &Path, value: &str) -> Result<(), RestoreError> {
    std::fs::write(path, value).map_err(|source| RestoreError::Sysctl {
        path: path.to_path_buf(),
        source,
    })
}

/// The inode of this process's network namespace, which names it while it exists.
fn netns_id() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net")
        .ok()
        .map(|m| m.ino().to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A file standing in for a sysctl.
    fn fake_sysctl(dir: &Path, value: &str) -> PathBuf {
        let p = dir.join("proxy_delay");
        std::fs::write(&p, format!("{value}\n")).unwrap();
        p
    }

    #[test]
    fn original_is_recorded_before_the_change_and_restored() {
        let dir = tempfile::tempdir().unwrap();
        let sysctl = fake_sysctl(dir.path(), "37");
        let jpath = dir.path().join("run/j.json");
        let mut j = Journal::open_file(jpath.clone()).unwrap();
        assert_eq!(j.set_sysctl(&sysctl, "0").unwrap().as_deref(), Some("37"));
        assert_eq!(std::fs::read_to_string(&sysctl).unwrap(), "0");
        // On disk before anything else happens: a SIGKILL now loses nothing.
        let on_disk = Journal::open_file(jpath.clone()).unwrap();
        assert_eq!(
            on_disk.entries().collect::<Vec<_>>(),
            vec![(sysctl.as_path(), "37")]
        );
        j.restore(&sysctl, "0").unwrap();
        assert_eq!(std::fs::read_to_string(&sysctl).unwrap(), "37");
        assert!(!jpath.exists(), "an empty journal is removed");
    }

    #[test]
    fn a_killed_run_is_undone_with_the_true_original() {
        let dir = tempfile::tempdir().unwrap();
        let sysctl = fake_sysctl(dir.path(), "61");
        let jpath = dir.path().join("j.json");
        {
            let mut j = Journal::open_file(jpath.clone()).unwrap();
            j.set_sysctl(&sysctl, "0").unwrap();
            // Killed here: no restore.
        }
        // The next run must not take our 0 for the original.
        let mut next = Journal::open_file(jpath.clone()).unwrap();
        let (restored, errors) = next.restore_all();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(restored, vec![sysctl.clone()]);
        assert_eq!(std::fs::read_to_string(&sysctl).unwrap(), "61");
        assert!(!jpath.exists());
        // Changing it again records 61, not 0.
        assert_eq!(
            next.set_sysctl(&sysctl, "0").unwrap().as_deref(),
            Some("61")
        );
    }

    #[test]
    fn a_value_changed_by_someone_else_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let sysctl = fake_sysctl(dir.path(), "80");
        let mut j = Journal::open_file(dir.path().join("j.json")).unwrap();
        j.set_sysctl(&sysctl, "0").unwrap();
        std::fs::write(&sysctl, "5").unwrap();
        j.restore(&sysctl, "0").unwrap();
        assert_eq!(std::fs::read_to_string(&sysctl).unwrap(), "5");
        assert_eq!(j.entries().count(), 0);
    }

    #[test]
    fn unchanged_values_and_vanished_sysctls_are_not_errors() {
        let dir = tempfile::tempdir().unwrap();
        let sysctl = fake_sysctl(dir.path(), "0");
        let jpath = dir.path().join("j.json");
        let mut j = Journal::open_file(jpath.clone()).unwrap();
        assert_eq!(j.set_sysctl(&sysctl, "0").unwrap(), None);
        assert!(!jpath.exists(), "nothing changed, nothing recorded");
        std::fs::write(&sysctl, "9").unwrap();
        j.set_sysctl(&sysctl, "0").unwrap();
        std::fs::remove_file(&sysctl).unwrap();
        j.restore(&sysctl, "0").unwrap();
        assert_eq!(j.entries().count(), 0);
    }

    #[test]
    fn a_damaged_journal_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let jpath = dir.path().join("j.json");
        std::fs::write(&jpath, "{not json").unwrap();
        let e = Journal::open_file(jpath.clone()).unwrap_err().to_string();
        assert!(e.contains(&jpath.display().to_string()), "{e}");
    }
}
