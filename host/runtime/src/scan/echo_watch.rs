//! One call's echo_watch over the credentials it sent: what was redacted where,
//! and whether the operator's policy ends the call for it.

use std::sync::{Arc, Mutex};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{Encoding, Found, Redactor, RedactorCache};
use crate::report::{Place, Redaction};

/// What the operator wants when an upstream echoes a credential.
use airlock_policy::EchoedTokens;

/// One call's echo_watch: the credentials it sent, what was redacted, and
/// whether the operator's policy ends the call for it.
pub(crate) struct EchoWatch {
    cache: Arc<RedactorCache>,
    policy: EchoedTokens,
    sent: Mutex<Vec<Arc<Redactor>>>,
    found: Mutex<Vec<Redaction>>,
    ended_by: Mutex<Option<String>>,
}

impl EchoWatch {
    pub(crate) fn new(cache: Arc<RedactorCache>, policy: EchoedTokens) -> Arc<EchoWatch> {
        Arc::new(EchoWatch {
            cache,
            policy,
            sent: Mutex::new(Vec::new()),
            found: Mutex::new(Vec::new()),
            ended_by: Mutex::new(None),
        })
    }

    /// The automaton for the credentials one request went out with.
    pub(crate) fn redactor(&self, values: &[&HeaderValue]) -> Arc<Redactor> {
        let bytes: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        let r = self.cache.get(&bytes);
        let mut sent = lock(&self.sent);
        if !sent.iter().any(|s| Arc::ptr_eq(s, &r)) {
            sent.push(r.clone());
        }
        r
    }

    /// Record what was found; whether the call must end for it.
    pub(super) fn record(
        &self,
        host: Option<&str>,
        place: Place,
        header: Option<&str>,
        found: Found,
    ) -> bool {
        if found.is_empty() {
            return false;
        }
        tracing::warn!(
            target: "airlock::scan",
            host = host.unwrap_or("-"),
            ?place,
            header = header.unwrap_or("-"),
            count = found.total(),
            "a credential was echoed; redacted"
        );
        {
            let mut list = lock(&self.found);
            for (encoding, count) in found.by_encoding() {
                match list.iter_mut().find(|r| {
                    r.host.as_deref() == host
                        && r.place == place
                        && r.header.as_deref() == header
                        && r.encoding == encoding
                }) {
                    Some(r) => r.count += count,
                    None => list.push(Redaction {
                        host: host.map(str::to_string),
                        place,
                        header: header.map(str::to_string),
                        encoding,
                        count,
                    }),
                }
            }
        }
        if self.policy == EchoedTokens::Fail
            && let Some(host) = host
        {
            lock(&self.ended_by).get_or_insert_with(|| host.to_string());
            return true;
        }
        false
    }

    /// Redact the response headers of a request to `host`; whether the call must end.
    pub(crate) fn headers(
        &self,
        redactor: &Redactor,
        host: &str,
        place: Place,
        headers: &mut HeaderMap,
    ) -> bool {
        let mut end = false;
        for (name, value) in headers.iter_mut() {
            if !redactor.finds(value.as_bytes()) {
                continue;
            }
            let mut bytes = value.as_bytes().to_vec();
            let found = redactor.redact(&mut bytes);
            // The marker is a visible ASCII run: still a valid value.
            if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                *value = v;
            }
            end |= self.record(Some(host), place, Some(name.as_str()), found);
        }
        // A value split over several lines of one name: the guest reads them
        // together, so they are scanned together, each whole line overwritten.
        let names: Vec<HeaderName> = headers.keys().cloned().collect();
        for name in names {
            let values: Vec<Vec<u8>> = headers
                .get_all(&name)
                .iter()
                .map(|v| v.as_bytes().to_vec())
                .collect();
            if values.len() < 2 {
                continue;
            }
            let joined = [values.concat(), values.join(&b", "[..])];
            let Some(mut whole) = joined.into_iter().find(|j| redactor.finds(j)) else {
                continue;
            };
            let found = redactor.redact(&mut whole);
            headers.remove(&name);
            for v in &values {
                let marker = airlock_scan::marker(v.len());
                if let Ok(v) = HeaderValue::from_bytes(&marker) {
                    headers.append(name.clone(), v);
                }
            }
            end |= self.record(Some(host), place, Some(name.as_str()), found);
        }
        // A header named with the credential (HTTP lowercases names): dropped.
        let named: Vec<HeaderName> = headers
            .keys()
            .filter(|n| redactor.finds_in_any_case(n.as_str().as_bytes()))
            .cloned()
            .collect();
        for name in named {
            headers.remove(&name);
            end |= self.record(Some(host), place, None, Found::of(Encoding::Raw, 1));
        }
        end
    }

    /// Redact `text` (output, an error or a log line) with every credential
    /// the call sent.
    pub(crate) fn text(&self, place: Place, text: &mut String) {
        // Never skipped: a lock poisoned by a panic elsewhere still holds the credentials.
        let sent = lock(&self.sent).clone();
        for r in sent {
            let found = r.redact_string(text);
            self.record(None, place, None, found);
        }
    }

    pub(crate) fn sent_any(&self) -> bool {
        !lock(&self.sent).is_empty()
    }

    /// The call's redactions.
    pub(crate) fn redactions(&self) -> Vec<Redaction> {
        lock(&self.found).clone()
    }

    /// The host whose echo ended the call, under the `fail` policy.
    pub(crate) fn ended_by(&self) -> Option<String> {
        lock(&self.ended_by).clone()
    }
}

/// The value behind `m`, even if a panic elsewhere poisoned it: the call's
/// records and credentials are never dropped for that.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_redacts_and_keeps_its_records() {
        let echo_watch = EchoWatch::new(Arc::default(), EchoedTokens::Redact);
        let token = HeaderValue::from_static("Bearer gho_16C7e42F292c6912E7710c838347Ae178B4a");
        echo_watch.redactor(&[&token]);
        // A panic while a lock is held (elsewhere in the call) poisons it.
        let w = echo_watch.clone();
        let _ = std::thread::spawn(move || {
            let _sent = w.sent.lock();
            let _found = w.found.lock();
            panic!("poisoned on purpose");
        })
        .join();
        assert!(echo_watch.sent.is_poisoned() && echo_watch.found.is_poisoned());
        let mut text = "out: gho_16C7e42F292c6912E7710c838347Ae178B4a".to_string();
        echo_watch.text(Place::Output, &mut text);
        assert!(!text.contains("gho_16C7"), "{text}");
        assert_eq!(echo_watch.redactions().len(), 1);
        assert!(echo_watch.sent_any());
    }
}
