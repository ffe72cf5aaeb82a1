//! Checking a trail: the chain of hashes, then its signed checkpoints.

use std::path::PathBuf;

use serde_json::Value;

use crate::tip::{Checkpoint, Tip, hash};
use crate::{GENESIS, head_path, next_tip, sign};

/// Where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}, line {line}: {reason}")]
pub struct BrokenChainError {
    /// The file (or archive chain) the record is in.
    pub file: String,
    /// The line (from 1).
    pub line: usize,
    /// What is wrong there.
    pub reason: String,
}

/// What the verification of a signed trail found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// Records in the chain.
    pub records: usize,
    /// Checkpoints, each signed by one of the keys.
    pub checkpoints: usize,
}

/// Records to check, wherever they came from: a name for messages, the
/// text (one record per line), and the head written beside a file.
pub(crate) struct Source {
    pub(crate) name: String,
    pub(crate) text: String,
    pub(crate) head: Option<String>,
}

impl Source {
    fn broken(&self, line: usize, reason: impl Into<String>) -> BrokenChainError {
        BrokenChainError {
            file: self.name.clone(),
            line,
            reason: reason.into(),
        }
    }
}

fn read(files: &[PathBuf]) -> Result<Vec<Source>, BrokenChainError> {
    files
        .iter()
        .map(|path| {
            let name = path.display().to_string();
            let broken = |line: usize, reason: String| BrokenChainError {
                file: name.clone(),
                line,
                reason,
            };
            let bytes = std::fs::read(path).map_err(|e| broken(0, e.to_string()))?;
            let text = String::from_utf8(bytes).map_err(|e| {
                let line = text_line_of(e.utf8_error().valid_up_to(), e.as_bytes());
                broken(line, "bytes that are not text: edited".into())
            })?;
            Ok(Source {
                head: std::fs::read_to_string(head_path(path)).ok(),
                name,
                text,
            })
        })
        .collect()
}

/// Verify the chain through `files`, in order: the number of records, or
/// the first broken link.
pub fn verify(files: &[PathBuf]) -> Result<usize, BrokenChainError> {
    chain(&read(files)?)
}

/// Verify the chain through `files` (as [`verify`]) and its signatures:
/// every checkpoint signed by one of `keys`, every start going on from a
/// checkpoint these files hold, and nothing after the last checkpoint.
pub fn verify_signed(files: &[PathBuf], keys: &[ssh_key::PublicKey]) -> Result<Signed, BrokenChainError> {
    signed(&read(files)?, keys)
}

/// The chain through `sources`, in order: the number of records.
pub(crate) fn chain(sources: &[Source]) -> Result<usize, BrokenChainError> {
    let mut expected: Option<Tip> = None;
    let mut count = 0;
    for source in sources {
        let text = &source.text;
        if !text.is_empty() && !text.ends_with('\n') {
            let line = text.lines().count();
            return Err(source.broken(line, "the last record is cut short: truncated"));
        }
        let mut last_line = None;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let value: Value = serde_json::from_str(line)
                .map_err(|_| source.broken(n, "not a JSON record: edited or truncated"))?;
            let seq = value
                .get("seq")
                .and_then(Value::as_u64)
                .ok_or_else(|| source.broken(n, "no sequence number: edited"))?;
            let prev = value.get("prev").and_then(Value::as_str).unwrap_or("");
            check_link(source, n, seq, prev, expected.as_ref())?;
            expected = Some(
                next_tip(seq, line)
                    .ok_or_else(|| source.broken(n, "a sequence number past the end: edited"))?,
            );
            last_line = Some((n, seq));
            count += 1;
        }
        if let Some(head) = &source.head
            && let Ok(head) = serde_json::from_str::<Value>(head)
        {
            check_head(source, &head, expected.as_ref(), last_line)?;
        }
    }
    Ok(count)
}

/// Record `seq` (line `n`, naming `prev`) goes on from `expected`, the tip
/// of the records before it; with none, it starts the chain.
fn check_link(
    source: &Source,
    n: usize,
    seq: u64,
    prev: &str,
    expected: Option<&Tip>,
) -> Result<(), BrokenChainError> {
    match expected {
        Some(tip) if seq != tip.seq => Err(source.broken(
            n,
            format!(
                "record {seq} where {} was due: records before it were deleted or reordered",
                tip.seq
            ),
        )),
        Some(tip) if prev != tip.prev => Err(source.broken(
            n.saturating_sub(1).max(1),
            format!(
                "record {} does not match the hash record {seq} holds of it: edited",
                seq.saturating_sub(1)
            ),
        )),
        None if seq != 0 => Err(source.broken(
            n,
            format!(
                "the trail starts at record {seq}: the records before it are missing (deleted, or in files not given)"
            ),
        )),
        None if prev != GENESIS => Err(source.broken(
            n,
            "the first record does not start the chain: edited",
        )),
        _ => Ok(()),
    }
}

/// The head written beside a file names its last record: `tip` follows it
/// (`last_line` is that record's line and number, if any).
fn check_head(
    source: &Source,
    head: &Value,
    tip: Option<&Tip>,
    last_line: Option<(usize, u64)>,
) -> Result<(), BrokenChainError> {
    let (seq, hash) = (
        head.get("seq").and_then(Value::as_u64),
        head.get("hash").and_then(Value::as_str),
    );
    let ends = last_line.map(|(n, _)| n).unwrap_or(0);
    if seq.and_then(|s| s.checked_add(1)) != tip.map(|t| t.seq) {
        return Err(source.broken(
            ends + 1,
            format!(
                "the trail ends at record {} but was written up to record {}: truncated",
                last_line.map_or("none".into(), |(_, s)| s.to_string()),
                seq.map_or("?".into(), |s| s.to_string())
            ),
        ));
    }
    if hash != tip.map(|t| t.prev.as_str()) {
        return Err(source.broken(ends, "the last record was changed: edited"));
    }
    Ok(())
}

/// The chain through `sources` and its signatures.
pub(crate) fn signed(sources: &[Source], keys: &[ssh_key::PublicKey]) -> Result<Signed, BrokenChainError> {
    let records = chain(sources)?;
    let mut seen: Vec<Checkpoint> = Vec::new();
    let mut last: Option<(&Source, usize, u64)> = None;
    for source in sources {
        for (i, line) in source.text.lines().enumerate() {
            let n = i + 1;
            let value: Value =
                serde_json::from_str(line).map_err(|_| source.broken(n, "not a JSON record"))?;
            let seq = value.get("seq").and_then(Value::as_u64).unwrap_or_default();
            match value.get("kind").and_then(Value::as_str) {
                Some("checkpoint") => {
                    let prev = value.get("prev").and_then(Value::as_str).unwrap_or("");
                    let signature = value.get("signature").and_then(Value::as_str).unwrap_or("");
                    if !sign::verifies(keys, signature, seq, prev) {
                        return Err(source.broken(
                            n,
                            format!("checkpoint {seq} is not signed by the given key: the trail was made up, or signed with another key"),
                        ));
                    }
                    seen.push(Checkpoint {
                        seq,
                        hash: hash(line),
                    });
                }
                Some("start") => {
                    if let Some(after) = value.get("after") {
                        let named = Checkpoint {
                            seq: after.get("seq").and_then(Value::as_u64).unwrap_or(u64::MAX),
                            hash: after.get("hash").and_then(Value::as_str).unwrap_or("").to_string(),
                        };
                        if !seen.contains(&named) {
                            return Err(source.broken(
                                n,
                                format!("the start at record {seq} goes on from checkpoint {}, which these files do not hold: the chain before it was dropped or replaced", named.seq),
                            ));
                        }
                    }
                }
                _ => {}
            }
            last = Some((source, n, seq));
        }
    }
    if let Some((source, line, seq)) = last {
        let signed = seen.last().map(|c| c.seq);
        if signed != Some(seq) {
            return Err(source.broken(
                line,
                match signed {
                    None => "no record is covered by a signed checkpoint: the trail was made up, or written without a signing key".into(),
                    Some(s) => format!("records {} to {seq} follow the last checkpoint unsigned: the trail was cut after them, or its service stopped without signing", s + 1),
                },
            ));
        }
    }
    Ok(Signed {
        records,
        checkpoints: seen.len(),
    })
}

fn text_line_of(offset: usize, bytes: &[u8]) -> usize {
    bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1
}
