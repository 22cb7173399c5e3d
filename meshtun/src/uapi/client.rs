//! A minimal UAPI client, for `meshtun show` and tests: one request per connection, as `wg`.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use zeroize::{Zeroize, Zeroizing};

use super::error::UapiError;

/// Time allowed for connecting, sending the request and receiving the whole answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer accepted (a `get` for thousands of peers fits easily).
const MAX_REPLY: usize = 64 << 20;

/// Sends `get=1` to the daemon at `path` and returns its raw answer, up to and including the
/// blank line that ends it. Read it with [`super::parse_get_reply`].
///
/// The answer contains the private key, hence the zeroizing string.
pub async fn request_get(path: &Path) -> Result<Zeroizing<String>, UapiError> {
    exchange(path, b"get=1\n\n").await
}

/// Sends a `set` request with the given body lines (`key=value`, one per line) to the daemon
/// at `path`. A non-zero errno in the answer becomes [`UapiError::Remote`].
pub async fn request_set(path: &Path, body: &str) -> Result<(), UapiError> {
    let mut request = Zeroizing::new(String::with_capacity(body.len() + 8));
    request.push_str("set=1\n");
    for line in body.lines().filter(|line| !line.is_empty()) {
        request.push_str(line);
        request.push('\n');
    }
    request.push('\n');
    let reply = exchange(path, request.as_bytes()).await?;
    let errno = reply
        .strip_prefix("errno=")
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .and_then(|n| n.parse::<i64>().ok())
        .ok_or_else(|| UapiError::reply(1, "expected errno=N and a blank line"))?;
    if errno == 0 {
        Ok(())
    } else {
        let errno = i32::try_from(errno.unsigned_abs()).unwrap_or(i32::MAX);
        Err(UapiError::Remote { errno })
    }
}

/// Sends `request` and reads until the answer's final blank line or the end of the stream.
async fn exchange(path: &Path, request: &[u8]) -> Result<Zeroizing<String>, UapiError> {
    let socket_err = |action, source| UapiError::Socket {
        path: path.to_owned(),
        action,
        source,
    };
    let work = async {
        let mut stream = UnixStream::connect(path)
            .await
            .map_err(|e| socket_err("connect", e))?;
        stream
            .write_all(request)
            .await
            .map_err(|e| socket_err("send", e))?;
        let mut reply = Zeroizing::new(Vec::new());
        let mut chunk = Zeroizing::new(vec![0u8; 8192]);
        while !reply.ends_with(b"\n\n") {
            let count = stream
                .read(chunk.as_mut_slice())
                .await
                .map_err(|e| socket_err("receive", e))?;
            if count == 0 {
                break;
            }
            if reply.len() + count > MAX_REPLY {
                return Err(UapiError::reply(
                    0,
                    format!("the answer exceeds {MAX_REPLY} bytes"),
                ));
            }
            reply.extend_from_slice(chunk.get(..count).unwrap_or_default());
        }
        into_text(std::mem::take(&mut *reply))
    };
    tokio::time::timeout(CLIENT_TIMEOUT, work)
        .await
        .map_err(|_| UapiError::Timeout {
            path: path.to_owned(),
            timeout: CLIENT_TIMEOUT,
        })?
}

fn into_text(bytes: Vec<u8>) -> Result<Zeroizing<String>, UapiError> {
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(err) => {
            let valid = err.utf8_error().valid_up_to();
            let mut bytes = err.into_bytes();
            let line_no = bytes.iter().take(valid).filter(|b| **b == b'\n').count() + 1;
            bytes.zeroize();
            Err(UapiError::reply(line_no, "the answer is not valid UTF-8"))
        }
    }
}
