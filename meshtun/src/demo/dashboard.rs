//! `meshtun demo --dashboard`: the controller's dashboard (`/ui`), which it serves without a
//! token on the loopback status listener inside its namespace, forwarded to an address on
//! this machine's loopback so that a browser here can open it; and what the page shows,
//! told as text as it changes (each node's membership and reason, and the cut-offs the
//! nodes report), read from the same forwarded `/ui/data` the page polls.
//!
//! The forwarded address is loopback only: the page is served there without a token, so it
//! must not reach the network. At most [`MAX_CONNECTIONS`] connections are forwarded at a
//! time, each for at most [`CONNECTION_LIFETIME`].

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::DemoError;

/// The address `--dashboard` forwards to when given none.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8780";

/// Connections forwarded at once, at most; more are closed at once.
pub const MAX_CONNECTIONS: usize = 32;

/// How long one forwarded connection may last.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(600);

/// How often the page's data is read for the narrative.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Lines waiting to be printed, at most (the narrative reads them every tick).
const MAX_WAITING_LINES: usize = 64;

/// Checks `--dashboard ADDR`: a loopback address only.
pub fn check_listen(listen: SocketAddr) -> Result<(), String> {
    if listen.ip().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "--dashboard {listen}: the dashboard is forwarded without a token, so only to a \
         loopback address (e.g. {DEFAULT_LISTEN})"
    ))
}

/// The running forwarder and watcher; both stop when this is dropped.
#[derive(Debug)]
pub struct Dashboard {
    /// The address the page is forwarded to.
    pub listen: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    lines: mpsc::Receiver<String>,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Dashboard {
    /// Forwards `listen` to `target` inside the first of `namespaces` where it answers (the
    /// controllers' status listeners: with `--ha`, the page moves to the other controller
    /// when one is killed), and starts reading the page's data.
    pub async fn start(
        listen: SocketAddr,
        namespaces: Vec<String>,
        target: SocketAddr,
    ) -> Result<Self, DemoError> {
        check_listen(listen).map_err(DemoError::Option)?;
        let listener = TcpListener::bind(listen).await.map_err(|e| {
            DemoError::io(format!("cannot listen on {listen} for the dashboard"), e)
        })?;
        let listen = listener
            .local_addr()
            .map_err(|e| DemoError::io("the dashboard's address", e))?;
        let forward = tokio::spawn(forward(listener, namespaces, target));
        let (send, lines) = mpsc::channel(MAX_WAITING_LINES);
        let watch = tokio::spawn(watch(listen, send));
        Ok(Self {
            listen,
            tasks: vec![forward, watch],
            lines,
        })
    }

    /// The URL to open.
    pub fn url(&self) -> String {
        format!("http://{}/ui", self.listen)
    }

    /// The lines told of the page since the last call.
    pub fn new_lines(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(line) = self.lines.try_recv() {
            out.push(line);
        }
        out
    }
}

async fn forward(listener: TcpListener, namespaces: Vec<String>, target: SocketAddr) {
    let namespaces = Arc::new(namespaces);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors, say: wait rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let namespaces = Arc::clone(&namespaces);
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(upstream) = connect_first(&namespaces, target).await {
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, splice(client, upstream)).await;
            }
        });
    }
}

/// A connection to `target` inside the first of `namespaces` where it answers.
async fn connect_first(namespaces: &[String], target: SocketAddr) -> Option<TcpStream> {
    for ns in namespaces {
        if let Ok(stream) = connect_in(ns.clone(), target).await {
            return Some(stream);
        }
    }
    None
}

/// A connection to `target` made inside namespace `ns`.
async fn connect_in(ns: String, target: SocketAddr) -> std::io::Result<TcpStream> {
    let made = tokio::task::spawn_blocking(move || {
        meshtun_testbed::enter_named(&ns, || {
            std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2))
        })
    })
    .await
    .map_err(std::io::Error::other)?;
    let stream = made.map_err(std::io::Error::other)??;
    stream.set_nonblocking(true)?;
    TcpStream::from_std(stream)
}

async fn splice(mut client: TcpStream, mut upstream: TcpStream) {
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// Reads `/ui/data` through the forwarder every [`LOOK_EVERY`] and sends what changed.
async fn watch(listen: SocketAddr, lines: mpsc::Sender<String>) {
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .no_proxy()
        .build()
    else {
        return;
    };
    let url = format!("http://{listen}/ui/data");
    let mut page = PageView::default();
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        let Ok(answer) = http.get(&url).send().await else {
            continue;
        };
        let Ok(data) = answer.json::<Value>().await else {
            continue;
        };
        for line in page.changes(&data) {
            if lines.send(line).await.is_err() {
                return;
            }
        }
    }
}

/// What the page showed last: the leader (with several controllers), each node's
/// membership, and the cut-offs listed.
#[derive(Debug, Default)]
pub struct PageView {
    leader: Option<(String, u64)>,
    membership: HashMap<String, String>,
    cutoffs: HashMap<(u64, String, String), u64>,
}

impl PageView {
    /// The lines telling what `data` (a `/ui/data` answer) shows that the last one did not:
    /// a new leader or term; a node whose membership changed, with its reason; a denied node newly reported cut
    /// off, with who cut it off and how long after the decision.
    pub fn changes(&mut self, data: &Value) -> Vec<String> {
        let mut lines = Vec::new();
        let cluster = &data["cluster"];
        if let (Some(leader), Some(term)) = (cluster["leader"].as_str(), cluster["term"].as_u64()) {
            if self
                .leader
                .as_ref()
                .is_none_or(|(l, t)| l != leader || *t != term)
            {
                self.leader = Some((leader.to_owned(), term));
                let serving = data["instance"].as_str().unwrap_or("?");
                lines.push(format!(
                    "dashboard: {leader} leads in term {term} (the page is served by {serving})"
                ));
            }
        }
        for node in data["nodes"].as_array().into_iter().flatten() {
            let (Some(id), Some(state)) = (node["id"].as_str(), node["membership"].as_str()) else {
                continue;
            };
            if self.membership.get(id).map(String::as_str) == Some(state) {
                continue;
            }
            self.membership.insert(id.to_owned(), state.to_owned());
            let reason = node["reason"].as_str().unwrap_or("no reason given");
            lines.push(format!("dashboard: {id} {state}: {reason}"));
        }
        let mut new: BTreeMap<(u64, String), Vec<(String, u64)>> = BTreeMap::new();
        for c in data["node_cutoffs"]["listed"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let (Some(epoch), Some(peer), Some(by), Some(ms)) = (
                c["epoch"].as_u64(),
                c["peer"].as_str(),
                c["by"].as_str(),
                c["ms"].as_u64(),
            ) else {
                continue;
            };
            let key = (epoch, peer.to_owned(), by.to_owned());
            // A denied node dropping its peers is not news; its peers dropping it is.
            let denied = self.membership.get(peer).is_some_and(|m| m == "DENIED");
            if self.cutoffs.insert(key, ms).is_none() && denied {
                new.entry((epoch, peer.to_owned()))
                    .or_default()
                    .push((by.to_owned(), ms));
            }
        }
        for ((epoch, peer), mut by) in new {
            by.sort();
            let who: Vec<String> = by.iter().map(|(n, ms)| format!("{n} {ms} ms")).collect();
            lines.push(format!(
                "dashboard: {peer} cut off in epoch {epoch} by {} after the decision (as the \
                 nodes report it)",
                who.join(", ")
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_loopback_addresses_are_forwarded_to() {
        assert!(check_listen("127.0.0.1:8780".parse().unwrap()).is_ok());
        assert!(check_listen("[::1]:0".parse().unwrap()).is_ok());
        for open in ["0.0.0.0:8780", "192.0.2.1:8780", "[::]:8780"] {
            let err = check_listen(open.parse().unwrap()).unwrap_err();
            assert!(err.contains("loopback"), "{err}");
        }
    }

    #[test]
    fn changes_are_told_once() {
        let mut page = PageView::default();
        let allowed = json!({"nodes": [
            {"id": "node-a", "membership": "ALLOWED", "reason": "overall 0.90 meets 0.70"},
            {"id": "node-c", "membership": "ALLOWED", "reason": "overall 0.90 meets 0.70"}
        ], "node_cutoffs": {"listed": []}});
        assert_eq!(page.changes(&allowed).len(), 2);
        assert!(page.changes(&allowed).is_empty(), "nothing new");
        let denied = json!({"nodes": [
            {"id": "node-a", "membership": "ALLOWED", "reason": "overall 0.90 meets 0.70"},
            {"id": "node-c", "membership": "DENIED", "reason": "overall 0.40 is below 0.70"}
        ], "node_cutoffs": {"listed": [
            {"epoch": 9, "peer": "node-c", "by": "node-b", "ms": 6},
            {"epoch": 9, "peer": "node-c", "by": "node-a", "ms": 4},
            {"epoch": 9, "peer": "node-a", "by": "node-c", "ms": 7}
        ]}});
        assert_eq!(
            page.changes(&denied),
            [
                "dashboard: node-c DENIED: overall 0.40 is below 0.70",
                "dashboard: node-c cut off in epoch 9 by node-a 4 ms, node-b 6 ms after the \
                 decision (as the nodes report it)"
            ]
        );
        assert!(page.changes(&denied).is_empty());
        let led = json!({"cluster": {"leader": "ctl-2", "term": 2}, "instance": "ctl-2"});
        assert_eq!(
            page.changes(&led),
            ["dashboard: ctl-2 leads in term 2 (the page is served by ctl-2)"]
        );
        assert!(page.changes(&led).is_empty());
        assert!(page.changes(&json!({"nodes": "junk"})).is_empty());
    }
}
