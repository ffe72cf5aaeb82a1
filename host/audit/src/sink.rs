//! Where a trail's lines go: standard output, or a file rotated by size
//! whose head file names the last record written.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::tip::{Tip, checkpoint_of, hash};

/// Where chained lines go.
pub trait AuditSink: Send {
    /// Append one line (no newline in it).
    fn append(&mut self, line: &str) -> std::io::Result<()>;
}

/// Standard output: for a log driver (ECS to CloudWatch) to carry.
pub struct StdoutSink;

impl AuditSink for StdoutSink {
    fn append(&mut self, line: &str) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()
    }
}

/// A file, rotated by size: `audit.jsonl` is the live file; a full one is
/// renamed `audit.<first seq>.jsonl` and the chain goes on in a new live file.
/// `<live>.head` names the last record, so that a cut at a line end shows.
pub struct FileSink {
    path: PathBuf,
    file: File,
    head: File,
    size: u64,
    max_bytes: u64,
    first_seq: Option<u64>,
    seq: u64,
}

impl FileSink {
    /// Open the live file at `path` and find where its chain left off.
    pub fn open(path: impl Into<PathBuf>, max_bytes: u64) -> std::io::Result<(FileSink, Tip)> {
        let path = path.into();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut tip = Tip::genesis();
        let mut checkpoint = None;
        let mut first_seq = None;
        if let Ok(file) = File::open(&path) {
            for line in BufReader::new(file).lines() {
                let line = line?;
                let seq = seq_of(&line).ok_or_else(|| {
                    std::io::Error::other(format!(
                        "{} holds a line that is not an audit record; run `host audit verify`",
                        path.display()
                    ))
                })?;
                first_seq.get_or_insert(seq);
                checkpoint = checkpoint_of(seq, &line).or(checkpoint);
                tip = next_tip(seq, &line).ok_or_else(|| {
                    std::io::Error::other(format!(
                        "{} holds a record numbered past the end; run `host audit verify`",
                        path.display()
                    ))
                })?;
            }
        }
        tip.checkpoint = checkpoint;
        // An empty live file (just rotated) goes on from the last rotated one.
        if first_seq.is_none()
            && let Some(last) = last_rotated(&path)?
        {
            tip = last;
        }
        check_head(&path, &tip)?;
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        let head = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(head_path(&path))?;
        let sink = FileSink {
            path,
            file,
            head,
            size,
            max_bytes,
            first_seq,
            seq: tip.seq,
        };
        Ok((sink, tip))
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let Some(first) = self.first_seq else {
            return Ok(());
        };
        self.file.sync_all()?;
        let rotated = rotated_path(&self.path, first);
        // Never over an earlier file: that would delete records.
        if rotated.try_exists()? {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists already; the trail is not rotated over it",
                    rotated.display()
                ),
            ));
        }
        std::fs::rename(&self.path, &rotated)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        self.first_seq = None;
        Ok(())
    }
}

impl AuditSink for FileSink {
    fn append(&mut self, line: &str) -> std::io::Result<()> {
        if self.size + line.len() as u64 + 1 > self.max_bytes {
            self.rotate()?;
        }
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        if let Err(e) = self.file.write_all(&bytes) {
            // No half line for the next record to run into.
            let _ = self.file.set_len(self.size);
            return Err(e);
        }
        self.size += bytes.len() as u64;
        let seq = written_seq(line).unwrap_or(self.seq);
        self.first_seq.get_or_insert(seq);
        self.seq = seq.saturating_add(1);
        // Fixed width, written in place: one write, no truncation.
        let head = format!("{{\"seq\":{seq},\"hash\":\"{}\"}}", hash(line));
        // The record is written: a head that lags shows at verify; it does not undo the record.
        if let Err(e) = self
            .head
            .write_all_at(format!("{head:<HEAD_WIDTH$}").as_bytes(), 0)
        {
            tracing::error!("audit head {}: {e}", head_path(&self.path).display());
        }
        Ok(())
    }
}

/// The head file's width: room for any `seq` and the hash, space-padded.
const HEAD_WIDTH: usize = 128;

pub(crate) fn head_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".head");
    PathBuf::from(name)
}

pub(crate) fn rotated_path(path: &Path, first_seq: u64) -> PathBuf {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("audit");
    let ext = path.extension().and_then(|s| s.to_str()).unwrap_or("jsonl");
    path.with_file_name(format!("{stem}.{first_seq:012}.{ext}"))
}

/// The rotated files beside `path`, oldest first.
pub fn rotated_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("audit");
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with(&format!("{stem}."))
                        && n.split('.')
                            .nth(1)
                            .is_some_and(|s| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()))
                })
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    files.sort();
    Ok(files)
}

pub(crate) fn last_rotated(path: &Path) -> std::io::Result<Option<Tip>> {
    let Some(last) = rotated_files(path)?.pop() else {
        return Ok(None);
    };
    let mut tip: Option<Tip> = None;
    let mut checkpoint = None;
    for line in BufReader::new(File::open(&last)?).lines() {
        let line = line?;
        if let Some(seq) = seq_of(&line) {
            checkpoint = checkpoint_of(seq, &line).or(checkpoint);
            tip = next_tip(seq, &line);
        }
    }
    Ok(tip.map(|t| Tip { checkpoint, ..t }))
}

/// The tip after record `seq` (`line`); `None` past the last number.
pub(crate) fn next_tip(seq: u64, line: &str) -> Option<Tip> {
    Some(Tip {
        seq: seq.checked_add(1)?,
        prev: hash(line),
        checkpoint: None,
    })
}

/// The head names the last record written. A trail that ends elsewhere was
/// cut or edited while the host was down: going on would write over the
/// evidence (the head moves on), so the host does not start on it.
pub(crate) fn check_head(path: &Path, tip: &Tip) -> std::io::Result<()> {
    let head = match std::fs::read_to_string(head_path(path)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let head = head.trim();
    let refuse = |found: String| {
        Err(std::io::Error::other(format!(
            "{}: the trail ends at {} but {found}: it was cut or edited while the host was down; run `host audit verify`, keep the files as evidence, and move them aside to start a new trail",
            path.display(),
            match tip.seq {
                0 => "no record".to_string(),
                n => format!("record {}", n - 1),
            },
        )))
    };
    if head.is_empty() {
        return match tip.seq {
            0 => Ok(()),
            _ => refuse(format!(
                "its head file ({}) is missing",
                head_path(path).display()
            )),
        };
    }
    let head: Value = serde_json::from_str(head).or_else(|_| {
        refuse(format!(
            "its head file ({}) is not a head",
            head_path(path).display()
        ))
        .map(|()| Value::Null)
    })?;
    let seq = head.get("seq").and_then(Value::as_u64);
    let hash = head.get("hash").and_then(Value::as_str);
    if seq.and_then(|s| s.checked_add(1)) != Some(tip.seq) || hash != Some(tip.prev.as_str()) {
        return refuse(format!(
            "its head names record {}",
            seq.map_or("?".into(), |s| s.to_string())
        ));
    }
    Ok(())
}

/// The sequence number of a line this host just wrote (`{"seq":N,...`).
pub(crate) fn written_seq(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("{\"seq\":")?;
    rest[..rest.find(',')?].parse().ok()
}

pub(crate) fn seq_of(line: &str) -> Option<u64> {
    serde_json::from_str::<Value>(line)
        .ok()?
        .get("seq")?
        .as_u64()
}
