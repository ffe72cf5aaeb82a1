//! The scan of a call's traffic for its credentials: each response to a
//! credentialed request (headers, body as it streams, trailers), and the
//! tool's output, errors and log lines. The search itself is `airlock-scan`.

mod body;
mod echo_watch;

pub use crate::report::{Place, Redaction};
pub use airlock_scan::{Encoding, Found, Redactor, RedactorCache, StreamRedactor};
pub(crate) use body::RedactingBody;
pub(crate) use echo_watch::EchoWatch;
