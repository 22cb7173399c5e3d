//! Splitting a client's byte stream into UAPI requests, within fixed limits.
//!
//! [`RequestReader`] does no I/O: the server feeds it whatever it read and asks for complete
//! requests. It keeps at most one partial line plus one read's worth of bytes, refuses lines
//! and requests over the [`Limits`], and zeroizes what it held, since `set` bodies carry keys.
//! Its buffers are sized up front for the largest line plus one read, and when a `set` body
//! outgrows its buffer the text moves to a larger one and the old one is wiped: they are
//! never reallocated in place, which would leave copies of keys in freed memory.

use std::time::Duration;

use zeroize::Zeroizing;

use super::error::UapiError;

/// Bytes the server reads from a client at a time. The reader's buffer holds one partial
/// line plus one such read without growing.
pub const READ_CHUNK: usize = 8192;

/// The first capacity of a `set` body's text; it grows by wiped copies up to the limit.
const FIRST_BODY_CAPACITY: usize = 4096;

/// Appends `bytes` to `buf`. If they do not fit, the content moves to a new buffer of twice
/// the size (at least) and the old one is wiped as it is dropped, instead of being
/// reallocated in place with a copy left in freed memory.
fn extend_wiped(buf: &mut Zeroizing<Vec<u8>>, bytes: &[u8]) {
    let needed = buf.len().saturating_add(bytes.len());
    if needed > buf.capacity() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(needed.max(buf.capacity() * 2)));
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    buf.extend_from_slice(bytes);
}

/// [`extend_wiped`] for text.
fn push_wiped(text: &mut Zeroizing<String>, more: &str) {
    let needed = text.len().saturating_add(more.len());
    if needed > text.capacity() {
        let capacity = needed.max(text.capacity() * 2).max(FIRST_BODY_CAPACITY);
        let mut bigger = Zeroizing::new(String::with_capacity(capacity));
        bigger.push_str(text);
        *text = bigger;
    }
    text.push_str(more);
}

/// Bounds on what one client may send, so that no client can exhaust memory or hang a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted line, in bytes, without its newline.
    pub max_line: usize,
    /// Largest accepted `set` body, in bytes.
    pub max_request: usize,
    /// Most lines accepted in one `set` body.
    pub max_lines: usize,
    /// Time a client has to send a complete request (measured from the end of the previous
    /// one, or from connecting), and to take our answer.
    pub request_timeout: Duration,
}

impl Default for Limits {
    /// 4 KiB lines, 8 MiB and 256 Ki lines per request, 10 s per request.
    fn default() -> Self {
        Self {
            max_line: 4096,
            max_request: 8 << 20,
            max_lines: 256 << 10,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// One complete request.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `get=1` followed by a blank line.
    Get,
    /// `set=1`, its lines, and a blank line (or the end of the stream).
    Set(SetBody),
}

/// The lines of a `set` request, without `set=1` and the final blank line.
///
/// The text may contain keys, so it is zeroized when dropped and its `Debug` only counts lines.
#[derive(PartialEq, Eq, Default)]
pub struct SetBody {
    text: Zeroizing<String>,
}

impl SetBody {
    /// The body's lines, in order, without newlines. The first is line 2 of the request.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.text.split_terminator('\n')
    }
}

impl std::fmt::Debug for SetBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SetBody({} lines)", self.lines().count())
    }
}

#[derive(Debug)]
enum State {
    /// Waiting for an operation line.
    Idle,
    /// Read `get=1`, waiting for the blank line.
    Get,
    /// Inside a `set` body.
    Set { body: SetBody, lines: usize },
    /// A framing error ended the stream; nothing more is read.
    Failed,
}

/// Splits a byte stream into [`Request`]s (see the module documentation).
#[derive(Debug)]
pub struct RequestReader {
    limits: Limits,
    buf: Zeroizing<Vec<u8>>,
    state: State,
}

impl RequestReader {
    /// A reader enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            buf: Zeroizing::new(Vec::with_capacity(
                limits.max_line.min(1 << 20) + 1 + READ_CHUNK,
            )),
            state: State::Idle,
        }
    }

    /// Appends bytes read from the client. Call [`Self::next_request`] until it returns
    /// `Ok(None)` after each call, so that the buffer stays small: fed at most
    /// `READ_CHUNK` bytes at a time, it never grows.
    pub fn feed(&mut self, bytes: &[u8]) {
        if !matches!(self.state, State::Failed) {
            extend_wiped(&mut self.buf, bytes);
        }
    }

    /// True when no request has begun: the client may close the connection here cleanly.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle) && self.buf.is_empty()
    }

    /// The next complete request, `Ok(None)` if more bytes are needed.
    ///
    /// After an error the stream is out of step and every later call fails: answer the error
    /// and close the connection.
    pub fn next_request(&mut self) -> Result<Option<Request>, UapiError> {
        // The buffer is taken out while lines are handed to the state machine.
        let mut buf = std::mem::take(&mut self.buf);
        let mut consumed = 0;
        let result = self.scan(&buf, &mut consumed);
        let consumed = consumed.min(buf.len());
        buf.drain(..consumed);
        self.buf = buf;
        if result.is_err() {
            self.fail();
        }
        result
    }

    /// The request cut short by the end of the stream, if any.
    ///
    /// Like wireguard-go, a `set` body ended by the end of the stream instead of a blank line
    /// is still a request; a final line without a newline belongs to it. Anything else left
    /// over is dropped.
    pub fn finish(&mut self) -> Result<Option<Request>, UapiError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let State::Set { mut body, lines } = state else {
            self.buf.clear();
            return Ok(None);
        };
        let rest = std::mem::take(&mut *self.buf);
        let rest = Zeroizing::new(rest);
        if !rest.is_empty() {
            let line_no = lines + 2;
            if rest.len() > self.limits.max_line {
                return Err(self.too_long(line_no));
            }
            self.push_set_line(&mut body, lines, &rest, line_no)?;
        }
        Ok(Some(Request::Set(body)))
    }

    fn scan(&mut self, buf: &[u8], consumed: &mut usize) -> Result<Option<Request>, UapiError> {
        if matches!(self.state, State::Failed) {
            return Err(UapiError::protocol(
                0,
                "an earlier error ended this connection's requests",
            ));
        }
        loop {
            let rest = buf.get(*consumed..).unwrap_or_default();
            let Some(newline) = rest.iter().position(|b| *b == b'\n') else {
                if rest.len() > self.limits.max_line {
                    return Err(self.too_long(self.line_no()));
                }
                return Ok(None);
            };
            let line_no = self.line_no();
            if newline > self.limits.max_line {
                return Err(self.too_long(line_no));
            }
            let line = rest.get(..newline).unwrap_or_default();
            *consumed += newline + 1;
            if let Some(request) = self.on_line(line, line_no)? {
                return Ok(Some(request));
            }
        }
    }

    fn on_line(&mut self, line: &[u8], line_no: usize) -> Result<Option<Request>, UapiError> {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Idle => match line {
                b"get=1" => self.state = State::Get,
                b"set=1" => {
                    self.state = State::Set {
                        body: SetBody::default(),
                        lines: 0,
                    }
                }
                other => {
                    // Only the part before '=' is quoted: a stray `private_key=...` line
                    // must not put the key into the log.
                    let op = String::from_utf8_lossy(other);
                    let name = super::error::shown(op.split('=').next().unwrap_or_default());
                    return Err(UapiError::protocol(
                        line_no,
                        format!("unknown operation {name}, expected get=1 or set=1"),
                    ));
                }
            },
            State::Get if line.is_empty() => {
                self.state = State::Idle;
                return Ok(Some(Request::Get));
            }
            State::Get => {
                return Err(UapiError::invalid(
                    line_no,
                    "get",
                    "get=1 must be followed by a blank line",
                ))
            }
            State::Set { body, .. } if strip_cr(line).is_empty() => {
                self.state = State::Idle;
                return Ok(Some(Request::Set(body)));
            }
            State::Set { mut body, lines } => {
                self.push_set_line(&mut body, lines, line, line_no)?;
                self.state = State::Set {
                    body,
                    lines: lines + 1,
                };
            }
            State::Failed => return Err(UapiError::protocol(line_no, "stream already failed")),
        }
        Ok(None)
    }

    fn push_set_line(
        &self,
        body: &mut SetBody,
        lines: usize,
        line: &[u8],
        line_no: usize,
    ) -> Result<(), UapiError> {
        let line = strip_cr(line);
        if lines >= self.limits.max_lines {
            return Err(UapiError::protocol(
                line_no,
                format!(
                    "a set request may have at most {} lines",
                    self.limits.max_lines
                ),
            ));
        }
        if body.text.len() + line.len() + 1 > self.limits.max_request {
            return Err(UapiError::protocol(
                line_no,
                format!(
                    "a set request may have at most {} bytes",
                    self.limits.max_request
                ),
            ));
        }
        let text = std::str::from_utf8(line)
            .map_err(|_| UapiError::protocol(line_no, "the line is not valid UTF-8"))?;
        push_wiped(&mut body.text, text);
        push_wiped(&mut body.text, "\n");
        Ok(())
    }

    /// The request line number the next complete line will have.
    fn line_no(&self) -> usize {
        match &self.state {
            State::Idle | State::Failed => 1,
            State::Get => 2,
            State::Set { lines, .. } => lines + 2,
        }
    }

    fn too_long(&self, line_no: usize) -> UapiError {
        UapiError::protocol(
            line_no,
            format!("the line is longer than {} bytes", self.limits.max_line),
        )
    }

    fn fail(&mut self) {
        self.state = State::Failed;
        self.buf.clear();
    }
}

/// wireguard-go accepts `\r\n` line ends in `set` bodies; so do we.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(reader: &mut RequestReader) -> Result<Vec<Request>, UapiError> {
        let mut out = Vec::new();
        while let Some(request) = reader.next_request()? {
            out.push(request);
        }
        Ok(out)
    }

    fn lines(request: &Request) -> Vec<&str> {
        match request {
            Request::Set(body) => body.lines().collect(),
            Request::Get => vec!["<get>"],
        }
    }

    #[test]
    fn splits_pipelined_requests() {
        let mut reader = RequestReader::new(Limits::default());
        reader.feed(b"get=1\n\nset=1\nlisten_port=1\nfwmark=2\n\nget=1\n\n");
        let requests = read_all(&mut reader).unwrap();
        assert_eq!(requests.len(), 3);
        assert_eq!(requests[0], Request::Get);
        assert_eq!(lines(&requests[1]), ["listen_port=1", "fwmark=2"]);
        assert_eq!(requests[2], Request::Get);
        assert!(reader.is_idle());
    }

    #[test]
    fn reassembles_requests_fed_byte_by_byte() {
        let mut reader = RequestReader::new(Limits::default());
        let mut requests = Vec::new();
        for byte in b"set=1\nprivate_key=00\r\n\r\nget=1\n\n" {
            reader.feed(&[*byte]);
            requests.extend(read_all(&mut reader).unwrap());
        }
        assert_eq!(requests.len(), 2);
        assert_eq!(lines(&requests[0]), ["private_key=00"]);
        assert_eq!(requests[1], Request::Get);
    }

    #[test]
    fn crlf_operation_line_is_refused() {
        let mut reader = RequestReader::new(Limits::default());
        reader.feed(b"set=1\r\n");
        let err = reader.next_request().unwrap_err();
        assert_eq!(err.errno(), libc::EPROTO);
    }

    #[test]
    fn waits_for_the_blank_line() {
        let mut reader = RequestReader::new(Limits::default());
        reader.feed(b"set=1\nlisten_port=1\n");
        assert!(reader.next_request().unwrap().is_none());
        assert!(!reader.is_idle());
        reader.feed(b"\n");
        let request = reader.next_request().unwrap().unwrap();
        assert_eq!(lines(&request), ["listen_port=1"]);
    }

    #[test]
    fn end_of_stream_completes_a_set_like_wireguard_go() {
        let mut reader = RequestReader::new(Limits::default());
        reader.feed(b"set=1\nlisten_port=1\nfwmark=3");
        assert!(reader.next_request().unwrap().is_none());
        let request = reader.finish().unwrap().unwrap();
        assert_eq!(lines(&request), ["listen_port=1", "fwmark=3"]);

        let mut reader = RequestReader::new(Limits::default());
        reader.feed(b"get=1\n");
        assert!(reader.next_request().unwrap().is_none());
        assert!(reader.finish().unwrap().is_none());
    }

    #[test]
    fn unknown_operation_is_a_protocol_error() {
        let mut reader = RequestReader::new(Limits::default());
        reader.feed(b"foo=1\n\n");
        let err = reader.next_request().unwrap_err();
        assert_eq!(err.errno(), libc::EPROTO);
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(err.to_string().contains("\"foo\""), "{err}");
        // The stream stays failed.
        reader.feed(b"get=1\n\n");
        assert!(reader.next_request().is_err());
    }

    #[test]
    fn a_stray_key_line_is_not_echoed() {
        let mut reader = RequestReader::new(Limits::default());
        reader.feed(b"private_key=f0e949d14570f5f58d656119d8ab8dbf\n");
        let err = reader.next_request().unwrap_err().to_string();
        assert!(err.contains("\"private_key\""), "{err}");
        assert!(!err.contains("f0e949"), "{err}");
    }

    #[test]
    fn get_with_trailing_text_is_invalid() {
        let mut reader = RequestReader::new(Limits::default());
        reader.feed(b"get=1\nx\n");
        let err = reader.next_request().unwrap_err();
        assert_eq!(err.errno(), libc::EINVAL);
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn overlong_line_is_refused_before_its_newline_arrives() {
        let limits = Limits {
            max_line: 16,
            ..Limits::default()
        };
        let mut reader = RequestReader::new(limits);
        reader.feed(b"set=1\nlisten_port=1\n");
        assert!(reader.next_request().unwrap().is_none());
        reader.feed(&[b'a'; 17]);
        let err = reader.next_request().unwrap_err();
        assert_eq!(err.errno(), libc::EPROTO);
        assert!(err.to_string().contains("line 3"), "{err}");
        assert!(err.to_string().contains("longer than 16 bytes"), "{err}");
        // A line of exactly the limit is fine.
        let mut reader = RequestReader::new(limits);
        reader.feed(b"set=1\naaaaaaaaaaaaaaaa\n\n");
        assert!(reader.next_request().unwrap().is_some());
    }

    #[test]
    fn too_many_lines_or_bytes_are_refused() {
        let limits = Limits {
            max_lines: 3,
            ..Limits::default()
        };
        let mut reader = RequestReader::new(limits);
        reader.feed(b"set=1\na=1\nb=2\nc=3\nd=4\n\n");
        let err = reader.next_request().unwrap_err();
        assert!(err.to_string().contains("line 5"), "{err}");
        assert!(err.to_string().contains("at most 3 lines"), "{err}");

        let limits = Limits {
            max_request: 10,
            ..Limits::default()
        };
        let mut reader = RequestReader::new(limits);
        reader.feed(b"set=1\nabcd=1\nefgh=2\n\n");
        let err = reader.next_request().unwrap_err();
        assert!(err.to_string().contains("at most 10 bytes"), "{err}");
    }

    /// Finding #21: the buffer holding a client's bytes (keys, in a `set`) is never
    /// reallocated, which would leave a copy in freed memory: it holds the longest partial
    /// line plus one read from the start.
    #[test]
    fn the_read_buffer_never_grows_with_the_longest_line_and_a_full_read_21() {
        let limits = Limits::default();
        let mut reader = RequestReader::new(limits);
        let (capacity, address) = (reader.buf.capacity(), reader.buf.as_ptr());
        reader.feed(b"set=1\n");
        assert!(reader.next_request().unwrap().is_none());
        reader.feed(&vec![b'a'; limits.max_line]);
        assert!(reader.next_request().unwrap().is_none());
        let mut read = b"\n".to_vec();
        while read.len() + 4 <= READ_CHUNK {
            read.extend_from_slice(b"x=1\n");
        }
        read.resize(READ_CHUNK, b'y');
        reader.feed(&read);
        assert!(reader.next_request().unwrap().is_none());
        assert_eq!(
            reader.buf.capacity(),
            capacity,
            "the buffer was reallocated"
        );
        assert_eq!(reader.buf.as_ptr(), address, "the buffer was reallocated");
    }

    #[test]
    fn a_set_body_keeps_every_line_as_it_moves_to_larger_buffers() {
        let mut reader = RequestReader::new(Limits::default());
        let mut request = b"set=1\n".to_vec();
        for i in 0..2000 {
            request.extend_from_slice(format!("k{i}=v{i}\n").as_bytes());
        }
        request.push(b'\n');
        reader.feed(&request);
        let Some(Request::Set(body)) = reader.next_request().unwrap() else {
            panic!("no set request")
        };
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len(), 2000);
        assert_eq!(lines.last(), Some(&"k1999=v1999"));
    }

    #[test]
    fn non_utf8_body_is_a_protocol_error() {
        let mut reader = RequestReader::new(Limits::default());
        reader.feed(b"set=1\nlisten_port=\xff\n\n");
        let err = reader.next_request().unwrap_err();
        assert_eq!(err.errno(), libc::EPROTO);
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }

    #[test]
    fn set_body_debug_hides_its_text() {
        let mut reader = RequestReader::new(Limits::default());
        reader.feed(b"set=1\nprivate_key=0123\nfwmark=1\n\n");
        let Some(Request::Set(body)) = reader.next_request().unwrap() else {
            panic!("no set request")
        };
        assert_eq!(format!("{body:?}"), "SetBody(2 lines)");
        assert_eq!(format!("{:?}", Request::Set(body)), "Set(SetBody(2 lines))");
    }
}
