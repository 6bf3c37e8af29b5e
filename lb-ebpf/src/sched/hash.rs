//! sh and dh (the kernel's 256-bucket table over every real server), and
//! the walk to the next available server that sh-fallback, mh-fallback and
//! rr/wrr past overloaded servers share.

use lb_common::{flow_hash, sched, svc_flags, ConnKey, ServiceValue, RING_SIZE};

use super::ring::ring_entry;
use crate::reals::available;

#[repr(C)]
struct HashWalk {
    slot: u32,
    n: u32,
    start: u32,
    found: u32,
    thr: u32,
    /// Positions between two steps: 1, or for a large Maglev table the
    /// table over RING_SIZE, so that the walk (at most RING_SIZE steps)
    /// samples the whole table.
    stride: u32,
}

/// sh-fallback: bucket start + i + 1 (a bpf_loop callback).
#[inline(never)]
extern "C" fn hash_step(i: u32, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut HashWalk) };
    if c.n == 0 {
        return 1;
    }
    // checked_rem: no division-by-zero panic path in the subprogram.
    // (start < n <= MAGLEV_MAX and steps * stride <= n: no overflow.)
    let step = i.wrapping_add(1).wrapping_mul(c.stride);
    let Some(m) = c.start.wrapping_add(step).checked_rem(c.n) else {
        return 1;
    };
    let Some(id) = ring_entry(c.slot, m) else {
        return 1;
    };
    if available(id, c.thr != 0) {
        c.found = id;
        return 1;
    }
    0
}

/// The first available server after position `start` of the ring, going
/// round (sh-fallback, mh-fallback, and rr/wrr past overloaded servers);
/// over a large Maglev table, at most RING_SIZE positions spread over it.
#[inline(always)]
pub(crate) fn walk_from(slot: u32, n: u32, start: u32, thr: bool) -> Option<u32> {
    let steps = n.saturating_sub(1).min(RING_SIZE as u32);
    let mut c = HashWalk {
        slot,
        n,
        start,
        found: u32::MAX,
        thr: thr as u32,
        stride: (n / RING_SIZE as u32).max(1),
    };
    unsafe {
        aya_ebpf::helpers::bpf_loop(
            steps,
            hash_step as *mut core::ffi::c_void,
            &mut c as *mut HashWalk as *mut core::ffi::c_void,
            0,
        );
    }
    if c.found == u32::MAX {
        None
    } else {
        Some(c.found)
    }
}

/// sh / dh: the bucket of the client (or destination) address; an
/// unavailable real server drops the connection, or with sh-fallback the
/// next buckets are tried (as ip_vs_sh).
#[inline(always)]
pub(crate) fn hash_pick(
    svc: &ServiceValue,
    key: &ConnKey,
    slot: u32,
    n: u32,
    thr: bool,
) -> Option<u32> {
    let h = if svc.sched == sched::DH {
        flow_hash(&key.daddr, 0)
    } else if svc.flags & svc_flags::MH_PORT != 0 {
        flow_hash(&key.saddr, key.sport)
    } else {
        flow_hash(&key.saddr, 0)
    };
    let start = h.checked_rem(n)?;
    if let Some(id) = ring_entry(slot, start) {
        if available(id, thr) {
            return Some(id);
        }
    }
    if svc.flags & svc_flags::MH_FALLBACK != 0 {
        return walk_from(slot, n, start, thr);
    }
    None
}
