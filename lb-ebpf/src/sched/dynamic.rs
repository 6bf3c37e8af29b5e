//! lc, wlc, sed, nq, fo, ovf: every real server of the ring compared by its
//! live connection counts and weight (bpf_loop), as the kernel does.

use lb_common::sched;

use super::ring::ring_entry;
use crate::reals::{load_of, overloaded, weight_of};

/// State of a dynamic pick, carried through bpf_loop.
#[repr(C)]
pub(crate) struct DynPick {
    slot: u32,
    n: u32,
    sched: u32,
    best: u32,
    best_active: u32,
    best_inactive: u32,
    best_weight: u32,
    /// Check the overloaded state (the service has thresholds).
    thr: u32,
    /// Some eligible server has active * 2 < weight (lblc's "half load").
    pub(crate) half: u32,
}

/// One step of the dynamic pick: real server `i` of the ring. A BPF
/// subprogram called by bpf_loop, so the verifier checks it once instead of
/// once per unrolled iteration.
#[inline(never)]
extern "C" fn dynamic_step(i: u32, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut DynPick) };
    match consider(c, i) {
        Some((_, _, _, _, stop)) => stop,
        None => 1,
    }
}

/// Considers ring entry `i` for the dynamic pick. None: end of the ring;
/// else (id, weight in force (0 = not eligible), active, inactive, what
/// the step returns to bpf_loop).
#[inline(always)]
fn consider(c: &mut DynPick, i: u32) -> Option<(u32, u32, u64, u64, i64)> {
    if i >= c.n {
        return None;
    }
    let id = ring_entry(c.slot, i)?;
    let mut w = weight_of(id);
    if w > 0 && c.thr != 0 && overloaded(id) {
        w = 0;
    }
    let (a, ina) = load_of(id);
    let sched = c.sched as u8;
    if !sched::eligible(sched, a, w) {
        return Some((id, 0, a, ina, 0));
    }
    // Branch-free (a * 2 < w): a constant written on one branch only would
    // double the states the verifier tracks through the loop.
    c.half |= ((a * 2).wrapping_sub(w as u64) >> 63) as u32;
    if sched == sched::NQ && a == 0 {
        c.best = id;
        return Some((id, w, a, ina, 1));
    }
    let cand = (a, ina, w);
    if c.best == u32::MAX
        || sched::better(
            sched,
            cand,
            (c.best_active as u64, c.best_inactive as u64, c.best_weight),
        )
    {
        c.best = id;
        c.best_active = a as u32;
        c.best_inactive = ina as u32;
        c.best_weight = w;
    }
    Some((id, w, a, ina, 0))
}

/// lc, wlc, sed, nq, fo, ovf: compare the real servers of the ring by their
/// live connection counts and weights, as the kernel does. Also says
/// whether some server is under half load (for lblc/lblcr).
#[inline(always)]
pub(crate) fn dynamic_pick(sched: u8, slot: u32, n: u32, thr: bool) -> DynPick {
    let mut c = DynPick {
        slot,
        n,
        sched: sched as u32,
        best: u32::MAX,
        best_active: 0,
        best_inactive: 0,
        best_weight: 0,
        thr: thr as u32,
        half: 0,
    };
    let step = dynamic_step as *mut core::ffi::c_void;
    let loops = if (n as usize) < sched::MAX_DYNAMIC {
        n
    } else {
        sched::MAX_DYNAMIC as u32
    };
    unsafe {
        aya_ebpf::helpers::bpf_loop(
            loops,
            step,
            &mut c as *mut DynPick as *mut core::ffi::c_void,
            0,
        );
    }
    c
}

impl DynPick {
    pub(crate) fn best(&self) -> Option<u32> {
        if self.best == u32::MAX {
            None
        } else {
            Some(self.best)
        }
    }
}
