//! Why a request to the controller failed ([`ClientError`]), and what is read of the
//! controller's error answers: the reason quoted, the `Retry-After` honoured, the newest
//! benchmark sequence number of a 409.

use std::time::Duration;

use meshtun_proto::cutoff::CutOffError;
use meshtun_proto::enroll::EnrollError;
use reqwest::StatusCode;
use serde::Deserialize;

use super::MAX_RETRY_AFTER;
use crate::gate::bundle::BundleCheckError;

/// The most of an error answer read for its reason.
pub(super) const MAX_ERROR_BODY: usize = 64 * 1024;

/// The longest reason quoted from an error answer.
const MAX_REASON: usize = 300;

/// Why a request to the controller failed. Never carries a key or a token.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The `ca_file` could not be read or holds no PEM certificate.
    #[error("cannot use the controller CA file {}: {reason}", .file.display())]
    CaFile {
        /// The file.
        file: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The controller URL is not usable.
    #[error("bad controller URL: {0}")]
    Url(String),
    /// The node id is not valid.
    #[error("`{0}` is not a valid node id")]
    NodeId(String),
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client")]
    Setup(#[source] reqwest::Error),
    /// The controller could not be reached, or the exchange broke off or timed out.
    #[error("{what}: cannot reach the controller{}", if source.is_timeout() { " (timed out)" } else { "" })]
    Http {
        /// What was being done.
        what: &'static str,
        /// The transport error, with its causes.
        #[source]
        source: reqwest::Error,
    },
    /// 401: the signature, its time or its nonce was refused.
    #[error("{what}: the controller refused our credentials (401): {reason}")]
    Unauthorized {
        /// What was being done.
        what: &'static str,
        /// The controller's reason.
        reason: String,
    },
    /// 403: authenticated but not allowed (another node's resource, a used or expired invite).
    #[error("{what}: the controller forbade the request (403): {reason}")]
    Forbidden {
        /// What was being done.
        what: &'static str,
        /// The controller's reason.
        reason: String,
    },
    /// 409: a replayed request or a sequence number that is not newer.
    #[error("{what}: the controller refused a replayed or stale request (409): {reason}")]
    Conflict {
        /// What was being done.
        what: &'static str,
        /// The controller's reason.
        reason: String,
        /// The newest sequence number the controller holds for this node, if it said.
        latest_seq: Option<u64>,
    },
    /// 422: the body was refused as invalid.
    #[error("{what}: the controller rejected the request as invalid (422): {reason}")]
    Rejected {
        /// What was being done.
        what: &'static str,
        /// The controller's reason.
        reason: String,
    },
    /// 429: this node is over its request quota, or the controller has too many waiting
    /// requests; retry after the delay it gave.
    #[error("{what}: the controller asks us to slow down (429, retry in {} s): {reason}", retry_after.as_secs())]
    Throttled {
        /// What was being done.
        what: &'static str,
        /// The controller's `Retry-After` (at least 1 s, at most [`MAX_RETRY_AFTER`]).
        retry_after: Duration,
        /// The controller's reason.
        reason: String,
    },
    /// 5xx: the controller failed.
    #[error("{what}: the controller failed ({status}): {reason}")]
    Server {
        /// What was being done.
        what: &'static str,
        /// The HTTP status.
        status: u16,
        /// The controller's reason.
        reason: String,
    },
    /// Any other status.
    #[error("{what}: unexpected answer {status} from the controller: {reason}")]
    Status {
        /// What was being done.
        what: &'static str,
        /// The HTTP status.
        status: u16,
        /// The answer's reason.
        reason: String,
    },
    /// A success answer that is not what the API promises.
    #[error("{what}: the controller's answer is malformed: {reason}")]
    Response {
        /// What was being done.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The bundle failed a check; nothing of it is used.
    #[error("fetching the bundle")]
    Bundle(#[from] BundleCheckError),
    /// The cut-off notice failed a check; nothing of it is used.
    #[error("fetching the cut-off notice")]
    CutOff(#[from] CutOffError),
    /// The enrollment reply is not signed by the pinned controller key, was altered, or
    /// answers another request; nothing of it is used.
    #[error("enrolling")]
    Reply(#[source] EnrollError),
}

/// The controller's error answer: `{"error": "...", "latest_seq": N}` (the latter on a 409
/// for a benchmark's sequence number only).
#[derive(Deserialize)]
pub(super) struct ErrorBody {
    pub(super) error: String,
    #[serde(default)]
    pub(super) latest_seq: Option<u64>,
}

/// A `Retry-After` in seconds (an HTTP date, or nothing, counts as 1 s), within 1 s and
/// [`MAX_RETRY_AFTER`].
pub(super) fn retry_after(header: Option<&str>) -> Duration {
    let secs = header
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(secs.max(1)).min(MAX_RETRY_AFTER)
}

impl ClientError {
    /// How long the controller asked us to wait, for a 429.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether this failure says the instance asked is gone or broken, so that another
    /// instance should be tried: no connection or no answer in time, a 5xx, or an answer that
    /// is malformed or does not verify. A refusal (401, 403, 409, 422, 429) is an answer from
    /// a working instance.
    pub fn instance_lost(&self) -> bool {
        matches!(
            self,
            ClientError::Http { .. }
                | ClientError::Server { .. }
                | ClientError::Response { .. }
                | ClientError::Bundle(_)
                | ClientError::CutOff(_)
        )
    }

    /// The newest benchmark sequence number the controller holds, for a 409 that said.
    pub fn latest_seq(&self) -> Option<u64> {
        match self {
            ClientError::Conflict { latest_seq, .. } => *latest_seq,
            _ => None,
        }
    }
}

/// The `error` of a JSON error body, else the body's text, else the status's name; escaped
/// and shortened to one line.
pub(super) fn reason_of(status: StatusCode, body: &[u8]) -> String {
    let text = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(answer) => answer.error,
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    if text.is_empty() {
        return status.canonical_reason().unwrap_or("no reason").to_owned();
    }
    let mut line: String = text.escape_debug().take(MAX_REASON).collect();
    if line.len() < text.escape_debug().count() {
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_come_from_the_error_body() {
        let status = StatusCode::CONFLICT;
        assert_eq!(
            reason_of(status, br#"{"error":"benchmark seq 1 is a replay"}"#),
            "benchmark seq 1 is a replay"
        );
        assert_eq!(reason_of(status, b"  plain text\n"), "plain text");
        assert_eq!(reason_of(status, b""), "Conflict");
        assert_eq!(reason_of(status, b"a\nb"), "a\\nb");
        let long = reason_of(status, "x".repeat(1000).as_bytes());
        assert_eq!(long.chars().count(), MAX_REASON + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn retry_after_is_honoured_within_bounds_15() {
        assert_eq!(retry_after(Some("7")), Duration::from_secs(7));
        assert_eq!(retry_after(Some("0")), Duration::from_secs(1));
        assert_eq!(retry_after(None), Duration::from_secs(1));
        assert_eq!(
            retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Duration::from_secs(1)
        );
        assert_eq!(retry_after(Some("999999999999")), MAX_RETRY_AFTER);
    }
}
