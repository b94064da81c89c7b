//! Noticing changes of the system's resolver configuration without polling: inotify on the
//! directories of `/etc/resolv.conf` and systemd-resolved's upstream file (both are usually
//! replaced by a rename, or are symlinks, so the directory is what is watched). Thin I/O edge:
//! each change is answered with a fresh [`read_system_nameservers`].

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;

use crate::discovery::resolvconf::{read_system_nameservers, Nameserver};

/// The directories watched, and the file names in them that matter.
const WATCHED: [(&str, &str); 2] = [
    ("/etc", "resolv.conf"),
    ("/run/systemd/resolve", "resolv.conf"),
];

/// Why the resolver configuration cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum ResolvWatchError {
    #[error("inotify: {0}")]
    Inotify(#[source] nix::Error),
    #[error("inotify: {0}")]
    Io(#[source] std::io::Error),
}

struct Fd(Inotify);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl AsFd for Fd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Watches the resolver configuration; [`ResolvWatch::changed`] resolves with the new
/// nameservers each time a watched file is written, replaced or removed.
pub struct ResolvWatch {
    fd: AsyncFd<Fd>,
}

impl ResolvWatch {
    /// Starts watching (directories that do not exist are skipped: systemd-resolved may not
    /// run). Needs a tokio runtime with I/O enabled.
    pub fn new() -> Result<Self, ResolvWatchError> {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(ResolvWatchError::Inotify)?;
        let flags = AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE;
        for (dir, _) in WATCHED {
            if let Err(e) = ino.add_watch(dir, flags) {
                tracing::debug!("not watching {dir}: {e}");
            }
        }
        watch_files(&ino);
        // SAFETY: the inotify descriptor is owned by the `Fd` moved into the AsyncFd, which
        // never replaces or closes it before dropping it: it stays the same open descriptor
        // for the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register_with_interest(Fd(ino), tokio::io::Interest::READABLE) }
            .map_err(|e| ResolvWatchError::Io(e.into_parts().1))?;
        Ok(Self { fd })
    }

    /// Waits until a watched file changed and returns the nameservers read afterwards.
    pub async fn changed(&mut self) -> Result<Vec<Nameserver>, ResolvWatchError> {
        loop {
            let mut guard = self.fd.readable().await.map_err(ResolvWatchError::Io)?;
            let events = match guard.get_inner().0.read_events() {
                Ok(evs) => evs,
                Err(nix::errno::Errno::EAGAIN) => {
                    guard.clear_ready();
                    continue;
                }
                Err(e) => return Err(ResolvWatchError::Inotify(e)),
            };
            // Events of a file watch carry no name; of a directory watch, the file's name.
            let relevant = events.iter().any(|e| match e.name.as_deref() {
                None => true,
                Some(n) => n
                    .to_str()
                    .is_some_and(|n| WATCHED.iter().any(|(_, f)| *f == n)),
            });
            if relevant {
                watch_files(&guard.get_inner().0);
                return Ok(read_system_nameservers());
            }
        }
    }
}

/// Also watches the files themselves: a file bind-mounted over `/etc/resolv.conf` (as `ip netns
/// exec` does with `/etc/netns/NAME/resolv.conf`) is written without an event in `/etc`. Called
/// again after each change, since a replaced file is a new inode (the same inode gives the same
/// watch).
fn watch_files(ino: &Inotify) {
    for (dir, file) in WATCHED {
        let path = format!("{dir}/{file}");
        let _ = ino.add_watch(path.as_str(), AddWatchFlags::IN_CLOSE_WRITE);
    }
}
