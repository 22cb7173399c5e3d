//! Peer host names, resolved off the enforcement path. A bundle is enforced the moment it is
//! due, whatever its peers' names do: lookups run in the background, all at once within one
//! time budget, and their results come back to the scheduler (the one writer of this cache),
//! which then re-sends the update with the new endpoints. A failed lookup is remembered for a
//! while, so a name that never answers costs one lookup per [`RETRY_FAILED_AFTER_MS`], not
//! one per bundle.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::sync::mpsc;

/// How long one host name may take to resolve.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a name whose lookup failed is not looked up again.
pub const RETRY_FAILED_AFTER_MS: u64 = 60_000;

/// Lookups running at once.
const PARALLEL_LOOKUPS: usize = 16;

/// Names remembered at most (resolved or failed); beyond, the cache starts again.
const MAX_NAMES: usize = 4096;

/// Resolves a `host:port` text to one address, or `None` (the function logs why).
pub type Lookup = Arc<dyn Fn(String) -> BoxFuture<'static, Option<SocketAddr>> + Send + Sync>;

/// A lookup's result: the text and its address, if it resolved.
pub type Looked = (String, Option<SocketAddr>);

/// The system resolver, with [`RESOLVE_TIMEOUT`].
pub fn system_lookup() -> Lookup {
    Arc::new(|text: String| {
        Box::pin(async move {
            let lookup =
                tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(text.clone()));
            match lookup.await {
                Ok(Ok(mut addrs)) => addrs.next(),
                Ok(Err(error)) => {
                    tracing::warn!(target: "meshtun::gate", "cannot resolve peer endpoint `{text}`: {error}");
                    None
                }
                Err(_) => {
                    tracing::warn!(target: "meshtun::gate", "cannot resolve peer endpoint `{text}` within {} s", RESOLVE_TIMEOUT.as_secs());
                    None
                }
            }
        })
    })
}

/// What is known of peer endpoint texts.
#[derive(Debug, Default)]
pub struct Endpoints {
    resolved: HashMap<String, SocketAddr>,
    /// Names whose lookup failed, with the Unix ms time they may be tried again.
    failed: HashMap<String, u64>,
    /// Names being looked up.
    pending: HashSet<String>,
}

impl Endpoints {
    /// The address of `text`: itself if numeric, else what its lookup gave, if anything yet.
    pub fn get(&self, text: &str) -> Option<SocketAddr> {
        text.parse()
            .ok()
            .or_else(|| self.resolved.get(text).copied())
    }

    /// The names among `texts` to look up now (marked pending): not numeric, not known, not
    /// already being looked up, and not failed within [`RETRY_FAILED_AFTER_MS`].
    pub fn to_look_up<'a>(
        &mut self,
        texts: impl IntoIterator<Item = &'a str>,
        now_ms: u64,
    ) -> Vec<String> {
        if self.resolved.len() + self.failed.len() > MAX_NAMES {
            self.resolved.clear();
            self.failed.clear();
        }
        let mut names = Vec::new();
        for text in texts {
            let known = text.parse::<SocketAddr>().is_ok()
                || self.resolved.contains_key(text)
                || self.pending.contains(text)
                || self.failed.get(text).is_some_and(|retry| *retry > now_ms);
            if !known {
                self.pending.insert(text.to_owned());
                names.push(text.to_owned());
            }
        }
        names
    }

    /// Records a lookup's result; true if `text` now resolves to a new address.
    pub fn record(&mut self, (text, addr): Looked, now_ms: u64) -> bool {
        self.pending.remove(&text);
        match addr {
            Some(addr) => {
                self.failed.remove(&text);
                self.resolved.insert(text, addr) != Some(addr)
            }
            None => {
                self.failed
                    .insert(text, now_ms.saturating_add(RETRY_FAILED_AFTER_MS));
                false
            }
        }
    }
}

/// Looks up `names` in the background, `PARALLEL_LOOKUPS` at a time, sending each result
/// to `results` as it comes.
pub fn spawn_lookups(names: Vec<String>, lookup: Lookup, results: mpsc::Sender<Looked>) {
    if names.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let mut looked = futures::stream::iter(names)
            .map(|name| {
                let lookup = lookup.clone();
                async move {
                    let addr = lookup(name.clone()).await;
                    (name, addr)
                }
            })
            .buffer_unordered(PARALLEL_LOOKUPS);
        while let Some(result) = looked.next().await {
            if results.send(result).await.is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_endpoints_need_no_lookup() {
        let mut e = Endpoints::default();
        assert!(e
            .to_look_up(["192.0.2.7:51820", "[2001:db8::7]:1"], 0)
            .is_empty());
        assert_eq!(
            e.get("192.0.2.7:51820"),
            Some("192.0.2.7:51820".parse().unwrap())
        );
    }

    #[test]
    fn a_name_is_looked_up_once_at_a_time_and_a_failure_is_remembered() {
        let mut e = Endpoints::default();
        let name = "never.example:51820";
        assert_eq!(e.to_look_up([name], 0), vec![name.to_owned()]);
        assert!(
            e.to_look_up([name], 0).is_empty(),
            "looked up twice at once"
        );
        assert!(!e.record((name.to_owned(), None), 1_000));
        assert!(e
            .to_look_up([name], 1_000 + RETRY_FAILED_AFTER_MS - 1)
            .is_empty());
        assert_eq!(e.to_look_up([name], 1_000 + RETRY_FAILED_AFTER_MS).len(), 1);
        let addr: SocketAddr = "198.51.100.4:51820".parse().unwrap();
        assert!(e.record((name.to_owned(), Some(addr)), 2_000_000));
        assert_eq!(e.get(name), Some(addr));
        assert!(
            !e.record((name.to_owned(), Some(addr)), 2_000_001),
            "no change"
        );
    }
}
