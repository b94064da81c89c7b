//! The translator's counters, shared with the supervisor through one page of memory.
//!
//! The supervisor creates a sealed memfd ([`StatsPage::create`]) and hands it to `clatd` as
//! `-c FD`; `clatd` maps it ([`StatsPage::open`]) and stores its counters there after every
//! pass of its loop ([`StatsPage::publish`]: a dozen relaxed atomic stores, no system call);
//! the supervisor reads them whenever `status` asks ([`StatsPage::read`]), without signalling
//! or waking the translator. The memfd is sealed against shrinking and growing before it is
//! handed over, so a misbehaving translator can at worst write wrong numbers, never make the
//! supervisor fault on its mapping.
//!
//! Layout (native-endian u64 words): word 0 the magic [`MAGIC`], then the [`Slot`]s in order.
//! Words are read and written as `AtomicU64`; fields are individually consistent (a reader
//! may see one field of a later pass than another, which counters tolerate).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::control::TranslatorDrops;
use crate::translator::IoCounters;
use crate::xlat::Counters;

/// The first word of a page: "ACLATST1".
pub const MAGIC: u64 = u64::from_le_bytes(*b"ACLATST1");
/// The size of the page.
pub const PAGE_LEN: usize = 4096;

/// The counter words after the magic, in page order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Slot {
    V4ToV6Packets = 1,
    V4ToV6Bytes,
    V6ToV4Packets,
    V6ToV4Bytes,
    Dropped,
    DroppedNotOurs,
    DroppedMalformed,
    DroppedOther,
    FragmentsMade,
    IcmpErrorsSent,
    RxTruncated,
    OffloadErrors,
    TxErrors,
    TunWriteErrors,
}

/// The last slot's index; the page holds `LAST + 1` words.
const LAST: usize = Slot::TunWriteErrors as usize;
const _: () = assert!((LAST + 1) * 8 <= PAGE_LEN, "the counters must fit the page");

/// Errors of the shared page.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// A system call failed.
    #[error("counter page: {what}: {source}")]
    Sys {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The descriptor is not a page made by [`StatsPage::create`].
    #[error("counter page: {0}")]
    NotAPage(&'static str),
}

fn sys(what: &'static str) -> StatsError {
    StatsError::Sys {
        what,
        source: io::Error::last_os_error(),
    }
}

/// The translator's counters as read from the page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TranslatorStats {
    pub translation: Counters,
    pub rx_truncated: u64,
    pub offload_errors: u64,
    pub tx_errors: u64,
    pub tun_write_errors: u64,
}

impl TranslatorStats {
    /// The drop counters by reason, as `status` carries them.
    pub fn drops(&self) -> TranslatorDrops {
        let c = &self.translation;
        TranslatorDrops {
            not_ours: c.dropped_not_ours,
            malformed: c.dropped_malformed,
            other: c.dropped_other,
            truncated: self.rx_truncated,
            offload_error: self.offload_errors,
            send_error: self.tx_errors,
            tun_write_error: self.tun_write_errors,
        }
    }
}

/// One mapping of a counter page.
#[derive(Debug)]
pub struct StatsPage {
    words: NonNull<AtomicU64>,
    fd: OwnedFd,
}

// SAFETY: the mapping is only accessed through atomics and lives as long as the value; moving
// it to or sharing it with another thread is as safe as sharing an `&[AtomicU64]`.
unsafe impl Send for StatsPage {}
// SAFETY: as above: every access is an atomic operation.
unsafe impl Sync for StatsPage {}

impl StatsPage {
    /// A new page (supervisor side): a sealed memfd of [`PAGE_LEN`] bytes with the magic
    /// written, all counters zero. Pass [`Self::fd`] to `clatd -c`; the descriptor is
    /// close-on-exec, as [`crate::controller::spawn::spawn_translator`] wants its sources.
    pub fn create() -> Result<Self, StatsError> {
        // SAFETY: a NUL-terminated name and flags; no other pointers.
        let raw = unsafe {
            libc::memfd_create(
                c"autoclat-stats".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if raw < 0 {
            return Err(sys("memfd_create"));
        }
        // SAFETY: memfd_create just returned this descriptor; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain system call on our descriptor.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), PAGE_LEN as libc::off_t) } != 0 {
            return Err(sys("ftruncate"));
        }
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: plain system call on our descriptor.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(sys("F_ADD_SEALS"));
        }
        let page = Self::map(fd)?;
        page.word(0).store(MAGIC, Ordering::Relaxed);
        Ok(page)
    }

    /// Map a page handed over as a descriptor (translator side): it must be a sealed page of
    /// the right size carrying the magic.
    pub fn open(fd: OwnedFd) -> Result<Self, StatsError> {
        // SAFETY: plain system call on a descriptor we own.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 {
            return Err(StatsError::NotAPage("not a memfd (F_GET_SEALS failed)"));
        }
        if seals & libc::F_SEAL_SHRINK == 0 {
            return Err(StatsError::NotAPage("not sealed against shrinking"));
        }
        let meta = nix::sys::stat::fstat(&fd).map_err(|e| StatsError::Sys {
            what: "fstat",
            source: e.into(),
        })?;
        if usize::try_from(meta.st_size).ok() != Some(PAGE_LEN) {
            return Err(StatsError::NotAPage("wrong size"));
        }
        let page = Self::map(fd)?;
        if page.word(0).load(Ordering::Relaxed) != MAGIC {
            return Err(StatsError::NotAPage("no magic"));
        }
        Ok(page)
    }

    fn map(fd: OwnedFd) -> Result<Self, StatsError> {
        // SAFETY: a fresh shared mapping of PAGE_LEN bytes of a descriptor whose size is
        // PAGE_LEN and cannot shrink (sealed), so every word stays backed.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(sys("mmap"));
        }
        let words = NonNull::new(ptr.cast::<AtomicU64>()).ok_or(StatsError::NotAPage("null"))?;
        Ok(Self { words, fd })
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i <= LAST);
        // SAFETY: `i` is at most LAST, well inside the PAGE_LEN-byte mapping, which is
        // page-aligned (so every u64 is aligned) and lives as long as `self`.
        unsafe { &*self.words.as_ptr().add(i) }
    }

    fn set(&self, slot: Slot, v: u64) {
        self.word(slot as usize).store(v, Ordering::Relaxed);
    }

    fn get(&self, slot: Slot) -> u64 {
        self.word(slot as usize).load(Ordering::Relaxed)
    }

    /// The descriptor to hand to the translator.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Store the translator's counters (translator side; no system call).
    pub fn publish(&self, c: &Counters, io: &IoCounters) {
        use Slot::*;
        self.set(V4ToV6Packets, c.v4_to_v6_packets);
        self.set(V4ToV6Bytes, c.v4_to_v6_bytes);
        self.set(V6ToV4Packets, c.v6_to_v4_packets);
        self.set(V6ToV4Bytes, c.v6_to_v4_bytes);
        self.set(Dropped, c.dropped);
        self.set(DroppedNotOurs, c.dropped_not_ours);
        self.set(DroppedMalformed, c.dropped_malformed);
        self.set(DroppedOther, c.dropped_other);
        self.set(FragmentsMade, c.fragments_made);
        self.set(IcmpErrorsSent, c.icmp_errors_sent);
        self.set(RxTruncated, io.rx_truncated);
        self.set(OffloadErrors, io.offload_errors);
        self.set(TxErrors, io.tx_errors);
        self.set(TunWriteErrors, io.tun_write_errors);
    }

    /// The counters as last published (supervisor side); `None` if the magic was overwritten.
    pub fn read(&self) -> Option<TranslatorStats> {
        use Slot::*;
        if self.word(0).load(Ordering::Relaxed) != MAGIC {
            return None;
        }
        Some(TranslatorStats {
            translation: Counters {
                v4_to_v6_packets: self.get(V4ToV6Packets),
                v4_to_v6_bytes: self.get(V4ToV6Bytes),
                v6_to_v4_packets: self.get(V6ToV4Packets),
                v6_to_v4_bytes: self.get(V6ToV4Bytes),
                dropped: self.get(Dropped),
                dropped_not_ours: self.get(DroppedNotOurs),
                dropped_malformed: self.get(DroppedMalformed),
                dropped_other: self.get(DroppedOther),
                fragments_made: self.get(FragmentsMade),
                icmp_errors_sent: self.get(IcmpErrorsSent),
            },
            rx_truncated: self.get(RxTruncated),
            offload_errors: self.get(OffloadErrors),
            tx_errors: self.get(TxErrors),
            tun_write_errors: self.get(TunWriteErrors),
        })
    }
}

impl Drop for StatsPage {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `map`; no reference into it outlives
        // `self` (`word` borrows `self`).
        unsafe {
            libc::munmap(self.words.as_ptr().cast(), PAGE_LEN);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dup(fd: BorrowedFd<'_>) -> OwnedFd {
        fd.try_clone_to_owned().unwrap()
    }

    #[test]
    fn what_one_mapping_publishes_the_other_reads() {
        let supervisor = StatsPage::create().unwrap();
        assert_eq!(supervisor.read(), Some(TranslatorStats::default()));
        // A second, independent mapping of the same memfd, as clatd makes after exec.
        let translator = StatsPage::open(dup(supervisor.fd())).unwrap();
        let c = Counters {
            v4_to_v6_packets: 1,
            v4_to_v6_bytes: 2,
            v6_to_v4_packets: 3,
            v6_to_v4_bytes: 4,
            dropped: 5 + 6 + 7,
            dropped_not_ours: 5,
            dropped_malformed: 6,
            dropped_other: 7,
            fragments_made: 8,
            icmp_errors_sent: 9,
        };
        let io = IoCounters {
            rx_truncated: 10,
            offload_errors: 11,
            tx_errors: 12,
            tun_write_errors: 13,
            ..IoCounters::default()
        };
        translator.publish(&c, &io);
        drop(translator);
        let got = supervisor.read().unwrap();
        assert_eq!(got.translation, c);
        assert_eq!(
            got.drops(),
            TranslatorDrops {
                not_ours: 5,
                malformed: 6,
                other: 7,
                truncated: 10,
                offload_error: 11,
                send_error: 12,
                tun_write_error: 13,
            }
        );
    }

    #[test]
    fn the_page_cannot_be_resized_by_the_translator() {
        let page = StatsPage::create().unwrap();
        let fd = dup(page.fd());
        // SAFETY: plain system calls on our descriptor.
        assert_ne!(unsafe { libc::ftruncate(fd.as_raw_fd(), 0) }, 0);
        // SAFETY: as above.
        assert_ne!(unsafe { libc::ftruncate(fd.as_raw_fd(), 1 << 20) }, 0);
        assert!(page.read().is_some());
    }

    #[test]
    fn other_descriptors_are_refused() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(PAGE_LEN as u64).unwrap();
        assert!(matches!(
            StatsPage::open(f.into()),
            Err(StatsError::NotAPage(_))
        ));
        // A sealed memfd without the magic.
        let page = StatsPage::create().unwrap();
        page.word(0).store(0, Ordering::Relaxed);
        assert!(page.read().is_none());
        assert!(matches!(
            StatsPage::open(dup(page.fd())),
            Err(StatsError::NotAPage("no magic"))
        ));
    }
}
