//! Key fetches an unauthenticated caller can trigger, bounded: a token names
//! a key id before anything is verified, so each unknown one would otherwise
//! send the verifier to the network. Here one fetch runs at a time per
//! source (the others wait for its result instead of fetching again), a key
//! id found missing is not looked for again for a while, and fetches are at
//! least an interval apart. Verifications with a known key never wait.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::VerifyError;

/// Key ids remembered as missing, at most.
const MISSING_CAP: usize = 1024;

pub(crate) struct Gate {
    interval: Duration,
    state: Mutex<State>,
    flight: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    last: Option<Instant>,
    missing: HashMap<String, Instant>,
}

impl Gate {
    /// Fetches at least `interval` apart.
    pub(crate) fn new(interval: Duration) -> Gate {
        Gate {
            interval,
            state: Mutex::default(),
            flight: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key `kid`: `known()` if it has it, else what `fetch` brings,
    /// unless `kid` was missing lately or the last fetch was too recent.
    /// `fetch` answers `None` when the key is not there.
    pub(crate) async fn key<T, Fut>(
        &self,
        kid: &str,
        known: impl Fn() -> Option<T>,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<T, VerifyError>
    where
        Fut: Future<Output = Result<Option<T>, VerifyError>>,
    {
        if let Some(t) = known() {
            return Ok(t);
        }
        let lately = |since: Instant| since.elapsed() < self.interval;
        if self.state().missing.get(kid).is_some_and(|t| lately(*t)) {
            return Err(VerifyError::UnknownKey);
        }
        let _one = self.flight.lock().await;
        // The fetch this one waited for may have brought it.
        if let Some(t) = known() {
            return Ok(t);
        }
        if self.state().last.is_some_and(lately) {
            self.forget(kid);
            return Err(VerifyError::UnknownKey);
        }
        self.state().last = Some(Instant::now());
        match fetch().await? {
            Some(t) => Ok(t),
            None => {
                self.forget(kid);
                Err(VerifyError::UnknownKey)
            }
        }
    }

    fn forget(&self, kid: &str) {
        let mut state = self.state();
        if state.missing.len() >= MISSING_CAP {
            let interval = self.interval;
            state.missing.retain(|_, t| t.elapsed() < interval);
            if state.missing.len() >= MISSING_CAP {
                state.missing.clear();
            }
        }
        state.missing.insert(kid.to_string(), Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fifty_made_up_key_ids_at_once_make_one_fetch() {
        let gate = Arc::new(Gate::new(Duration::from_secs(30)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..50 {
            let (gate, fetches) = (gate.clone(), fetches.clone());
            tasks.push(tokio::spawn(async move {
                gate.key(
                    &format!("made-up-{i}"),
                    || None::<()>,
                    || async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(None)
                    },
                )
                .await
            }));
        }
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Err(VerifyError::UnknownKey)));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_known_key_never_waits_and_a_missing_one_is_not_fetched_again_soon() {
        let gate = Gate::new(Duration::from_secs(30));
        let _held = gate.flight.lock().await;
        // A fetch in flight does not hold back a key already known.
        assert_eq!(
            gate.key("k", || Some(7), || async { Ok(None) })
                .await
                .unwrap(),
            7
        );
        drop(_held);
        let fetched = AtomicUsize::new(0);
        let fetch = || async {
            fetched.fetch_add(1, Ordering::SeqCst);
            Ok(None::<u8>)
        };
        assert!(gate.key("gone", || None, fetch).await.is_err());
        assert!(gate.key("gone", || None, fetch).await.is_err());
        assert_eq!(fetched.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn after_the_interval_a_new_key_is_fetched() {
        let gate = Gate::new(Duration::from_millis(20));
        assert!(
            gate.key("a", || None::<u8>, || async { Ok(None) })
                .await
                .is_err()
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(
            gate.key("b", || None, || async { Ok(Some(1u8)) })
                .await
                .unwrap(),
            1
        );
    }
}
