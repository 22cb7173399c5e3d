//! The node's client for the controller's API: submitting benchmarks, fetching bundles, and
//! enrolling with an invite ticket.
//!
//! Benchmark submissions and bundle requests are signed with the node's Ed25519 identity key
//! over the pinned controller key, the method, the path and query exactly as sent, the body,
//! the node id, the time and a fresh nonce ([`RequestSignature`]). A controller that answers
//! 429 is given the time it asks for (`Retry-After`). Bundles are accepted only after [`verify_bundle`] and
//! the freshness checks; cut-off notices (served as `application/vnd.meshtun.cutoff+json`
//! to requests that ask with `cutoff=`) only after [`verify_cutoff`]. Redirects are not followed (they would change the signed path).
//! HTTPS uses rustls with the web PKI roots.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use meshtun_proto::auth::RequestSignature;
use meshtun_proto::bundle::SignedBundle;
use meshtun_proto::candidates::CandidateReport;
use meshtun_proto::cutoff::{CUTOFF_CONTENT_TYPE, MAX_CUTOFF_BYTES};
use meshtun_proto::enroll::{
    EnrollError, EnrollRequest, EnrollResponse, SignedEnrollReply, Ticket, MAX_REPLY_BYTES,
};
use meshtun_proto::membership::{MembershipPublic, MembershipSig};
use meshtun_proto::paths::PathReport;
use meshtun_proto::report::{describe, Chain};
use meshtun_proto::wire::{valid_node_id, Benchmark};
use meshtun_proto::{EpochId, IdentityKey, KeySet, PrivateKey};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use super::bundle::{verify_bundle, Trust, VerifiedBundle};
use super::cache::MAX_CACHE_BYTES;
use super::cutoff::{verify_cutoff, Fetched};
use super::instances::Instances;
use super::unix_ms;
use crate::config::{controller_url, ControllerSettings};

mod error;
mod statements;

pub use error::ClientError;
use error::{reason_of, retry_after, ErrorBody, MAX_ERROR_BODY};

/// Time allowed to open a connection to the controller.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed for a benchmark submission or an enrollment.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an idle connection to the controller is kept for reuse.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Added to a long-poll's wait for the whole bundle request's time limit.
pub const LONG_POLL_MARGIN: Duration = Duration::from_secs(10);

/// The longest `Retry-After` honoured (a controller cannot park a node for longer).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

const SUBMIT: &str = "submitting a benchmark";
const FETCH: &str = "fetching the bundle";
const ENROLL: &str = "enrolling";
const REPORT: &str = "reporting candidate endpoints";
const PATHS: &str = "reporting the paths to peers";

/// A node's client for its controller, over one of the controller's instances at a time
/// ([`Instances`]).
pub struct ControllerClient {
    http: reqwest::Client,
    instances: Instances,
    /// Set when the last failure moved to another instance that should be tried at once.
    retry_now: AtomicBool,
    controller_keys: KeySet,
    /// The operator's membership key: peers of a bundle must carry its signature.
    membership_key: Option<MembershipPublic>,
    node_id: String,
    identity: IdentityKey,
    wg_private: PrivateKey,
}

impl std::fmt::Debug for ControllerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerClient")
            .field("urls", &self.instances.urls())
            .field("controller_keys", &self.controller_keys)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl ControllerClient {
    /// A client for the controller at `url` (http or https, no path), whose bundles must be
    /// signed with one of `controller_keys`, acting as `node_id` with `identity`, and opening keys
    /// with the interface's `wg_private` key.
    pub fn new(
        url: &str,
        controller_keys: KeySet,
        node_id: &str,
        identity: IdentityKey,
        wg_private: PrivateKey,
    ) -> Result<Self, ClientError> {
        Self::with_http(
            http_client(None)?,
            &[url.to_owned()],
            controller_keys,
            node_id,
            identity,
            wg_private,
        )
    }

    /// Like [`Self::new`], for a controller with several instances at `urls`, in order of
    /// preference.
    pub fn with_instances(
        urls: &[String],
        controller_keys: KeySet,
        node_id: &str,
        identity: IdentityKey,
        wg_private: PrivateKey,
    ) -> Result<Self, ClientError> {
        Self::with_http(
            http_client(None)?,
            urls,
            controller_keys,
            node_id,
            identity,
            wg_private,
        )
    }

    fn with_http(
        http: reqwest::Client,
        urls: &[String],
        controller_keys: KeySet,
        node_id: &str,
        identity: IdentityKey,
        wg_private: PrivateKey,
    ) -> Result<Self, ClientError> {
        if !valid_node_id(node_id) {
            return Err(ClientError::NodeId(node_id.escape_debug().to_string()));
        }
        if urls.is_empty() {
            return Err(ClientError::Url("no controller URL is given".to_owned()));
        }
        let urls = urls
            .iter()
            .map(|url| controller_url(url))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ClientError::Url)?;
        Ok(Self {
            http,
            instances: Instances::new(urls),
            retry_now: AtomicBool::new(false),
            controller_keys,
            membership_key: None,
            node_id: node_id.to_owned(),
            identity,
            wg_private,
        })
    }

    /// This client with the operator's membership key (`[controller] membership_key`):
    /// every bundle's peers are then checked for its signature ([`super::members`]).
    pub fn with_membership_key(mut self, key: Option<MembershipPublic>) -> Self {
        self.membership_key = key;
        self
    }

    /// A client for the `[controller]` section (trusting its `ca_file`, if any). Reads the
    /// CA file: call from a blocking context or at start.
    pub fn from_settings(
        settings: &ControllerSettings,
        identity: IdentityKey,
        wg_private: PrivateKey,
    ) -> Result<Self, ClientError> {
        Self::with_http(
            http_client(settings.ca_file.as_deref())?,
            &settings.urls,
            settings.public_keys.clone(),
            &settings.node_id,
            identity,
            wg_private,
        )
        .map(|client| client.with_membership_key(settings.membership_key))
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The URL of the controller instance in use.
    pub fn url(&self) -> &str {
        self.instances.current().1
    }

    /// Whether the last failure moved to another instance, to be tried at once rather than
    /// after a backoff; reading it clears it.
    pub fn take_retry_now(&self) -> bool {
        self.retry_now.swap(false, Ordering::AcqRel)
    }

    /// Notes the outcome of a request to instance `index`: a failure that says the instance
    /// is lost moves to the next one.
    fn note<T>(&self, index: usize, result: Result<T, ClientError>) -> Result<T, ClientError> {
        match &result {
            Ok(_) => self.instances.succeeded(),
            Err(error) if error.instance_lost() => {
                let now = self.instances.failed(index);
                self.retry_now.store(now, Ordering::Release);
                if self.instances.urls().len() > 1 {
                    tracing::warn!(
                        target: "meshtun::gate",
                        from = %self.instances.urls()[index],
                        to = %self.url(),
                        error = %Chain(error),
                        "moving to another controller instance"
                    );
                }
            }
            // The instance answered: it is alive, whatever it said.
            Err(_) => self.instances.succeeded(),
        }
        result
    }

    /// The pinned controller keys.
    pub fn controller_keys(&self) -> &KeySet {
        &self.controller_keys
    }

    /// A signed request to the instance in use (returned with it): `path_and_query` is
    /// signed exactly as it is sent.
    fn signed(
        &self,
        method: Method,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> (usize, RequestBuilder) {
        let (index, base) = self.instances.current();
        // Signed for the primary pinned controller key: another controller that knows this
        // node (a staging one, say) cannot be sent a replay of it.
        let signature = RequestSignature::sign(
            &self.identity,
            self.controller_keys.primary(),
            &self.node_id,
            method.as_str(),
            path_and_query,
            &body,
            unix_ms(),
        );
        let mut request = self.http.request(method, format!("{base}{path_and_query}"));
        for (name, value) in signature.headers() {
            request = request.header(name, value);
        }
        (index, request.body(body))
    }

    /// Submits `benchmark`. `Ok` once the controller has stored it (201).
    pub async fn submit_benchmark(&self, benchmark: &Benchmark) -> Result<(), ClientError> {
        let path = format!("/v1/benchmarks/{}", self.node_id);
        self.send_json(SUBMIT, Method::POST, &path, benchmark).await
    }

    /// Reports where this node can be reached. `Ok` once the controller has stored it.
    pub async fn report_candidates(&self, report: &CandidateReport) -> Result<(), ClientError> {
        let path = format!("/v1/candidates/{}", self.node_id);
        self.send_json(REPORT, Method::PUT, &path, report).await
    }

    /// Reports this node's counts of its gated peers by path. `Ok` once the controller has
    /// kept it; an older controller answers 404 ([`ClientError::Status`]).
    pub async fn report_paths(&self, report: &PathReport) -> Result<(), ClientError> {
        let path = format!("/v1/paths/{}", self.node_id);
        self.send_json(PATHS, Method::PUT, &path, report).await
    }

    /// Sends `value` as a signed JSON request (`what` names it in errors); `Ok` on a 2xx.
    async fn send_json(
        &self,
        what: &'static str,
        method: Method,
        path: &str,
        value: &impl serde::Serialize,
    ) -> Result<(), ClientError> {
        let body = serde_json::to_vec(value).map_err(|e| ClientError::Response {
            what,
            reason: format!("cannot encode the request: {e}"),
        })?;
        let (index, request) = self.signed(method, path, body);
        let result = async {
            let response = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .timeout(REQUEST_TIMEOUT)
                .send()
                .await
                .map_err(|e| http_error(what, e))?;
            if response.status().is_success() {
                return Ok(());
            }
            Err(refusal(what, response).await)
        };
        self.note(index, result.await)
    }

    /// Asks for a bundle newer than epoch `after` (any bundle if `None`), waiting up to
    /// `wait` (the controller's long-poll) for one. `Ok(None)` if none came in that time.
    /// A returned bundle passed [`verify_bundle`] and is newer than `after`. Whether it has
    /// expired is the scheduler's to judge, by the controller's clock as estimated from the
    /// bundles (this node's own may be off). Never brings a cut-off notice.
    pub async fn fetch_bundle(
        &self,
        after: Option<EpochId>,
        wait: Duration,
    ) -> Result<Option<VerifiedBundle>, ClientError> {
        match self.fetch_with(after, None, wait).await? {
            Some(Fetched::Bundle(bundle)) => Ok(Some(bundle)),
            Some(Fetched::CutOff(_)) => Err(ClientError::Response {
                what: FETCH,
                reason: "a cut-off notice came, unasked for".into(),
            }),
            None => Ok(None),
        }
    }

    /// [`Self::fetch_bundle`], also asking for the cut-off notice of a newer epoch than
    /// `seen_cutoff` (the newest notice seen, 0 for none) that the controller may serve
    /// before that epoch's bundles: a returned notice passed [`verify_cutoff`].
    pub async fn fetch(
        &self,
        after: Option<EpochId>,
        seen_cutoff: EpochId,
        wait: Duration,
    ) -> Result<Option<Fetched>, ClientError> {
        self.fetch_with(after, Some(seen_cutoff), wait).await
    }

    async fn fetch_with(
        &self,
        after: Option<EpochId>,
        seen_cutoff: Option<EpochId>,
        wait: Duration,
    ) -> Result<Option<Fetched>, ClientError> {
        let mut query = Vec::new();
        if let Some(epoch) = after {
            query.push(format!("after={epoch}"));
        }
        if let Some(seen) = seen_cutoff {
            query.push(format!("cutoff={seen}"));
        }
        let mut path = format!("/v1/config/{}", self.node_id);
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query.join("&"));
        }
        let (index, request) = self.signed(Method::GET, &path, Vec::new());
        let result = self.fetch_from(index, request, after, wait).await;
        self.note(index, result)
    }

    async fn fetch_from(
        &self,
        index: usize,
        request: RequestBuilder,
        after: Option<EpochId>,
        wait: Duration,
    ) -> Result<Option<Fetched>, ClientError> {
        let started = std::time::Instant::now();
        let response = request
            .timeout(self.instances.poll_timeout(index, wait, LONG_POLL_MARGIN))
            .send()
            .await
            .map_err(|e| http_error(FETCH, e))?;
        match response.status() {
            StatusCode::NOT_MODIFIED => {
                self.instances.learned_poll(index, started.elapsed());
                return Ok(None);
            }
            StatusCode::OK => {}
            _ => return Err(refusal(FETCH, response).await),
        }
        let notice = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes() == CUTOFF_CONTENT_TYPE.as_bytes());
        if notice {
            let body = read_body(FETCH, response, MAX_CUTOFF_BYTES + 1024).await?;
            let own_key = self.wg_private.public_key();
            let verified = verify_cutoff(&body, &self.controller_keys, &self.node_id, &own_key)?;
            return Ok(Some(Fetched::CutOff(verified)));
        }
        let body = read_body(FETCH, response, MAX_CACHE_BYTES).await?;
        let signed: SignedBundle =
            serde_json::from_slice(&body).map_err(|e| ClientError::Response {
                what: FETCH,
                reason: format!("not a signed bundle: {e}"),
            })?;
        let trust = Trust {
            controller: &self.controller_keys,
            members: self.membership_key.as_ref(),
        };
        let bundle = verify_bundle(&signed, &trust, &self.node_id, &self.wg_private)?;
        bundle.check_newer(after)?;
        Ok(Some(Fetched::Bundle(bundle)))
    }
}

/// Enrolls this node with an invite `ticket`: registers its WireGuard key, identity key,
/// overlay addresses (empty: the controller assigns them) and endpoint, proving the ticket's
/// token without sending it and possession of both keys ([`meshtun_proto::enroll`]).
/// Returns what the controller recorded, from its reply signed with the key the ticket
/// pins, checked to answer this very request: the node id, the keys, the addresses and
/// endpoint, and the overlay prefixes. An unsigned, altered or foreign reply is refused.
pub async fn enroll(
    ticket: &Ticket,
    wg: &PrivateKey,
    identity: &IdentityKey,
    addresses: Vec<IpNet>,
    endpoint: Option<String>,
) -> Result<EnrollResponse, ClientError> {
    enroll_signed(ticket, (wg, identity), addresses, endpoint, None).await
}

/// [`enroll`] with the operator's membership signature over the node's id and keys in the
/// claim (for a controller with `[membership] public_key`).
pub async fn enroll_signed(
    ticket: &Ticket,
    (wg, identity): (&PrivateKey, &IdentityKey),
    addresses: Vec<IpNet>,
    endpoint: Option<String>,
    membership_sig: Option<MembershipSig>,
) -> Result<EnrollResponse, ClientError> {
    let base = controller_url(&ticket.url).map_err(ClientError::Url)?;
    let keys = (wg, identity);
    let (request, enrollment) =
        EnrollRequest::build_signed(ticket, keys, addresses, endpoint, membership_sig).map_err(
            |e| ClientError::Response {
                what: ENROLL,
                reason: e.to_string(),
            },
        )?;
    let response = http_client(None)?
        .post(format!("{base}/v1/enroll"))
        .json(&request)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(|e| http_error(ENROLL, e))?;
    if !response.status().is_success() {
        return Err(refusal(ENROLL, response).await);
    }
    let body = read_body(ENROLL, response, MAX_REPLY_BYTES).await?;
    let signed: SignedEnrollReply = serde_json::from_slice(&body)
        .map_err(|_| ClientError::Reply(EnrollError::ReplySignature))?;
    signed
        .verify(&ticket.controller_key, &enrollment)
        .map_err(ClientError::Reply)
}

pub(super) fn http_client(
    ca_file: Option<&std::path::Path>,
) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder();
    if let Some(file) = ca_file {
        for cert in read_ca_file(file)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .connect_timeout(CONNECT_TIMEOUT)
        // The controller closes connections idle for its header timeout (10 s by default):
        // drop them sooner, so no request goes out on one it is closing.
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("meshtun/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(ClientError::Setup)
}

/// The certificates of a PEM CA file.
fn read_ca_file(file: &std::path::Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let fail = |reason: String| ClientError::CaFile {
        file: file.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(file).map_err(|e| fail(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| fail(describe(&e)))?;
    if certs.is_empty() {
        return Err(fail("it holds no PEM certificate".into()));
    }
    Ok(certs)
}

pub(super) fn http_error(what: &'static str, source: reqwest::Error) -> ClientError {
    ClientError::Http { what, source }
}

/// Reads at most `limit` bytes of an answer's body.
async fn read_body(
    what: &'static str,
    mut response: Response,
    limit: usize,
) -> Result<Vec<u8>, ClientError> {
    let too_large = || ClientError::Response {
        what,
        reason: format!("the answer is larger than {limit} bytes"),
    };
    let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
    if response.content_length().is_some_and(|len| len > limit_u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| http_error(what, e))? {
        if body.len().saturating_add(chunk.len()) > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The error for a non-success answer, with the controller's reason.
pub(super) async fn refusal(what: &'static str, response: Response) -> ClientError {
    let status = response.status();
    let retry_after = retry_after(
        response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()),
    );
    let (reason, latest_seq) = match read_body(what, response, MAX_ERROR_BODY).await {
        Ok(body) => (
            reason_of(status, &body),
            serde_json::from_slice::<ErrorBody>(&body)
                .ok()
                .and_then(|b| b.latest_seq),
        ),
        Err(_) => (
            status.canonical_reason().unwrap_or("no reason").to_owned(),
            None,
        ),
    };
    match status.as_u16() {
        401 => ClientError::Unauthorized { what, reason },
        403 => ClientError::Forbidden { what, reason },
        409 => ClientError::Conflict {
            what,
            reason,
            latest_seq,
        },
        422 => ClientError::Rejected { what, reason },
        429 => ClientError::Throttled {
            what,
            retry_after,
            reason,
        },
        code @ 500..=599 => ClientError::Server {
            what,
            status: code,
            reason,
        },
        code => ClientError::Status {
            what,
            status: code,
            reason,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_and_node_ids_are_refused() {
        let key = IdentityKey::generate();
        let make = |url: &str, node: &str| {
            ControllerClient::new(
                url,
                KeySet::one(key.public()),
                node,
                key.clone(),
                PrivateKey::generate(),
            )
        };
        assert!(matches!(make("ftp://x", "a"), Err(ClientError::Url(_))));
        assert!(matches!(
            make("http://x/api", "a"),
            Err(ClientError::Url(_))
        ));
        assert!(matches!(
            make("http://x", "A/b"),
            Err(ClientError::NodeId(_))
        ));
        let client = make("http://192.0.2.1:8700/", "node-a").unwrap();
        assert_eq!(client.url(), "http://192.0.2.1:8700");
        assert!(!format!("{client:?}").contains(&key.to_base64()));
    }

    /// The transport error stays typed: the chain names what was done, then reqwest's
    /// error and its causes down to the refused connection, each once.
    #[tokio::test]
    async fn a_refused_connection_is_reported_with_its_causes_once() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let http = http_client(None).unwrap();
        let url = format!("http://127.0.0.1:{port}/");
        let error = http.get(&url).send().await.unwrap_err();
        let text = describe(&http_error(FETCH, error));
        let start = "fetching the bundle: cannot reach the controller: error sending request";
        assert!(text.starts_with(start), "{text}");
        assert_eq!(text.matches("refused").count(), 1, "{text}");
        assert_eq!(text.matches(url.as_str()).count(), 1, "{text}");
    }
}
