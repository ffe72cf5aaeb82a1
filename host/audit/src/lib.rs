//! Airlock's audit trail, shared by the host and the session binding
//! service: one JSON line per record, each carrying its sequence number and
//! the sha256 of the line before it, so that an edited, deleted, reordered or
//! truncated record shows (`verify`). Records are the services' own
//! serializable types, tagged by `kind`; they never hold a token, code,
//! secret, header value or tool input.

use std::sync::{Arc, mpsc};

use serde::Serialize;

mod archive;
mod chain;
mod sign;
mod sink;
mod tip;
mod verify;
mod writer;

pub use archive::{ArchiveChain, verify_archive};
pub use sign::{CheckpointKey, CheckpointKeyError, LoadCheckpointKeyError, NAMESPACE as SIGNATURE_NAMESPACE};
pub use sink::{AuditSink, FileSink, StdoutSink, rotated_files};
use sink::{head_path, next_tip};
pub use verify::{BrokenChainError, Signed, verify, verify_signed};
pub use writer::BacklogFullError;
use writer::{Ack, Job, Writer};
use chain::{Chain, Signing};
pub use tip::{Checkpoint, Tip};

/// The `prev` of the first record ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    unix_now_ms() / 1000
}

/// The trail: a cheap handle; `none()` records nothing.
#[derive(Clone, Default)]
pub struct Audit {
    writer: Option<Arc<Writer>>,
}

/// How many records may wait for the writer before calls are refused,
/// unless [`Audit::with_capacity`] says otherwise.
pub const DEFAULT_BACKLOG: usize = 4096;

/// The record each start of a service writes first (a stdout trail's chain
/// begins here at each start: each task's log stream is its own chain).
#[derive(Serialize)]
#[serde(tag = "kind", rename = "start")]
struct Start<'a> {
    service: &'a str,
    version: &'a str,
    /// The last checkpoint of the chain this start goes on from.
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<Checkpoint>,
}

/// A record's place in the backlog, taken before the work it records
/// (see [`Audit::reserve`]); given back when dropped unused.
#[must_use = "a reservation holds a place in the backlog until it is used or dropped"]
pub struct Reservation {
    writer: Option<Arc<Writer>>,
}

impl Reservation {
    /// Append `records` in order; resolves once they are written (true) or
    /// the sink failed (false, and logged). The first takes the reserved
    /// place; any more join the backlog as [`Audit::record`]'s do.
    pub async fn commit<R: Serialize>(mut self, records: impl IntoIterator<Item = R>) -> bool {
        let Some(writer) = self.writer.take() else {
            return true;
        };
        let mut waits = Vec::new();
        for (i, record) in records.into_iter().enumerate() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let fields = fields_of(&record);
            if i == 0 {
                // Already counted: the reservation becomes the record.
                if !writer.send(Job::Record(fields, Ack::Task(tx))) {
                    writer.release();
                    return false;
                }
            } else if !writer.send_record(fields, Ack::Task(tx)) {
                return false;
            }
            waits.push(rx);
        }
        if waits.is_empty() {
            writer.release();
        }
        let mut written = true;
        for rx in waits {
            written &= rx.await.unwrap_or(false);
        }
        written
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            writer.release();
        }
    }
}

impl Audit {
    /// A trail on `sink`, going on from `tip`, appended by a writer thread
    /// of its own (the error: that thread could not start).
    pub fn new(sink: Box<dyn AuditSink>, tip: Tip) -> std::io::Result<Audit> {
        let chain = Chain {
            sink,
            tip,
            signing: None,
        };
        let writer = Writer::start(chain, DEFAULT_BACKLOG)?;
        Ok(Audit {
            writer: Some(Arc::new(writer)),
        })
    }

    /// The same trail, refusing reservations once `capacity` records wait.
    pub fn with_capacity(self, capacity: usize) -> Audit {
        Audit {
            writer: self.writer.map(|w| Arc::new(w.resized(capacity))),
        }
    }

    /// The same trail, a checkpoint signed by `key` every `every` records
    /// and whenever [`Audit::checkpoint`] is called.
    pub fn signed(self, key: CheckpointKey, every: u64) -> Audit {
        if let Some(writer) = &self.writer {
            writer.send(Job::Sign(Box::new(Signing {
                key,
                every: every.max(1),
                since: 0,
            })));
        }
        self
    }

    /// Sign a checkpoint now (at shutdown), if any record came since the
    /// last; every record sent before is written when this returns.
    pub fn checkpoint(&self) {
        if let Some(writer) = &self.writer {
            let (tx, rx) = mpsc::sync_channel(1);
            if writer.send(Job::Checkpoint(Ack::Thread(tx))) {
                let _ = rx.recv();
            }
        }
    }

    /// A trail that records nothing.
    pub fn none() -> Audit {
        Audit::default()
    }

    /// Open the trail a setting names (`stdout`, `off`, or a file rotated at
    /// `rotate_bytes`) and record that `service` (at `version`) started.
    pub fn open(
        sink: &str,
        rotate_bytes: u64,
        service: &str,
        version: &str,
    ) -> std::io::Result<Audit> {
        Audit::open_signed(sink, rotate_bytes, service, version, None)
    }

    /// The same, checkpoints signed by `signing` (a key, and how many
    /// records apart); the start names the last checkpoint it goes on from.
    pub fn open_signed(
        sink: &str,
        rotate_bytes: u64,
        service: &str,
        version: &str,
        signing: Option<(CheckpointKey, u64)>,
    ) -> std::io::Result<Audit> {
        let (sink, tip): (Box<dyn AuditSink>, Tip) = match sink {
            "off" => return Ok(Audit::none()),
            "stdout" => (Box::new(StdoutSink), Tip::genesis()),
            path => {
                let (sink, tip) = FileSink::open(path, rotate_bytes)?;
                (Box::new(sink), tip)
            }
        };
        let after = tip.checkpoint.clone();
        let mut trail = Audit::new(sink, tip)?;
        if let Some((key, every)) = signing {
            trail = trail.signed(key, every);
        }
        trail.record(Start {
            service,
            version,
            after,
        });
        Ok(trail)
    }

    /// Append `record` (a struct or enum serialized with a `kind` tag),
    /// chained to the one before; returns once it is written. A sink that
    /// fails is logged, never a reason to fail the work it records. Records
    /// of work already done always join the backlog: it is calls, not
    /// records, that [`Audit::reserve`] turns away.
    pub fn record(&self, record: impl Serialize) {
        let Some(writer) = &self.writer else {
            return;
        };
        let (tx, rx) = mpsc::sync_channel(1);
        if writer.send_record(fields_of(&record), Ack::Thread(tx)) {
            let _ = rx.recv();
        }
    }

    /// A place for a record of work about to be done, or why there is none:
    /// the writer is `capacity` records behind. Work that cannot be recorded
    /// is refused before it runs, never run and left unrecorded.
    pub fn reserve(&self) -> Result<Reservation, BacklogFullError> {
        match &self.writer {
            Some(writer) => {
                writer.reserve()?;
                Ok(Reservation {
                    writer: Some(writer.clone()),
                })
            }
            None => Ok(Reservation { writer: None }),
        }
    }
}

/// `record`'s own fields, after its `{`. One that is not a JSON object
/// leaves a mark of its type, never silence (and never its data, which the
/// error could quote).
fn fields_of(record: &impl Serialize) -> String {
    let text = match serde_json::to_string(record) {
        Ok(text) if text.starts_with('{') && text.len() > 2 => text,
        _ => {
            let kind = std::any::type_name_of_val(record);
            tracing::error!(kind, "an audit record could not be written as a JSON object");
            serde_json::json!({"kind": "unrecorded", "type": kind}).to_string()
        }
    };
    text[1..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::*;
    use serde_json::Value;
    use std::path::{Path, PathBuf};

    #[derive(Serialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum Record {
        Remove {
            by: String,
            tool: String,
            digest: String,
        },
    }

    fn trail(dir: &Path, records: usize, max_bytes: u64) -> PathBuf {
        let path = dir.join("audit.jsonl");
        let (sink, tip) = FileSink::open(&path, max_bytes).unwrap();
        let audit = Audit::new(Box::new(sink), tip).unwrap();
        for i in 0..records {
            audit.record(Record::Remove {
                by: "ci".into(),
                tool: format!("t{i}"),
                digest: "d".into(),
            });
        }
        path
    }

    fn all(path: &Path) -> Vec<PathBuf> {
        let mut files = rotated_files(path).unwrap();
        files.push(path.to_path_buf());
        files
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    fn rewrite(path: &Path, lines: &[String]) {
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    #[test]
    fn an_untouched_trail_verifies_across_rotation_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = trail(dir.path(), 30, 1000);
        assert!(rotated_files(&path).unwrap().len() >= 2);
        // Reopened, the chain goes on where it left off.
        trail(dir.path(), 5, 1000);
        assert_eq!(verify(&all(&path)), Ok(35));
    }

    #[test]
    fn each_kind_of_tampering_is_found_at_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = trail(dir.path(), 6, 1 << 20);
        let original = lines(&path);
        let check = |change: &dyn Fn(&mut Vec<String>), line: usize, word: &str| {
            let mut changed = original.clone();
            change(&mut changed);
            rewrite(&path, &changed);
            let e = verify(std::slice::from_ref(&path)).unwrap_err();
            assert_eq!(e.line, line, "{e}");
            assert!(e.reason.contains(word), "{e}");
            rewrite(&path, &original);
        };
        check(&|l| l[2] = l[2].replace("\"t2\"", "\"t9\""), 3, "edited");
        check(&|l| l[5] = l[5].replace("\"t5\"", "\"t9\""), 6, "edited");
        check(&|l| drop(l.remove(3)), 4, "deleted or reordered");
        check(&|l| drop(l.remove(0)), 1, "missing");
        check(&|l| l.swap(1, 2), 2, "deleted or reordered");
        check(&|l| l.truncate(4), 5, "truncated");
        // A cut in the middle of a line.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &text[..text.len() - 10]).unwrap();
        let e = verify(std::slice::from_ref(&path)).unwrap_err();
        assert_eq!(e.line, 6, "{e}");
        assert!(e.reason.contains("truncated"), "{e}");
        std::fs::write(&path, text).unwrap();
        assert_eq!(verify(&[path]), Ok(6));
    }

    #[test]
    fn a_trail_cut_or_stripped_of_its_head_while_down_is_not_continued() {
        let dir = tempfile::tempdir().unwrap();
        let path = trail(dir.path(), 6, 1 << 20);
        let original = lines(&path);
        rewrite(&path, &original[..4]);
        let e = FileSink::open(&path, 1 << 20).err().unwrap().to_string();
        assert!(
            e.contains("ends at record 3 but its head names record 5"),
            "{e}"
        );
        rewrite(&path, &original);
        let head = std::fs::read(head_path(&path)).unwrap();
        std::fs::remove_file(head_path(&path)).unwrap();
        let e = FileSink::open(&path, 1 << 20).err().unwrap().to_string();
        assert!(e.contains("head file") && e.contains("missing"), "{e}");
        std::fs::write(head_path(&path), head).unwrap();
        trail(dir.path(), 1, 1 << 20);
        assert_eq!(verify(&[path]), Ok(7));
    }

    #[test]
    fn an_empty_live_file_goes_on_from_the_last_rotated_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = trail(dir.path(), 30, 1000);
        // As after a crash between a rotation's rename and its first write.
        let first = seq_of(&lines(&path)[0]).unwrap();
        std::fs::rename(&path, rotated_path(&path, first)).unwrap();
        std::fs::write(&path, "").unwrap();
        trail(dir.path(), 2, 1000);
        assert_eq!(verify(&all(&path)), Ok(32));
    }

    #[test]
    fn rotation_never_writes_over_an_earlier_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = trail(dir.path(), 3, 1 << 20);
        let first = seq_of(&lines(&path)[0]).unwrap();
        let taken = rotated_path(&path, first);
        std::fs::write(&taken, "earlier records\n").unwrap();
        let (mut sink, _) = FileSink::open(&path, 400).unwrap();
        let e = sink.append(&"x".repeat(300)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
        assert_eq!(
            std::fs::read_to_string(&taken).unwrap(),
            "earlier records\n"
        );
        assert_eq!(lines(&path).len(), 3, "the live file is kept as it was");
    }

    #[test]
    fn a_sequence_number_at_the_end_of_the_range_is_named_not_overflowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let line = format!("{{\"seq\":{},\"prev\":\"{GENESIS}\"}}", u64::MAX);
        std::fs::write(&path, format!("{line}\n")).unwrap();
        let e = FileSink::open(&path, 1 << 20).err().unwrap().to_string();
        assert!(e.contains("past the end"), "{e}");
        let e = verify(&[path]).unwrap_err();
        assert!(e.reason.contains("the trail starts at record"), "{e}");
    }

    #[test]
    fn a_rotated_file_cut_short_breaks_the_next_files_link() {
        let dir = tempfile::tempdir().unwrap();
        let path = trail(dir.path(), 30, 1000);
        let files = all(&path);
        let first = &files[0];
        let mut l = lines(first);
        l.pop();
        rewrite(first, &l);
        let e = verify(&files).unwrap_err();
        assert_eq!(e.file, files[1].display().to_string(), "{e}");
        assert_eq!(e.line, 1, "{e}");
    }

    fn key(comment: &str) -> (CheckpointKey, ssh_key::PublicKey) {
        use ssh_key::rand_core::OsRng;
        let mut key = ssh_key::PrivateKey::random(&mut OsRng, ssh_key::Algorithm::Ed25519).unwrap();
        key.set_comment(comment);
        let text = key.to_openssh(ssh_key::LineEnding::LF).unwrap();
        (CheckpointKey::from_openssh(&text).unwrap(), key.public_key().clone())
    }

    /// A signed trail of `records` records, a checkpoint every 4 and at the end.
    fn signed(path: &Path, key: CheckpointKey, records: usize) {
        let audit = Audit::open_signed(path.to_str().unwrap(), 1 << 30, "test", "0", Some((key, 4))).unwrap();
        for i in 0..records {
            audit.record(Record::Remove {
                by: "ci".into(),
                tool: format!("t{i}"),
                digest: "d".into(),
            });
        }
        audit.checkpoint();
    }

    #[test]
    fn a_record_that_is_no_json_object_leaves_a_mark_not_a_hole() {
        struct Failing;
        impl Serialize for Failing {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("secret-looking detail"))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = trail(dir.path(), 1, 1 << 30);
        let (sink, tip) = FileSink::open(&path, 1 << 30).unwrap();
        let audit = Audit::new(Box::new(sink), tip).unwrap();
        audit.record(Failing);
        audit.record("a bare string");
        audit.record(serde_json::json!({}));
        let all = lines(&path);
        assert_eq!(all.len(), 4, "{all:?}");
        for line in &all[1..] {
            assert!(line.contains("\"kind\":\"unrecorded\""), "{line}");
            assert!(!line.contains("secret-looking"), "{line}");
        }
        assert!(all[1].contains("Failing") && all[2].contains("str"), "{all:?}");
        assert_eq!(verify(&[path]).unwrap(), 4);
    }

    /// A sink that writes a line only when its gate lets one through.
    struct Gated {
        gate: mpsc::Receiver<()>,
        lines: Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl AuditSink for Gated {
        fn append(&mut self, line: &str) -> std::io::Result<()> {
            self.gate.recv().map_err(std::io::Error::other)?;
            self.lines.lock().unwrap().push(line.to_string());
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_full_backlog_refuses_new_work_and_every_reserved_record_is_written() {
        let (open, gate) = mpsc::channel();
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Gated {
            gate,
            lines: lines.clone(),
        };
        let audit = Audit::new(Box::new(sink), Tip::genesis()).unwrap().with_capacity(2);
        let first = audit.reserve().unwrap();
        let unused = audit.reserve().unwrap();
        assert_eq!(
            audit.reserve().err(),
            Some(BacklogFullError { capacity: 2 }),
            "a third record would not fit"
        );
        // A place given back unused is free again.
        drop(unused);
        let second = audit.reserve().unwrap();
        let record = |tool: &str| Record::Remove {
            by: "ci".into(),
            tool: tool.into(),
            digest: "d".into(),
        };
        let a = tokio::spawn(first.commit([record("a")]));
        let b = tokio::spawn(second.commit([record("b")]));
        // Sent but not yet written: still behind, still full.
        tokio::task::yield_now().await;
        assert!(audit.reserve().is_err(), "records waiting for the sink hold their places");
        assert!(!a.is_finished() && !b.is_finished(), "no answer before the record is written");
        open.send(()).unwrap();
        open.send(()).unwrap();
        assert!(a.await.unwrap() && b.await.unwrap());
        let written = lines.lock().unwrap().clone();
        assert_eq!(written.len(), 2, "{written:?}");
        assert!(written[0].starts_with("{\"seq\":0,") && written[0].contains("\"tool\":\"a\""));
        assert!(written[1].starts_with("{\"seq\":1,") && written[1].contains("\"tool\":\"b\""));
        assert!(audit.reserve().is_ok(), "the backlog drained");
    }

    #[test]
    fn a_signed_trail_verifies_and_its_restarts_name_their_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (k, public) = key("audit");
        signed(&path, k, 9);
        let report = verify_signed(&[path.clone()], std::slice::from_ref(&public)).unwrap();
        assert_eq!(report.records, lines(&path).len());
        assert!(report.checkpoints >= 3, "{report:?}");
        // Another key's view: not signed by it.
        let (_, stranger) = key("stranger");
        let e = verify_signed(&[path], &[stranger]).unwrap_err();
        assert!(e.reason.contains("not signed by the given key"), "{e}");
    }

    #[test]
    fn a_cut_tail_a_dropped_chain_and_a_made_up_chain_are_each_detected() {
        let dir = tempfile::tempdir().unwrap();
        let (k, public) = key("audit");
        let (k2, public2) = key("audit-2");
        let keys = [public, public2];
        let path = dir.path().join("audit.jsonl");
        signed(&path, k, 9);
        // A second run on the same file (a restart), signed by the rotated-in key.
        signed(&path, k2, 5);
        assert!(verify_signed(&[path.clone()], &keys).is_ok());
        let all = lines(&path);
        let restart = all
            .iter()
            .position(|l| l.contains("\"kind\":\"start\"") && l.contains("\"after\""))
            .expect("the second start names the first run's last checkpoint");

        // A cut tail: the last two records gone, head file moved along.
        let cut = dir.path().join("cut.jsonl");
        std::fs::write(&cut, all[..all.len() - 2].join("\n") + "\n").unwrap();
        let e = verify_signed(&[cut], &keys).unwrap_err();
        assert!(e.reason.contains("follow the last checkpoint unsigned"), "{e}");

        // A dropped chain: the first run removed, the rest renumbered and
        // rehashed by someone who can write the file but not sign.
        let dropped = dir.path().join("dropped.jsonl");
        let mut tip = Tip::genesis();
        let mut rewritten = String::new();
        for line in &all[restart..] {
            let mut v: Value = serde_json::from_str(line).unwrap();
            v["seq"] = tip.seq.into();
            v["prev"] = tip.prev.clone().into();
            let text = serde_json::to_string(&v).unwrap();
            tip = next_tip(tip.seq, &text).unwrap();
            rewritten.push_str(&text);
            rewritten.push('\n');
        }
        std::fs::write(&dropped, rewritten).unwrap();
        assert!(verify(std::slice::from_ref(&dropped)).is_ok(), "the chain itself is consistent");
        let e = verify_signed(&[dropped], &keys).unwrap_err();
        assert!(
            e.reason.contains("not signed") || e.reason.contains("was dropped"),
            "{e}"
        );

        // A made-up chain: consistent hashes, no signature.
        let made = dir.path().join("made.jsonl");
        let (sink, tip) = FileSink::open(&made, 1 << 30).unwrap();
        let fake = Audit::new(Box::new(sink), tip).unwrap();
        fake.record(Record::Remove {
            by: "mallory".into(),
            tool: "t".into(),
            digest: "d".into(),
        });
        assert!(verify(std::slice::from_ref(&made)).is_ok());
        let e = verify_signed(&[made], &keys).unwrap_err();
        assert!(e.reason.contains("no record is covered"), "{e}");
    }
}
