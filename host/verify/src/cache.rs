//! Tokens already verified, by digest. A browser behind the ALB and an agent
//! with a bearer token send the same token on every request, and checking a
//! signature costs more than the tool call it guards. Only successes are
//! kept; a hit must be the same bytes (SHA-256) and passes the time checks
//! again, and no entry outlives [`MAX_AGE_SECS`], so a key the issuer
//! withdraws stops counting soon after.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::VerifiedUser;

/// Entries kept at most; past it, expired ones go, then all.
const CAPACITY: usize = 4096;
/// How long a verification is reused at most, in seconds.
const MAX_AGE_SECS: i64 = 300;

pub(crate) struct Verified {
    entries: Mutex<HashMap<[u8; 32], (VerifiedUser, i64)>>,
}

impl Verified {
    pub(crate) fn new() -> Verified {
        Verified {
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The user `token` was verified as, if it still holds at `now_unix`.
    pub(crate) fn get(&self, token: &str, now_unix: i64) -> Option<VerifiedUser> {
        let key = digest(token);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (user, until) = entries.get(&key)?;
        if now_unix < *until && user.claims().check_time(now_unix).is_ok() {
            return Some(user.clone());
        }
        entries.remove(&key);
        None
    }

    /// Remember that `token` verified as `user` at `now_unix`.
    pub(crate) fn put(&self, token: &str, user: &VerifiedUser, now_unix: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.retain(|_, (u, until)| {
                now_unix < *until && u.claims().check_time(now_unix).is_ok()
            });
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(digest(token), (user.clone(), now_unix + MAX_AGE_SECS));
    }
}

/// Now, in Unix seconds.
pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Claims, Proof};

    fn user(sub: &str, exp: i64) -> VerifiedUser {
        let claims = Claims {
            sub: sub.into(),
            exp: Some(exp),
            ..Claims::default()
        };
        VerifiedUser::new(claims, Proof::SignedIn).unwrap()
    }

    #[test]
    fn a_hit_is_the_same_bytes_within_expiry_and_max_age() {
        let cache = Verified::new();
        cache.put("a.b.c", &user("alice", 350), 100);
        assert_eq!(cache.get("a.b.c", 300).unwrap().id().as_str(), "alice");
        assert!(cache.get("a.b.d", 300).is_none(), "other bytes");
        assert!(cache.get("a.b.c ", 300).is_none(), "other bytes");
        assert!(cache.get("a.b.c", 1_000).is_none(), "expired");
        assert!(
            cache.get("a.b.c", 500).is_none(),
            "an expired entry is gone"
        );

        cache.put("long", &user("bob", 10_000), 100);
        assert!(cache.get("long", 100 + MAX_AGE_SECS - 1).is_some());
        assert!(
            cache.get("long", 100 + MAX_AGE_SECS).is_none(),
            "past max age"
        );
    }

    #[test]
    fn it_stays_within_capacity() {
        let cache = Verified::new();
        for i in 0..CAPACITY + 10 {
            cache.put(&format!("t{i}"), &user("alice", 1_000), 100);
        }
        let n = cache.entries.lock().unwrap().len();
        assert!(n <= CAPACITY, "{n}");
        assert!(cache.get(&format!("t{}", CAPACITY + 9), 200).is_some());
    }
}
