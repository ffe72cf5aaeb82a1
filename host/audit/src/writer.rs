//! One writer thread per trail: records are serialized by whoever makes
//! them and appended, in the order they were sent, by the writer alone, so
//! a file write never runs on (or blocks) an async worker. The backlog is
//! bounded where it is made: a call reserves its record's place before it
//! runs, and is refused when the trail is that far behind (`reserve`),
//! rather than run with a record that could be lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use crate::chain::{Chain, Signing};

/// What the writer is asked to do, in order.
pub(crate) enum Job {
    /// Append a record (its JSON fields, after the object's `{`).
    Record(String, Ack),
    /// Sign a checkpoint if any record came since the last one.
    Checkpoint(Ack),
    /// Sign checkpoints from now on.
    Sign(Box<Signing>),
}

/// Who waits for a job to be done, and how: the answer is whether the
/// record reached the sink.
pub(crate) enum Ack {
    /// A thread, blocked until it is done.
    Thread(mpsc::SyncSender<bool>),
    /// A task, awaiting it.
    Task(tokio::sync::oneshot::Sender<bool>),
}

impl Ack {
    fn send(self, done: bool) {
        // A waiter that gave up (a dropped request) needs no answer.
        match self {
            Ack::Thread(tx) => drop(tx.send(done)),
            Ack::Task(tx) => drop(tx.send(done)),
        }
    }
}

/// The sending side, shared by every handle of one trail.
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
    /// Records sent or reserved, not yet written.
    backlog: Arc<AtomicUsize>,
    capacity: usize,
}

/// The trail is too far behind to take another call's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit trail has {capacity} records waiting to be written; retry in a moment")]
pub struct BacklogFullError {
    /// How many records may wait.
    pub capacity: usize,
}

impl Writer {
    /// Start the thread that appends to `chain`.
    pub(crate) fn start(chain: Chain, capacity: usize) -> std::io::Result<Writer> {
        let (jobs, rx) = mpsc::channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        let written = backlog.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write(chain, rx, &written))?;
        Ok(Writer {
            jobs,
            backlog,
            capacity,
        })
    }

    /// The same trail, with room for `capacity` records.
    pub(crate) fn resized(&self, capacity: usize) -> Writer {
        Writer {
            jobs: self.jobs.clone(),
            backlog: self.backlog.clone(),
            capacity,
        }
    }

    /// Send `job`; false if the writer is gone (it panicked).
    pub(crate) fn send(&self, job: Job) -> bool {
        self.jobs.send(job).is_ok()
    }

    /// Send a record and count it in the backlog.
    pub(crate) fn send_record(&self, fields: String, ack: Ack) -> bool {
        self.backlog.fetch_add(1, Ordering::AcqRel);
        if self.send(Job::Record(fields, ack)) {
            return true;
        }
        self.backlog.fetch_sub(1, Ordering::AcqRel);
        false
    }

    /// Take a place in the backlog, unless it is full.
    pub(crate) fn reserve(&self) -> Result<(), BacklogFullError> {
        self.backlog
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .map(drop)
            .map_err(|_| BacklogFullError {
                capacity: self.capacity,
            })
    }

    /// Give back a reserved place, used (its record is sent) or not.
    pub(crate) fn release(&self) {
        self.backlog.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The writer's loop: until every handle is dropped, and then what is left.
fn write(mut chain: Chain, jobs: mpsc::Receiver<Job>, backlog: &AtomicUsize) {
    while let Some(job) = next(&jobs) {
        match job {
            Job::Record(fields, ack) => {
                let done = chain.record(&fields);
                backlog.fetch_sub(1, Ordering::AcqRel);
                ack.send(done);
            }
            Job::Checkpoint(ack) => {
                if chain.signing.as_ref().is_some_and(|s| s.since > 0) {
                    chain.checkpoint();
                }
                ack.send(true);
            }
            Job::Sign(signing) => chain.signing = Some(*signing),
        }
    }
}

/// Yields before the writer sleeps: under load the next record comes within
/// microseconds, and a writer put to sleep and woken for each record costs
/// two context switches a call. A yield gives the core to any thread that
/// has work, so an idle wait spends no core another thread needed.
const YIELDS: usize = 64;

/// The next job, or none when every handle is gone.
fn next(jobs: &mpsc::Receiver<Job>) -> Option<Job> {
    for _ in 0..YIELDS {
        match jobs.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
    jobs.recv().ok()
}
