//! The chain the writer thread appends to: each record numbered and linked
//! to the line before, and a signed checkpoint when one is due.

use serde::Serialize;

use crate::sign::CheckpointKey;
use crate::sink::AuditSink;
use crate::tip::{Tip, checkpoint_of, hash};
use crate::unix_now_ms;

pub(crate) struct Chain {
    pub(crate) sink: Box<dyn AuditSink>,
    pub(crate) tip: Tip,
    pub(crate) signing: Option<Signing>,
}

/// Checkpoints to sign: with which key, how often, and records since the last.
pub(crate) struct Signing {
    pub(crate) key: CheckpointKey,
    pub(crate) every: u64,
    pub(crate) since: u64,
}

/// The checkpoint record's own fields.
#[derive(Serialize)]
#[serde(tag = "kind", rename = "checkpoint")]
struct CheckpointRecord<'a> {
    key: &'a str,
    signature: String,
}

impl Chain {
    /// Append a record of `fields` (a JSON object's members, after its `{`).
    pub(crate) fn append(&mut self, fields: &str) -> bool {
        let line = format!(
            "{{\"seq\":{},\"time_ms\":{},\"prev\":\"{}\",{fields}",
            self.tip.seq,
            unix_now_ms(),
            self.tip.prev
        );
        match self.sink.append(&line) {
            Ok(()) => {
                let checkpoint = checkpoint_of(self.tip.seq, &line).or(self.tip.checkpoint.take());
                self.tip = Tip {
                    seq: self.tip.seq + 1,
                    prev: hash(&line),
                    checkpoint,
                };
                true
            }
            Err(e) => {
                tracing::error!("the audit trail could not be written: {e}");
                false
            }
        }
    }

    /// Append a record, and a checkpoint after it when one is due.
    pub(crate) fn record(&mut self, fields: &str) -> bool {
        if !self.append(fields) {
            return false;
        }
        let due = self.signing.as_mut().is_some_and(|s| {
            s.since += 1;
            s.since >= s.every
        });
        if due {
            self.checkpoint();
        }
        true
    }

    /// Sign where the chain is now, as a record of its own.
    pub(crate) fn checkpoint(&mut self) {
        let Some(signing) = &self.signing else {
            return;
        };
        let signature = match signing.key.sign(self.tip.seq, &self.tip.prev) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("the audit checkpoint could not be signed: {e}");
                return;
            }
        };
        let record = CheckpointRecord {
            key: signing.key.fingerprint(),
            signature,
        };
        let fields = serde_json::to_string(&record).expect("a checkpoint serializes");
        if self.append(&fields[1..])
            && let Some(signing) = &mut self.signing
        {
            signing.since = 0;
        }
    }
}
