//! The packet path allocates nothing per packet: a full batch routed and encrypted, then
//! decrypted and checked, counted with a counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use meshtun::device::benching::{ForwardBench, PacketBench};

/// Counts the allocations of the thread that turned counting on.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed to the system allocator unchanged; the bookkeeping touches
// only thread-local cells, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, that is from the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
        // SAFETY: as for `dealloc`, and the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

fn rounds_allocate_nothing(packet_len: usize) {
    let mut bench = PacketBench::new(packet_len);
    // The first round may set up what later rounds reuse.
    assert_eq!(bench.encapsulate(), bench.batch_len());
    assert_eq!(bench.decapsulate(), bench.batch_len());
    let mut moved = 0;
    let n = allocations(|| {
        for _ in 0..20 {
            moved += bench.encapsulate();
            moved += bench.decapsulate();
        }
    });
    assert_eq!(moved, 2 * 20 * bench.batch_len(), "packets were dropped");
    assert_eq!(
        n,
        0,
        "{n} allocations for {} packets of {packet_len} bytes each way",
        20 * bench.batch_len()
    );
}

#[test]
fn full_sized_packets_allocate_nothing() {
    rounds_allocate_nothing(1420);
}

#[test]
fn small_packets_allocate_nothing() {
    rounds_allocate_nothing(64);
}

#[test]
fn the_counter_sees_allocations() {
    let n = allocations(|| drop(std::hint::black_box(Box::new([0u8; 64]))));
    assert_eq!(n, 1);
}

#[test]
fn forwarding_through_a_hub_allocates_nothing() {
    let mut bench = ForwardBench::new(1420);
    let n = bench.batch_len();
    assert_eq!(bench.encapsulate(), n);
    assert_eq!(
        bench.forward(),
        n,
        "every packet forwarded, none to the hub's tun"
    );
    assert_eq!(bench.receive_at_carol(), n, "Carol got Alice's packets");
    let mut moved = 0;
    let allocated = allocations(|| {
        for _ in 0..20 {
            bench.encapsulate();
            moved += bench.forward();
        }
    });
    assert_eq!(moved, 20 * n, "packets were not forwarded");
    assert_eq!(
        allocated,
        0,
        "{allocated} allocations forwarding {} packets",
        20 * n
    );
}
