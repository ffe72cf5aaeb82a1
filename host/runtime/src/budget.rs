//! One call's memory budget, shared by the instance's memories and tables and
//! by what the host holds for the call (request bodies).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use wasmtime::ResourceLimiter;

/// What one table element is charged against the memory budget.
const TABLE_ELEMENT_BYTES: usize = 16;

/// One call's memory budget: its linear memories and tables together, and
/// the request bodies the host holds for it, against the tool's cap.
pub(crate) struct Budget {
    max: usize,
    used: AtomicUsize,
    hit: AtomicBool,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            max,
            used: AtomicUsize::new(0),
            hit: AtomicBool::new(false),
        })
    }

    /// Take `n` bytes for the instance, or refuse and remember that the cap
    /// was hit: the trap that follows is the memory limit, not a crash.
    pub(crate) fn charge(&self, n: usize) -> bool {
        let taken = self.reserve(n);
        if !taken {
            self.hit.store(true, Ordering::Release);
        }
        taken
    }

    /// Take `n` bytes for something the host holds (the guest is told when
    /// this fails), or refuse.
    pub(crate) fn reserve(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.max)
            })
            .is_ok()
    }

    /// Give back `n` bytes taken by [`Budget::reserve`].
    pub(crate) fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    pub(crate) fn was_hit(&self) -> bool {
        self.hit.load(Ordering::Acquire)
    }
}

/// Charges every linear memory and table of the instance to the call's
/// budget, so several memories together get no more than the cap.
pub(crate) struct Limiter {
    pub(crate) budget: Arc<Budget>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.budget.charge(desired.saturating_sub(current)))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.budget.charge(
            desired
                .saturating_sub(current)
                .saturating_mul(TABLE_ELEMENT_BYTES),
        ))
    }
}
