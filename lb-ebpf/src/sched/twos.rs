//! twos (ip_vs_twos): power of two choices, by weighted random picks.
//!
//! The ring is the weighted sequence (each server in proportion to its
//! weight), so a random slot is a weighted random pick: two picks cost two
//! reads however many servers the service has (ip_vs_twos scans them all).
//! Only when a pick is over its threshold does the program scan the ring
//! for the available ones.

use aya_ebpf::helpers::bpf_get_prandom_u32;
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

/// Two independent random picks among the available slots in one pass
/// (reservoir sampling: slot i replaces a pick with probability 1 / the
/// available slots so far; a server holds slots in proportion to its
/// weight, so each pick is weighted).
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
    c.cum += 1;
    let r1 = (unsafe { bpf_get_prandom_u32() } as u64)
        .checked_rem(c.cum)
        .unwrap_or(0);
    if r1 == 0 {
        c.c1 = id;
        c.w1 = w;
    }
    let r2 = (unsafe { bpf_get_prandom_u32() } as u64)
        .checked_rem(c.cum)
        .unwrap_or(0);
    if r2 == 0 {
        c.c2 = id;
        c.w2 = w;
    }
    0
}

/// twos (ip_vs_twos): two weighted-random servers, keep the lower
/// overhead/weight. `n` is the ring's length (checked > 0 by the caller).
#[inline(always)]
pub(crate) fn twos_pick(slot: u32, n: u32, thr: bool) -> Option<u32> {
    let r1 = unsafe { bpf_get_prandom_u32() } % n;
    let r2 = unsafe { bpf_get_prandom_u32() } % n;
    let (c1, c2) = (ring_entry(slot, r1)?, ring_entry(slot, r2)?);
    let (w1, w2) = (weight_of(c1), weight_of(c2));
    let usable = |id: u32, w: u32| w != 0 && !(thr && overloaded(id));
    if usable(c1, w1) && usable(c2, w2) {
        return Some(better_of(c1, w1, c2, w2));
    }
    scan(slot, n, thr)
}

/// The lower overhead/weight of two servers (the second on a tie).
#[inline(always)]
fn better_of(c1: u32, w1: u32, c2: u32, w2: u32) -> u32 {
    let (a1, i1) = load_of(c1);
    let (a2, i2) = load_of(c2);
    if sched::better(sched::WLC, (a1, i1, w1), (a2, i2, w2)) {
        c1
    } else {
        c2
    }
}

/// Both picks among the available slots only: one pass over the ring.
#[inline(always)]
fn scan(slot: u32, n: u32, thr: bool) -> Option<u32> {
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
    Some(better_of(c.c1, c.w1, c.c2, c.w2))
}
