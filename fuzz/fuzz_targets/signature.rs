//! Signed node requests as the controller checks them: arbitrary signature headers through
//! `RequestSignature::from_headers`, `check_fresh`, `verify` and the controller's
//! `authenticate` (with its replay cache); and genuine signed requests with one part altered.
//! The first input byte picks which.
//!
//! Beyond "never panics": headers that parse survive being written and read again; no
//! request is accepted unless it is genuine, fresh, about its own node, addressed to this
//! controller and new; a genuine one is accepted exactly once.

#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use meshtun_controller::auth::{authenticate, NonceCache, Refusal, SignedRequest};
use meshtun_controller::quota::NodeQuota;
use meshtun_proto::auth::{
    RequestSignature, HEADER_NODE, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
use meshtun_proto::{IdentityKey, IdentityPublic, KeySet};

/// The controller's clock (Unix milliseconds) and replay window.
const NOW_MS: u64 = 1_800_000_000_000;
const WINDOW_MS: u64 = 30_000;
const NODE: &str = "node-a";

fn node_key() -> IdentityKey {
    IdentityKey::from_bytes([5; 32])
}

/// The controller's key, which a genuine request names (format v2).
fn controller_key() -> IdentityPublic {
    IdentityKey::from_bytes([9; 32]).public()
}

/// A quota no input exhausts (the quota is checked after the signature anyway).
fn quota() -> NodeQuota {
    NodeQuota::new(1_000, 10_000)
}

fn lookup(key: &IdentityPublic) -> impl Fn(&str) -> Option<IdentityPublic> + '_ {
    move |node| (node == NODE).then_some(*key)
}

/// Arbitrary headers, each present or not.
fn arbitrary_headers(u: &mut Unstructured<'_>) -> Result<HashMap<&'static str, String>> {
    let mut headers = HashMap::new();
    for name in [
        HEADER_NODE,
        HEADER_TIMESTAMP,
        HEADER_NONCE,
        HEADER_SIGNATURE,
    ] {
        if u.arbitrary()? {
            headers.insert(name, u.arbitrary::<String>()?);
        }
    }
    Ok(headers)
}

fn parse(headers: &HashMap<&'static str, String>) -> Option<RequestSignature> {
    RequestSignature::from_headers(|name| headers.get(name).map(String::as_str)).ok()
}

/// Arbitrary headers and request: refused, whatever they are.
fn arbitrary_request(u: &mut Unstructured<'_>) -> Result<()> {
    let headers = arbitrary_headers(u)?;
    let Some(sig) = parse(&headers) else {
        return Ok(());
    };
    let written: HashMap<&'static str, String> = sig.headers().into_iter().collect();
    assert_eq!(
        parse(&written).as_ref(),
        Some(&sig),
        "headers do not round-trip"
    );
    let now: u64 = u.arbitrary()?;
    let _ = sig.check_fresh(now, u.arbitrary()?);
    let (method, path, body): (String, String, Vec<u8>) = u.arbitrary()?;
    let key = node_key().public();
    let controller = controller_key();
    assert!(
        sig.verify(&key, &controller, &method, &path, &body).is_err(),
        "a forged signature verified"
    );
    let answers_to = KeySet::one(controller);
    let request = SignedRequest {
        controller: &answers_to,
        method: &method,
        path_and_query: &path,
        body: &body,
        path_node: NODE,
    };
    let nonces = NonceCache::new(WINDOW_MS);
    let outcome = authenticate(&sig, &request, lookup(&key), &quota(), &nonces, now);
    assert!(outcome.is_err(), "a forged request was accepted");
    Ok(())
}

/// What a request was signed over, and who it is about.
#[derive(Clone, PartialEq, Eq)]
struct Parts {
    method: String,
    path: String,
    body: Vec<u8>,
    path_node: String,
}

/// A genuine request, perhaps with one part altered, checked at an arbitrary time.
fn altered_request(u: &mut Unstructured<'_>) -> Result<()> {
    let key = node_key();
    let public = key.public();
    let signed_at = NOW_MS + u.int_in_range(0..=2 * WINDOW_MS)? - WINDOW_MS;
    let genuine = Parts {
        method: (*u.choose(&["GET", "POST"])?).to_owned(),
        path: format!("/v1/config/{NODE}?after={}", u.arbitrary::<u32>()?),
        body: u.arbitrary()?,
        path_node: NODE.to_owned(),
    };
    let controller = controller_key();
    let original = RequestSignature::sign(
        &key,
        &controller,
        NODE,
        &genuine.method,
        &genuine.path,
        &genuine.body,
        signed_at,
    );
    let (mut sig, mut parts) = (original.clone(), genuine.clone());
    let mut answers_to = KeySet::one(controller);
    match u.int_in_range(0..=10u8)? {
        0 => sig.node = u.arbitrary()?,
        1 => sig.timestamp_ms ^= u.int_in_range(1..=u64::MAX)?,
        2 => sig.nonce[usize::from(u.int_in_range(0..=15u8)?)] ^= u.int_in_range(1..=255u8)?,
        3 => sig.signature[usize::from(u.int_in_range(0..=63u8)?)] ^= u.int_in_range(1..=255u8)?,
        4 => parts.method = u.arbitrary()?,
        5 => parts.path = u.arbitrary()?,
        6 => parts.body = u.arbitrary()?,
        7 => parts.path_node = u.arbitrary()?,
        // Checked by another controller (a replay at staging of a production request).
        8 => answers_to = KeySet::one(IdentityKey::from_bytes(u.arbitrary()?).public()),
        // A controller whose key was rotated, still answering to the one the node named.
        9 => {
            let new = IdentityKey::from_bytes(u.arbitrary()?).public();
            if new != controller {
                answers_to = KeySet::new(vec![new, controller]).unwrap_or(answers_to);
            }
        }
        _ => {}
    }
    // The method is signed in upper case; any other change must be refused.
    let untouched = sig == original
        && answers_to.contains(&controller)
        && parts.method.to_ascii_uppercase() == genuine.method
        && Parts {
            method: genuine.method.clone(),
            ..parts.clone()
        } == genuine;
    let now = NOW_MS + u.int_in_range(0..=4 * WINDOW_MS)? - 2 * WINDOW_MS;
    let fresh = signed_at.abs_diff(now) <= WINDOW_MS;
    let request = SignedRequest {
        controller: &answers_to,
        method: &parts.method,
        path_and_query: &parts.path,
        body: &parts.body,
        path_node: &parts.path_node,
    };
    let nonces = NonceCache::new(WINDOW_MS);
    let quota = quota();
    let first = authenticate(&sig, &request, lookup(&public), &quota, &nonces, now);
    assert_eq!(
        first.is_ok(),
        untouched && fresh,
        "untouched {untouched}, fresh {fresh}: {first:?}"
    );
    if first.is_ok() {
        let replay = authenticate(&sig, &request, lookup(&public), &quota, &nonces, now);
        assert!(
            matches!(&replay, Err(Refusal::Unauthenticated(m)) if m.contains("replayed")),
            "a replay was not refused: {replay:?}"
        );
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    let _ = if mode % 2 == 0 {
        arbitrary_request(&mut u)
    } else {
        altered_request(&mut u)
    };
});
