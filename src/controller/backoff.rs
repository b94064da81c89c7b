//! Restart backoff for a translator child (ARCHITECTURE.md, "The lifecycle"): 1 s after the first exit, doubling
//! with each further exit up to 60 s, and back to 1 s once a child has run for a stable minute.
//! Pure: the caller passes the time.

use std::time::{Duration, Instant};

/// The restart history of one CLAT's child process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Backoff {
    /// When the current child started; None while none runs.
    started: Option<Instant>,
    /// Exits since the last stable run: the next delay is `INITIAL * 2^consecutive`, capped.
    consecutive: u32,
    /// Children started again after an exit, over the CLAT's whole life (for `status`).
    restarts: u32,
    /// An exit happened and the next `on_start` is a restart.
    exited: bool,
}

impl Backoff {
    /// The delay after the first exit (or the first after a stable run).
    pub const INITIAL: Duration = Duration::from_secs(1);
    /// The longest delay.
    pub const MAX: Duration = Duration::from_secs(60);
    /// A child that ran this long was healthy: its exit starts the doubling afresh.
    pub const STABLE: Duration = Duration::from_secs(60);

    pub fn new() -> Self {
        Self::default()
    }

    /// A child was started at `now` (the first, or a restart after [`Backoff::on_exit`]).
    pub fn on_start(&mut self, now: Instant) {
        if self.exited {
            self.restarts = self.restarts.saturating_add(1);
            self.exited = false;
        }
        self.started = Some(now);
    }

    /// The child exited at `now`: how long to wait before starting the next one. A child that
    /// ran at least [`Backoff::STABLE`] resets the doubling, so the delay is 1 s again; an exit
    /// without a recorded start counts as an immediate crash.
    pub fn on_exit(&mut self, now: Instant) -> Duration {
        let ran = self
            .started
            .take()
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        if ran >= Self::STABLE {
            self.consecutive = 0;
        }
        let delay = Self::delay_for(self.consecutive);
        self.consecutive = self.consecutive.saturating_add(1);
        self.exited = true;
        delay
    }

    /// How many times a child was started again after exiting.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Whether a child is running (started and not yet exited).
    pub fn is_running(&self) -> bool {
        self.started.is_some()
    }

    /// `INITIAL * 2^n`, capped at `MAX`.
    fn delay_for(n: u32) -> Duration {
        // 2^6 s already exceeds the cap; avoid overflow for large n.
        let secs = 1u64 << n.min(6);
        Self::INITIAL
            .saturating_mul(u32::try_from(secs).unwrap_or(u32::MAX))
            .min(Self::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn doubles_from_one_second_to_sixty() {
        let t0 = Instant::now();
        let mut b = Backoff::new();
        let mut now = t0;
        let mut delays = Vec::new();
        b.on_start(now);
        for _ in 0..9 {
            // Crashes two seconds after each start.
            now += 2 * S;
            let d = b.on_exit(now);
            delays.push(d.as_secs());
            now += d;
            b.on_start(now);
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.restarts(), 9);
        assert!(b.is_running());
    }

    #[test]
    fn a_stable_minute_resets_the_delay_but_not_the_count() {
        let t0 = Instant::now();
        let mut b = Backoff::new();
        b.on_start(t0);
        assert_eq!(b.on_exit(t0), S);
        b.on_start(t0 + S);
        assert_eq!(b.on_exit(t0 + 2 * S), 2 * S);
        b.on_start(t0 + 4 * S);
        assert_eq!(b.on_exit(t0 + 5 * S), 4 * S);
        // Runs exactly a minute: stable.
        b.on_start(t0 + 10 * S);
        assert_eq!(b.on_exit(t0 + 70 * S), S);
        b.on_start(t0 + 71 * S);
        assert_eq!(b.on_exit(t0 + 72 * S), 2 * S, "doubling starts afresh");
        assert_eq!(b.restarts(), 4);
    }

    #[test]
    fn just_under_a_minute_is_not_stable() {
        let t0 = Instant::now();
        let mut b = Backoff::new();
        b.on_start(t0);
        assert_eq!(b.on_exit(t0 + S), S);
        b.on_start(t0 + 2 * S);
        assert_eq!(
            b.on_exit(t0 + 2 * S + Backoff::STABLE - Duration::from_millis(1)),
            2 * S
        );
    }

    #[test]
    fn first_start_is_not_a_restart_and_exit_without_start_counts_as_crash() {
        let t0 = Instant::now();
        let mut b = Backoff::new();
        b.on_start(t0);
        assert_eq!(b.restarts(), 0);
        assert!(b.is_running());
        assert_eq!(b.on_exit(t0 + 5 * S), S);
        assert!(!b.is_running());
        assert_eq!(b.restarts(), 0, "not restarted yet");
        // A second exit report without a start in between (e.g. spawn failed): doubling.
        assert_eq!(b.on_exit(t0 + 6 * S), 2 * S);
        b.on_start(t0 + 8 * S);
        assert_eq!(b.restarts(), 1);
    }

    #[test]
    fn many_exits_do_not_overflow() {
        let t0 = Instant::now();
        let mut b = Backoff::new();
        for _ in 0..1000 {
            assert!(b.on_exit(t0) <= Backoff::MAX);
        }
        assert_eq!(b.on_exit(t0), Backoff::MAX);
        assert_eq!(Backoff::delay_for(u32::MAX), Backoff::MAX);
    }
}
