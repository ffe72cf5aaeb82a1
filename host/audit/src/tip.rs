//! Where a chain of records left off, and the hash that links each line
//! to the one before it.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::GENESIS;

/// Where a chain left off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tip {
    /// The next record's sequence number.
    pub seq: u64,
    /// The sha256 of the last line.
    pub prev: String,
    /// The last signed checkpoint in the chain, if any.
    pub checkpoint: Option<Checkpoint>,
}

/// A checkpoint record, as a later one names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checkpoint {
    /// Its sequence number.
    pub seq: u64,
    /// The sha256 of its line.
    pub hash: String,
}

impl Tip {
    /// Where a new chain starts.
    pub fn genesis() -> Tip {
        Tip {
            seq: 0,
            prev: GENESIS.to_string(),
            checkpoint: None,
        }
    }
}

/// The checkpoint `line` (record `seq`) is, if it is one.
pub(crate) fn checkpoint_of(seq: u64, line: &str) -> Option<Checkpoint> {
    line.contains("\"kind\":\"checkpoint\"")
        .then(|| Checkpoint {
            seq,
            hash: hash(line),
        })
}

pub(crate) fn hash(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}
