//! Wall-clock time, injectable: expiry decisions ask a [`Clock`], so tests
//! move time forward instead of sleeping.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The time now.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;

    /// Seconds since the Unix epoch.
    fn unix(&self) -> i64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    /// Time since `then` (zero if `then` is in the future).
    fn since(&self, then: SystemTime) -> Duration {
        self.now().duration_since(then).unwrap_or_default()
    }
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The system's clock plus an offset a test moves forward.
#[derive(Debug, Default)]
pub struct ManualClock {
    offset: Mutex<Duration>,
}

impl ManualClock {
    /// A clock that reads the system time until advanced.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Move time forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        SystemTime::now() + *self.offset.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_forward_by_what_it_is_told() {
        let clock = ManualClock::new();
        let before = SystemClock.unix();
        clock.advance(Duration::from_secs(3600));
        let after = clock.unix();
        assert!(
            (3600..3605).contains(&(after - before)),
            "{}",
            after - before
        );
        assert!(clock.since(SystemTime::now()) >= Duration::from_secs(3599));
    }
}
