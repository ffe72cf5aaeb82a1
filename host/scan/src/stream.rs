//! Scanning a body as it streams: each chunk searched with the bytes held
//! back from the one before, never the whole body at once.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::{Found, Redactor};

/// A stream's redaction: each chunk scanned with the bytes held back from
/// the one before, so that a token split across chunks is still whole when
/// searched. Memory: one chunk plus the longest pattern.
pub struct StreamRedactor {
    redactor: Arc<Redactor>,
    /// Scanned bytes held back: a pattern may begin in them.
    tail: BytesMut,
}

impl StreamRedactor {
    /// A stream scanned for `redactor`'s patterns.
    pub fn new(redactor: Arc<Redactor>) -> StreamRedactor {
        StreamRedactor {
            redactor,
            tail: BytesMut::new(),
        }
    }

    /// Take `data`; the bytes now safe to pass on (either may be empty), and
    /// what was found. A chunk with no occurrence, and none begun in the bytes
    /// held from before, passes on uncopied.
    pub fn push(&mut self, data: Bytes) -> ([Bytes; 2], Found) {
        let keep = self.redactor.longest() - 1;
        if data.len() > keep && self.clean(&data, keep) {
            let held = self.tail.split().freeze();
            let cut = data.len() - keep;
            self.tail.extend_from_slice(&data[cut..]);
            return ([held, data.slice(..cut)], Found::default());
        }
        self.tail.extend_from_slice(&data);
        let found = self.redactor.redact(&mut self.tail);
        let ready = self.tail.len() - keep.min(self.tail.len());
        ([self.tail.split_to(ready).freeze(), Bytes::new()], found)
    }

    /// No pattern begins in the held bytes and continues into `data`, and
    /// none lies within `data`.
    fn clean(&self, data: &[u8], keep: usize) -> bool {
        if !self.tail.is_empty() {
            let mut junction = Vec::with_capacity(self.tail.len() + keep);
            junction.extend_from_slice(&self.tail);
            junction.extend_from_slice(&data[..keep.min(data.len())]);
            if self
                .redactor
                .matches(&junction)
                .any(|m| m.start() < self.tail.len())
            {
                return false;
            }
        }
        !self.redactor.finds(data)
    }

    /// The bytes held back, at the end of the stream (already scanned).
    pub fn finish(&mut self) -> Bytes {
        self.tail.split().freeze()
    }

    /// How many bytes are held back.
    pub fn held(&self) -> usize {
        self.tail.len()
    }

    /// Drop the held bytes (a stream ended early).
    pub fn drop_held(&mut self) {
        self.tail.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "gho_16C7e42F292c6912E7710c838347Ae178B4a";

    #[test]
    fn a_stream_cut_anywhere_gives_the_same_bytes_as_one_scan() {
        let authz = format!("Bearer {TOKEN}");
        let r = Arc::new(Redactor::new(&[authz.as_bytes()]));
        let mut body = vec![b'.'; 300];
        body[100..100 + authz.len()].copy_from_slice(authz.as_bytes());
        body.extend_from_slice(&body.clone());
        let mut whole = body.clone();
        assert_eq!(r.redact(&mut whole).total(), 2);
        for first in 1..body.len() {
            for size in [first, 7, 64] {
                let mut s = StreamRedactor::new(r.clone());
                let mut out = Vec::new();
                let mut found = 0;
                let mut at = 0;
                let mut cut = first;
                while at < body.len() {
                    let end = cut.min(body.len());
                    let (ready, f) = s.push(Bytes::copy_from_slice(&body[at..end]));
                    ready.iter().for_each(|b| out.extend_from_slice(b));
                    found += f.total();
                    at = end;
                    cut = end + size;
                }
                out.extend_from_slice(&s.finish());
                assert_eq!(out, whole, "first cut {first}, then {size}");
                assert_eq!(found, 2, "first cut {first}, then {size}");
            }
        }
    }
}
