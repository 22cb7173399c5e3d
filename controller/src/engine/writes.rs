//! The writes that change what the engine holds in memory: each commits to the store, then
//! brings the engine in step, so that no caller has to remember the second half.

use meshtun_proto::auth::RequestSignature;
use meshtun_proto::enroll::Enrollment;
use meshtun_proto::statement::SignedStatement;
use meshtun_proto::IdentityPublic;

use super::Engine;
use crate::model::{BenchmarkRecord, NodeRecord};
use crate::store::StoreError;

impl Engine {
    /// Stores a node's benchmark, checked against `raw_body` and `sig` (the signed request
    /// over `path`, naming the controller key `controller`), and has [`Engine::check_on_benchmarks`] look for newly failing nodes
    /// within [`super::DENY_CHECK_INTERVAL`]. Blocking (SQLite).
    pub fn submit_benchmark(
        &self,
        controller: &IdentityPublic,
        record: &BenchmarkRecord,
        raw_body: &[u8],
        sig: &RequestSignature,
        path: &str,
    ) -> Result<(), StoreError> {
        self.store
            .insert_benchmark(controller, record, raw_body, sig, path)?;
        self.benchmarks.notify_one();
        Ok(())
    }

    /// Stores an evaluator's signed statement, received at `received_ms`, after the API
    /// checked the request it came in; returns its id. The store checks the evaluator, its
    /// key, its dimensions and the subject again in its transaction
    /// ([`crate::store::Store::insert_statement`]). As a benchmark does, a stored statement
    /// has [`Engine::check_on_benchmarks`] look for nodes it now fails. Blocking.
    pub fn submit_statement(
        &self,
        signed: &SignedStatement,
        received_ms: u64,
    ) -> Result<u64, StoreError> {
        let id = self.store.insert_statement(signed, received_ms)?;
        self.benchmarks.notify_one();
        Ok(id)
    }

    /// Stores a node's signed peer observation, received at `received_ms`; the store checks
    /// the observer's key, the subject and the dimensions again in its transaction
    /// ([`crate::store::Store::insert_observation`]). A stored observation has
    /// [`Engine::check_on_benchmarks`] look for nodes it now fails. Blocking.
    pub fn submit_observation(
        &self,
        signed: &SignedStatement,
        received_ms: u64,
    ) -> Result<u64, StoreError> {
        let id = self.store.insert_observation(signed, received_ms)?;
        self.benchmarks.notify_one();
        Ok(id)
    }

    /// Redeems the invite `enrollment` proves at `now_ms` and enrolls the node, which may
    /// sign requests at once. The caller checks the proofs of key possession first.
    /// Blocking (SQLite).
    pub fn enroll(&self, enrollment: &Enrollment, now_ms: u64) -> Result<NodeRecord, StoreError> {
        let node = self
            .store
            .redeem_invite(enrollment, &self.network, now_ms)?;
        self.refresh_nodes()?;
        Ok(node)
    }

    /// Removes node `id` (false if there was none); its requests are refused at once, and
    /// the next deny check ([`Engine::check_deny`]) rotates it out of the mesh. Blocking.
    pub fn remove_node(&self, id: &str) -> Result<bool, StoreError> {
        let removed = self.store.remove_node(id)?;
        self.refresh_nodes()?;
        Ok(removed)
    }
}
