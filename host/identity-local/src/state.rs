//! The consent session's state machine: where a session stands and what
//! moves it. A leaf, so that the store (which applies each transition as a
//! compare-and-set) and the session steps (which ask for them) share it
//! without depending on each other.

use airlock_identity::Secret;

/// Where a consent session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Waiting for the user at the provider.
    Pending,
    /// The provider sent a code; waiting for CompleteResourceTokenAuth.
    Authorized,
    /// The right user is binding it; the code is being exchanged (once).
    Exchanging,
    /// Bound and stored.
    Completed,
    /// Denied, expired, bound by the wrong user, or the exchange failed. Spent.
    Failed,
}

/// What happens to a session.
#[derive(Debug)]
pub(crate) enum Event<'a> {
    /// The provider redirected back with a code.
    CodeReceived(&'a Secret),
    /// The user who started it is binding it.
    BindingStarted,
    /// The code was exchanged and the token stored.
    TokenStored,
    /// It ends without a token, for this reason.
    Failed(&'a str),
}

impl Event<'_> {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Event::CodeReceived(_) => "code received",
            Event::BindingStarted => "binding started",
            Event::TokenStored => "token stored",
            Event::Failed(_) => "failed",
        }
    }
}

impl Status {
    /// The transitions, all of them.
    pub(crate) fn next(self, event: &Event<'_>) -> Option<Status> {
        use Status::*;
        match (self, event) {
            (Pending, Event::CodeReceived(_)) => Some(Authorized),
            (Authorized, Event::BindingStarted) => Some(Exchanging),
            (Exchanging, Event::TokenStored) => Some(Completed),
            (Pending | Authorized | Exchanging, Event::Failed(_)) => Some(Failed),
            _ => None,
        }
    }

    /// Completed and failed sessions are spent: their code and verifier are wiped.
    pub(crate) fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Failed)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Authorized => "authorized",
            Status::Exchanging => "exchanging",
            Status::Completed => "completed",
            Status::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Status {
        match s {
            "pending" => Status::Pending,
            "authorized" => Status::Authorized,
            "exchanging" => Status::Exchanging,
            "completed" => Status::Completed,
            _ => Status::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transitions_are_exactly_these() {
        use Status::*;
        let code = Secret::new("c");
        let events = [
            Event::CodeReceived(&code),
            Event::BindingStarted,
            Event::TokenStored,
            Event::Failed("x"),
        ];
        let mut allowed = Vec::new();
        for from in [Pending, Authorized, Exchanging, Completed, Failed] {
            for e in &events {
                if let Some(to) = from.next(e) {
                    allowed.push((from.as_str(), e.name(), to.as_str()));
                }
            }
        }
        assert_eq!(
            allowed,
            [
                ("pending", "code received", "authorized"),
                ("pending", "failed", "failed"),
                ("authorized", "binding started", "exchanging"),
                ("authorized", "failed", "failed"),
                ("exchanging", "token stored", "completed"),
                ("exchanging", "failed", "failed"),
            ]
        );
        for s in [Pending, Authorized, Exchanging, Completed, Failed] {
            assert_eq!(Status::parse(s.as_str()), s);
        }
    }
}
