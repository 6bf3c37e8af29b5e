//! twos (ip_vs_twos): power of two choices, by weighted random picks.

use lb_common::{sched, RING_SIZE};

use super::ring::ring_entry;
use crate::reals::{load_of, overloaded, weight_of};

/// twos: state of the pass over the ring (bpf_loop).
#[repr(C)]
struct TwosPick {
    slot: u32,
    n: u32,
    /// Skip overloaded servers (the service has thresholds).
    thr: u32,
    c1: u32,
    c2: u32,
    w1: u32,
    w2: u32,
    _pad: u32,
    cum: u64,
}

/// Two independent weighted random picks in one pass (weighted reservoir
/// sampling: server i replaces a pick with probability w_i / sum of the
/// weights so far, so each pick is server i with probability w_i / total).
#[inline(never)]
extern "C" fn twos_step(i: u32, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut TwosPick) };
    if i >= c.n {
        return 1;
    }
    let Some(id) = ring_entry(c.slot, i) else {
        return 1;
    };
    let w = weight_of(id);
    if w == 0 || (c.thr != 0 && overloaded(id)) {
        return 0;
    }
    c.cum += w as u64;
    let r1 = (unsafe { aya_ebpf::helpers::bpf_get_prandom_u32() } as u64)
        .checked_rem(c.cum)
        .unwrap_or(0);
    if r1 < w as u64 {
        c.c1 = id;
        c.w1 = w;
    }
    let r2 = (unsafe { aya_ebpf::helpers::bpf_get_prandom_u32() } as u64)
        .checked_rem(c.cum)
        .unwrap_or(0);
    if r2 < w as u64 {
        c.c2 = id;
        c.w2 = w;
    }
    0
}

/// twos (ip_vs_twos): two weighted-random servers, keep the lower
/// overhead/weight.
#[inline(always)]
pub(crate) fn twos_pick(slot: u32, n: u32, thr: bool) -> Option<u32> {
    let mut c = TwosPick {
        slot,
        n,
        thr: thr as u32,
        c1: u32::MAX,
        c2: u32::MAX,
        w1: 0,
        w2: 0,
        _pad: 0,
        cum: 0,
    };
    let loops = if (n as usize) < RING_SIZE {
        n
    } else {
        RING_SIZE as u32
    };
    unsafe {
        aya_ebpf::helpers::bpf_loop(
            loops,
            twos_step as *mut core::ffi::c_void,
            &mut c as *mut TwosPick as *mut core::ffi::c_void,
            0,
        )
    };
    if c.c1 == u32::MAX || c.c2 == u32::MAX {
        return None;
    }
    let (a1, i1) = load_of(c.c1);
    let (a2, i2) = load_of(c.c2);
    if sched::better(sched::WLC, (a1, i1, c.w1), (a2, i2, c.w2)) {
        Some(c.c1)
    } else {
        Some(c.c2)
    }
}
