//! Headless Chromium in a network namespace, driven over its DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: fd 3 in, fd 4 out, one JSON message per NUL-terminated
//! frame). A pipe rather than a port: the browser runs inside the controller's namespace,
//! and no socket has to cross it.
//!
//! One page, attached in flat mode. Network events are collected so that a test can read
//! back every response body the page fetched. The browser runs as root with `--no-sandbox`
//! and a temporary profile; it is killed by its pid on drop.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::netns::Netns;

/// How long one DevTools command may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The Chromium binary Debian installs.
pub const CHROMIUM: &str = "chromium";

/// Whether Debian's Chromium can run here: `Err` says why not (for `require_host`).
pub fn chromium_present() -> Result<(), String> {
    match std::process::Command::new(CHROMIUM)
        .arg("--version")
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("`chromium --version` failed: {out:?}")),
        Err(e) => Err(format!(
            "`chromium` cannot run ({e}); apt-get install chromium"
        )),
    }
}

/// A response the page received.
#[derive(Debug, Clone)]
pub struct Response {
    /// Its URL.
    pub url: String,
    /// Its HTTP status.
    pub status: u64,
    /// Its headers, names lower-cased.
    pub headers: BTreeMap<String, String>,
}

/// A running headless Chromium with one page.
pub struct Browser {
    child: Child,
    to: File,
    from: Receiver<Value>,
    next_id: u64,
    session: String,
    /// Responses by request id, in arrival order of their ids.
    responses: Vec<(String, Response)>,
    finished: Vec<String>,
    _profile: TempDir,
}

impl Browser {
    /// Starts Chromium inside `ns` and opens a blank page with the network domain enabled.
    pub fn launch(ns: &Netns) -> Self {
        let profile = tempfile::Builder::new()
            .prefix("meshtun-chromium-")
            .tempdir()
            .expect("cannot create a browser profile directory");
        // Close-on-exec: no other child inherits them; the browser gets its copies as 3 and 4.
        let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
        let (to_read, to_write) = nix::unistd::pipe2(cloexec).expect("pipe");
        let (from_read, from_write) = nix::unistd::pipe2(cloexec).expect("pipe");
        let user_data = format!("--user-data-dir={}", profile.path().display());
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--window-size=1400,1700",
            "--remote-debugging-pipe",
            user_data.as_str(),
            "about:blank",
        ];
        let mut cmd = ns.command(CHROMIUM, &args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let (child_in, child_out) = (to_read.as_raw_fd(), from_write.as_raw_fd());
        // SAFETY: between fork and exec only dup2 and close, which are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                // Duplicated first, in case either end already is 3 or 4.
                let a = nix::libc::dup(child_in);
                let b = nix::libc::dup(child_out);
                if a < 0 || b < 0 || nix::libc::dup2(a, 3) < 0 || nix::libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                nix::libc::close(a);
                nix::libc::close(b);
                Ok(())
            });
        }
        let child = ns.spawn(&mut cmd);
        drop((to_read, from_write));
        let from = reader(from_read);
        let mut browser = Self {
            child,
            to: File::from(to_write),
            from,
            next_id: 0,
            session: String::new(),
            responses: Vec::new(),
            finished: Vec::new(),
            _profile: profile,
        };
        let target = browser.send(None, "Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().unwrap_or_default().to_owned();
        let attached = browser.send(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session in {attached}"))
            .to_owned();
        browser.call("Page.enable", json!({}));
        browser.call("Network.enable", json!({}));
        browser
    }

    /// The browser's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Calls `method` on the page; its result (fails the test on a protocol error).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(Some(&session), method, params)
    }

    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut frame = message.to_string().into_bytes();
        frame.push(0);
        self.to
            .write_all(&frame)
            .unwrap_or_else(|e| panic!("writing {method} to chromium: {e}"));
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = match self.from.recv_timeout(left) {
                Ok(reply) => reply,
                Err(RecvTimeoutError::Timeout) => panic!("chromium did not answer {method}"),
                Err(RecvTimeoutError::Disconnected) => panic!("chromium exited during {method}"),
            };
            if reply["id"].as_u64() == Some(id) {
                if let Some(error) = reply.get("error") {
                    panic!("{method}: {error}");
                }
                return reply["result"].clone();
            }
            self.event(&reply);
        }
    }

    /// Reads the events that arrived so far.
    pub fn pump(&mut self) {
        while let Ok(event) = self.from.try_recv() {
            self.event(&event);
        }
    }

    fn event(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Network.responseReceived") => {
                let r = &params["response"];
                let headers = r["headers"]
                    .as_object()
                    .map(|h| {
                        h.iter()
                            .map(|(k, v)| {
                                (k.to_lowercase(), v.as_str().unwrap_or_default().to_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let response = Response {
                    url: r["url"].as_str().unwrap_or_default().to_owned(),
                    status: r["status"].as_u64().unwrap_or_default(),
                    headers,
                };
                let id = params["requestId"].as_str().unwrap_or_default().to_owned();
                self.responses.push((id, response));
            }
            Some("Network.loadingFinished") => {
                let id = params["requestId"].as_str().unwrap_or_default().to_owned();
                self.finished.push(id);
            }
            _ => {}
        }
    }

    /// Sends `headers` with every request of the page from now on.
    pub fn set_headers(&mut self, headers: Value) {
        self.call("Network.setExtraHTTPHeaders", json!({ "headers": headers }));
    }

    /// Loads `url` in the page (returns once the navigation is committed); the browser's
    /// error if it failed (`net::ERR_INVALID_AUTH_CREDENTIALS` for a 401 with a challenge,
    /// headless Chromium answering no credentials).
    pub fn navigate(&mut self, url: &str) -> Result<(), String> {
        let result = self.call("Page.navigate", json!({ "url": url }));
        match result.get("errorText").and_then(Value::as_str) {
            Some(error) => Err(error.to_owned()),
            None => Ok(()),
        }
    }

    /// Evaluates `expression` in the page, awaiting a promise; its value as JSON.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("evaluating {expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// A PNG of the whole page.
    pub fn screenshot(&mut self) -> Vec<u8> {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .expect("a screenshot that is not base64")
    }

    /// Every response received so far.
    pub fn responses(&mut self) -> Vec<Response> {
        self.pump();
        self.responses.iter().map(|(_, r)| r.clone()).collect()
    }

    /// The bodies of the finished responses still held by the browser, with their URLs.
    pub fn bodies(&mut self) -> Vec<(String, String)> {
        self.pump();
        let finished = self.finished.clone();
        let mut bodies = Vec::new();
        for (id, response) in self.responses.clone() {
            if !finished.contains(&id) {
                continue;
            }
            let session = self.session.clone();
            self.next_id += 1;
            let result = self.try_send(
                &session,
                "Network.getResponseBody",
                json!({ "requestId": id }),
            );
            let Some(result) = result else {
                continue;
            };
            let body = result["body"].as_str().unwrap_or_default();
            let body = if result["base64Encoded"].as_bool() == Some(true) {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .unwrap_or_default();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                body.to_owned()
            };
            bodies.push((response.url, body));
        }
        bodies
    }

    /// Like [`Browser::call`], `None` on a protocol error (a body the browser dropped).
    fn try_send(&mut self, session: &str, method: &str, params: Value) -> Option<Value> {
        let id = self.next_id;
        let message = json!({"id": id, "method": method, "params": params, "sessionId": session});
        let mut frame = message.to_string().into_bytes();
        frame.push(0);
        self.to.write_all(&frame).ok()?;
        loop {
            let reply = self.from.recv_timeout(CALL_TIMEOUT).ok()?;
            if reply["id"].as_u64() == Some(id) {
                return reply
                    .get("error")
                    .is_none()
                    .then(|| reply["result"].clone());
            }
            self.event(&reply);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads NUL-terminated JSON messages from `fd` on a thread of its own.
fn reader(fd: OwnedFd) -> Receiver<Value> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut input = BufReader::new(File::from(fd));
        let mut frame = Vec::new();
        loop {
            frame.clear();
            match input.read_until(0, &mut frame) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if frame.last() == Some(&0) {
                frame.pop();
            }
            let Ok(message) = serde_json::from_slice::<Value>(&frame) else {
                continue;
            };
            if tx.send(message).is_err() {
                return;
            }
        }
    });
    rx
}
