//! Asking for one node's peers allocates nothing but the returned list, even in a large
//! mesh. A counting allocator measures the bytes allocated by the current thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeSet;

use meshtun_controller::membership::peers_of;
use meshtun_controller::model::Topology;

struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    // `try_with`: the slot may be gone while the thread shuts down.
    let _ = ALLOCATED.try_with(|a| a.set(a.get() + bytes));
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes allocated on this thread while running `f`, and its result.
fn measure<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATED.with(Cell::get);
    let out = f();
    (ALLOCATED.with(Cell::get) - before, out)
}

const REF: usize = size_of::<&str>();

#[test]
fn one_node_of_ten_thousand_in_hub_and_spoke() {
    let ids: Vec<String> = (0..10_000).map(|i| format!("spoke-{i}")).collect();
    let mut allowed: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    allowed.extend(["hub-1", "hub-2", "hub-3"]);
    let hubs = ["hub-1", "hub-2", "hub-3", "hub-down"];
    let topology = Topology::HubAndSpoke {
        hubs: hubs.iter().map(|h| h.to_string()).collect(),
    };

    let (bytes, peers) = measure(|| peers_of("spoke-5000", &allowed, &topology));
    assert_eq!(peers, ["hub-1", "hub-2", "hub-3"]);
    assert!(
        bytes <= hubs.len() * REF,
        "a spoke's peers allocated {bytes} bytes"
    );

    let (bytes, peers) = measure(|| peers_of("hub-1", &allowed, &topology));
    assert_eq!(peers.len(), 10_002);
    assert_eq!(
        bytes,
        10_002 * REF,
        "a hub's peers allocate exactly the list"
    );

    let (bytes, peers) = measure(|| peers_of("not-allowed", &allowed, &topology));
    assert!(peers.is_empty());
    assert_eq!(bytes, 0);
}

#[test]
fn one_node_of_a_thousand_in_full_mesh() {
    let ids: Vec<String> = (0..1_000).map(|i| format!("node-{i}")).collect();
    let allowed: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let (bytes, peers) = measure(|| peers_of("node-500", &allowed, &Topology::FullMesh));
    assert_eq!(peers.len(), 999);
    assert_eq!(bytes, 999 * REF);
}
