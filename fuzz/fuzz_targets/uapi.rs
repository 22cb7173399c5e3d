//! Arbitrary bytes through the UAPI request reader, the `set` parser and the `get` reply
//! parser.
//!
//! Beyond "never panics", it checks that how the bytes arrive does not change the requests
//! read, that no accepted `set` body breaks the limits, and that writing a parsed reply and
//! parsing it again gives the same text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtun::uapi::{
    parse_get_reply, parse_set, write_get, Limits, Request, RequestReader, UapiError,
};

/// Small limits, so that the fuzzer reaches them.
fn limits() -> Limits {
    Limits {
        max_line: 200,
        max_request: 2048,
        max_lines: 32,
        ..Limits::default()
    }
}

/// Every request read from `data` fed `chunk` bytes at a time, and whether reading failed.
fn read_requests(data: &[u8], chunk: usize) -> (Vec<Request>, bool) {
    let mut reader = RequestReader::new(limits());
    let mut requests = Vec::new();
    for piece in data.chunks(chunk) {
        reader.feed(piece);
        loop {
            match reader.next_request() {
                Ok(Some(request)) => requests.push(request),
                Ok(None) => break,
                Err(err) => return (requests, failed(&err)),
            }
        }
    }
    match reader.finish() {
        Ok(Some(request)) => requests.push(request),
        Ok(None) => {}
        Err(err) => return (requests, failed(&err)),
    }
    (requests, false)
}

/// The reader only ever reports broken framing or a bad `get` line.
fn failed(err: &UapiError) -> bool {
    let framing = matches!(err, UapiError::Protocol { .. } | UapiError::Invalid { .. });
    assert!(framing, "unexpected reader error: {err}");
    true
}

fuzz_target!(|input: &[u8]| {
    let Some((first, data)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(*first % 32) + 1;

    let (requests, failed) = read_requests(data, chunk);
    let (whole, whole_failed) = read_requests(data, data.len().max(1));
    assert_eq!(requests, whole, "chunking changed the requests");
    assert_eq!(failed, whole_failed, "chunking changed the outcome");

    let limits = limits();
    for request in &requests {
        if let Request::Set(body) = request {
            assert!(body.lines().count() <= limits.max_lines);
            assert!(body.lines().all(|line| line.len() <= limits.max_line));
            let _ = parse_set(body.lines());
        }
    }

    let text = String::from_utf8_lossy(data);
    let _ = parse_set(text.split('\n'));

    if let Ok(status) = parse_get_reply("fuzz0", &text) {
        let mut once = String::new();
        write_get(&status, &mut once);
        let again = match parse_get_reply("fuzz0", &once) {
            Ok(again) => again,
            Err(err) => panic!("our own reply does not parse: {err}\n{once}"),
        };
        let mut twice = String::new();
        write_get(&again, &mut twice);
        assert_eq!(once, twice, "write/parse is not stable");
    }
});
