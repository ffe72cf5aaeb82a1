//! The deployed archive: Firehose objects holding the audit records of
//! every task, interleaved, possibly twice (delivery is at least once).
//!
//! An object is gzip (Firehose's own compression, and CloudWatch Logs'
//! around each record when Firehose does not decompress), then either the
//! records themselves (Firehose's message extraction) or CloudWatch Logs'
//! envelopes (`logEvents[].message`). The chains are put back together by
//! their hashes, not by log stream or order of arrival: each starts at a
//! record 0 and goes on through the one record that names its hash.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;

use serde_json::Value;

use crate::verify::{self, BrokenChainError, Source};
use crate::GENESIS;
use crate::tip::hash;

/// Bytes one object may decompress to: past it, it is refused.
const MAX_OBJECT: u64 = 1 << 30;

/// One chain found in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveChain {
    /// Where its first record is (object and record number in it).
    pub first: String,
    /// Its records.
    pub records: usize,
    /// Its signed checkpoints (with keys given).
    pub checkpoints: usize,
}

/// An object that cannot be read as records; its text is the reason of the
/// [`BrokenChainError`] that names the object. Causes are in the text, not a source.
#[derive(Debug, thiserror::Error)]
enum ObjectError {
    /// A gzip layer is damaged.
    #[error("not readable gzip: {0}")]
    Gzip(std::io::Error),
    /// It decompresses past [`MAX_OBJECT`] bytes.
    #[error("decompresses past {} bytes: refused", MAX_OBJECT)]
    TooLarge,
    /// Its bytes are not UTF-8.
    #[error("bytes that are not text: edited")]
    NotText,
    /// Its text is not JSON values one after another.
    #[error("not JSON at byte {at}: {error}")]
    NotJson {
        /// Where the value that fails starts.
        at: usize,
        /// Why it fails.
        error: serde_json::Error,
    },
    /// A CloudWatch Logs envelope holds an event without a message.
    #[error("a log event without a message")]
    EventWithoutMessage,
}

/// A record as found, and where.
struct Found {
    line: String,
    object: usize,
    at: usize,
}

/// Every record the objects hold, each once, with the objects' names for
/// messages.
struct Archive<'a> {
    objects: &'a [PathBuf],
    found: Vec<Found>,
}

/// How the records link up: by the hash each names as its predecessor.
struct Links {
    /// The records that follow a hash.
    after: HashMap<String, Vec<usize>>,
    /// The records 0, each starting a chain.
    starts: Vec<usize>,
    /// Each record's sequence number.
    seqs: Vec<u64>,
}

/// Put the chains in `objects` back together and verify each: with `keys`,
/// its signatures too. A record that follows no other (records before it
/// dropped) or two records that claim to follow the same one (one of them
/// made up) break the archive.
pub fn verify_archive(
    objects: &[PathBuf],
    keys: Option<&[ssh_key::PublicKey]>,
) -> Result<Vec<ArchiveChain>, BrokenChainError> {
    let archive = Archive::read(objects)?;
    let links = archive.links()?;
    let mut reached = vec![false; archive.found.len()];
    let mut chains = Vec::new();
    for &start in &links.starts {
        let lines = archive.follow(start, &links.after, &mut reached)?;
        chains.push(archive.verify_chain(start, &lines, keys)?);
    }
    if let Some(orphan) = (0..reached.len())
        .filter(|&i| !reached[i])
        .min_by_key(|&i| links.seqs[i])
    {
        // The earliest record no chain reaches: what came before it is gone.
        return Err(archive.broken_at(
            orphan,
            format!(
                "record {} follows no record the archive holds: the records before it were dropped",
                links.seqs[orphan]
            ),
        ));
    }
    Ok(chains)
}

impl Archive<'_> {
    /// The records of `objects`, in order; one delivered twice is kept once.
    fn read(objects: &[PathBuf]) -> Result<Archive<'_>, BrokenChainError> {
        let mut found: Vec<Found> = Vec::new();
        let mut seen = HashSet::new();
        for (object, path) in objects.iter().enumerate() {
            let broken = |reason: String| BrokenChainError {
                file: path.display().to_string(),
                line: 0,
                reason,
            };
            let bytes = std::fs::read(path).map_err(|e| broken(e.to_string()))?;
            let text = decompress(bytes).map_err(|e| broken(e.to_string()))?;
            for (at, line) in records(&text)
                .map_err(|e| broken(e.to_string()))?
                .into_iter()
                .enumerate()
            {
                // A record delivered twice is the same line: kept once.
                if seen.insert(line.clone()) {
                    found.push(Found {
                        line,
                        object,
                        at: at + 1,
                    });
                }
            }
        }
        Ok(Archive { objects, found })
    }

    /// Where record `i` is, for messages.
    fn place(&self, i: usize) -> String {
        let f = &self.found[i];
        format!("{} record {}", self.objects[f.object].display(), f.at)
    }

    /// The archive broken at record `i`.
    fn broken_at(&self, i: usize, reason: String) -> BrokenChainError {
        let f = &self.found[i];
        BrokenChainError {
            file: self.objects[f.object].display().to_string(),
            line: f.at,
            reason,
        }
    }

    /// Each record by the hash it names as its predecessor; records 0 start.
    fn links(&self) -> Result<Links, BrokenChainError> {
        let mut after: HashMap<String, Vec<usize>> = HashMap::new();
        let mut starts = Vec::new();
        let mut seqs = Vec::with_capacity(self.found.len());
        for (i, f) in self.found.iter().enumerate() {
            let value: Value = serde_json::from_str(&f.line)
                .map_err(|_| self.broken_at(i, "not a JSON record: edited".into()))?;
            let seq = value.get("seq").and_then(Value::as_u64);
            let prev = value.get("prev").and_then(Value::as_str);
            seqs.push(seq.unwrap_or_default());
            match (seq, prev) {
                (Some(0), Some(GENESIS)) => starts.push(i),
                (Some(_), Some(prev)) => after.entry(prev.to_string()).or_default().push(i),
                _ => {
                    return Err(
                        self.broken_at(i, "not an audit record (no seq or prev): edited".into())
                    );
                }
            }
        }
        Ok(Links {
            after,
            starts,
            seqs,
        })
    }

    /// The lines of the chain from record `start`, each marked `reached`;
    /// broken where it loops or forks.
    fn follow(
        &self,
        start: usize,
        after: &HashMap<String, Vec<usize>>,
        reached: &mut [bool],
    ) -> Result<Vec<&str>, BrokenChainError> {
        reached[start] = true;
        let mut lines = vec![self.found[start].line.as_str()];
        let mut tip = start;
        loop {
            match after.get(&hash(&self.found[tip].line)).map(Vec::as_slice) {
                None | Some([]) => return Ok(lines),
                Some([next]) if reached[*next] => {
                    return Err(self.broken_at(
                        *next,
                        "records that follow each other in a loop: made up".into(),
                    ));
                }
                Some([next]) => {
                    tip = *next;
                    lines.push(self.found[tip].line.as_str());
                    reached[tip] = true;
                }
                Some([one, other, ..]) => {
                    return Err(self.broken_at(
                        *other,
                        format!(
                            "this record and {} both follow {}: one of them was made up",
                            self.place(*one),
                            self.place(tip)
                        ),
                    ));
                }
            }
        }
    }

    /// The chain from record `start` (its `lines`) verified as a trail: with
    /// `keys`, its signatures too.
    fn verify_chain(
        &self,
        start: usize,
        lines: &[&str],
        keys: Option<&[ssh_key::PublicKey]>,
    ) -> Result<ArchiveChain, BrokenChainError> {
        let source = Source {
            name: format!("the chain from {}", self.place(start)),
            text: lines.join("\n") + "\n",
            head: None,
        };
        let sources = std::slice::from_ref(&source);
        let (records, checkpoints) = match keys {
            Some(keys) => {
                let s = verify::signed(sources, keys)?;
                (s.records, s.checkpoints)
            }
            None => (verify::chain(sources)?, 0),
        };
        Ok(ArchiveChain {
            first: self.place(start),
            records,
            checkpoints,
        })
    }
}

/// `bytes` with every gzip layer taken off.
fn decompress(mut bytes: Vec<u8>) -> Result<String, ObjectError> {
    while bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes.as_slice())
            .take(MAX_OBJECT + 1)
            .read_to_end(&mut out)
            .map_err(ObjectError::Gzip)?;
        if out.len() as u64 > MAX_OBJECT {
            return Err(ObjectError::TooLarge);
        }
        bytes = out;
    }
    String::from_utf8(bytes).map_err(|_| ObjectError::NotText)
}

/// The records in an object's text: JSON values one after another (with or
/// without newlines between them), each a record or a CloudWatch Logs
/// envelope of them.
fn records(text: &str) -> Result<Vec<String>, ObjectError> {
    let mut out = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut end = 0;
    while let Some(value) = stream.next() {
        let value = value.map_err(|error| ObjectError::NotJson { at: end, error })?;
        let start = end + (text[end..].len() - text[end..].trim_start().len());
        end = stream.byte_offset();
        match value.get("logEvents").and_then(Value::as_array) {
            Some(events) => {
                for event in events {
                    let message = event
                        .get("message")
                        .and_then(Value::as_str)
                        .ok_or(ObjectError::EventWithoutMessage)?;
                    out.push(message.trim_end_matches('\n').to_string());
                }
            }
            // CloudWatch Logs' own control messages hold no records.
            None if value.get("messageType").and_then(Value::as_str) == Some("CONTROL_MESSAGE") => {}
            None => out.push(text[start..end].to_string()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Audit, CheckpointKey};
    use flate2::{Compression, write::GzEncoder};
    use serde_json::json;
    use std::io::Write;
    use std::path::Path;

    fn key() -> (CheckpointKey, ssh_key::PublicKey) {
        use ssh_key::rand_core::OsRng;
        let key = ssh_key::PrivateKey::random(&mut OsRng, ssh_key::Algorithm::Ed25519).unwrap();
        let text = key.to_openssh(ssh_key::LineEnding::LF).unwrap();
        (CheckpointKey::from_openssh(&text).unwrap(), key.public_key().clone())
    }

    /// The lines of one task's signed trail of `records` records.
    fn task(dir: &Path, name: &str, key: Option<CheckpointKey>, records: usize) -> Vec<String> {
        let path = dir.join(name);
        let audit = Audit::open_signed(path.to_str().unwrap(), 1 << 30, name, "0", key.map(|k| (k, 4))).unwrap();
        for i in 0..records {
            audit.record(json!({"kind": "call", "tool": format!("t{i}")}));
        }
        audit.checkpoint();
        std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// CloudWatch Logs' subscription envelope of `lines`, gzipped as it sends it.
    fn envelope(stream: &str, lines: &[String]) -> Vec<u8> {
        let events: Vec<Value> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| json!({"id": format!("{stream}{i}"), "timestamp": 0, "message": l}))
            .collect();
        gzip(json!({"messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "airlock",
            "logStream": stream, "subscriptionFilters": ["audit"], "logEvents": events}).to_string().as_bytes())
    }

    /// Objects as the deployed Firehose writes them: one of envelopes, not
    /// decompressed (gzip in gzip) with a control message, the other of
    /// extracted records, some delivered a second time.
    fn archive(dir: &Path, a: &[String], b: &[String]) -> Vec<PathBuf> {
        let control = gzip(json!({"messageType": "CONTROL_MESSAGE", "logEvents": []}).to_string().as_bytes());
        let (a1, a2) = a.split_at(a.len() / 2);
        let (b1, b2) = b.split_at(b.len() / 2);
        let first = [control, envelope("task-b", b1), envelope("task-a", a1)].concat();
        let again = &a1[a1.len() - 2..];
        let extracted: String = again.iter().chain(b2).chain(a2).map(|l| format!("{l}\n")).collect();
        let objects = [dir.join("one.gz"), dir.join("two.gz")];
        std::fs::write(&objects[0], gzip(&first)).unwrap();
        std::fs::write(&objects[1], gzip(extracted.as_bytes())).unwrap();
        objects.to_vec()
    }

    #[test]
    fn the_archive_as_firehose_writes_it_verifies_chain_by_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (k, public) = key();
        let (k2, _) = key();
        let keys = [public];
        let a = task(dir.path(), "a", Some(k), 9);
        let b = task(dir.path(), "b", Some(k2), 5);
        let objects = archive(dir.path(), &a, &b);
        let unsigned = verify_archive(&objects, None).unwrap();
        let mut counts: Vec<usize> = unsigned.iter().map(|c| c.records).collect();
        counts.sort();
        assert_eq!(counts, [b.len(), a.len()], "{unsigned:?}");
        // Task b signed with another key: named, with the record it fails at.
        let e = verify_archive(&objects, Some(&keys)).unwrap_err();
        assert!(e.reason.contains("not signed by the given key"), "{e}");
        let (k3, public3) = key();
        let b = task(dir.path(), "b3", Some(k3), 5);
        let objects = archive(dir.path(), &a, &b);
        let chains = verify_archive(&objects, Some(&[keys[0].clone(), public3])).unwrap();
        assert_eq!(chains.len(), 2);
        assert!(chains.iter().all(|c| c.checkpoints >= 2), "{chains:?}");
    }

    #[test]
    fn a_cut_tail_dropped_records_and_a_made_up_chain_in_the_archive_are_each_detected() {
        let dir = tempfile::tempdir().unwrap();
        let (k, public) = key();
        let (k2, public2) = key();
        let keys = [public, public2];
        let a = task(dir.path(), "a", Some(k), 9);
        let b = task(dir.path(), "b", Some(k2), 5);
        assert!(verify_archive(&archive(dir.path(), &a, &b), Some(&keys)).is_ok());

        // A cut tail: a task's last records never reached the archive.
        let cut = &a[..a.len() - 2];
        let e = verify_archive(&archive(dir.path(), cut, &b), Some(&keys)).unwrap_err();
        assert!(e.reason.contains("follow the last checkpoint unsigned"), "{e}");

        // Records dropped from the middle of a chain.
        let dropped: Vec<String> = a.iter().enumerate().filter(|(i, _)| *i != 6).map(|(_, l)| l.clone()).collect();
        let e = verify_archive(&archive(dir.path(), &dropped, &b), None).unwrap_err();
        assert!(e.reason.contains("record 7 follows no record"), "{e}");

        // A dropped chain with its records: gone from the archive, each
        // other chain still whole; a whole task's chain is missed only
        // where the archive's objects can be deleted (hence Object Lock).
        let chains = verify_archive(&archive(dir.path(), &a, &[]), Some(&keys)).unwrap();
        assert_eq!(chains.len(), 1);

        // A made-up chain: consistent hashes, no signature.
        let made = task(dir.path(), "mallory", None, 3);
        let e = verify_archive(&archive(dir.path(), &a, &made), Some(&keys)).unwrap_err();
        assert!(e.reason.contains("no record is covered"), "{e}");

        // A record made up to follow a real one.
        let mut forged: Value = serde_json::from_str(&a[4]).unwrap();
        forged["tool"] = "forged".into();
        let mut spliced = a.clone();
        spliced.push(forged.to_string());
        let e = verify_archive(&archive(dir.path(), &spliced, &b), None).unwrap_err();
        assert!(e.reason.contains("one of them was made up"), "{e}");
    }
}
