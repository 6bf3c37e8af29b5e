//! Counters: the director-wide ones (GLOBAL_STATS, every verdict other than
//! a plain forward) and the per-service / per-real-server statistics.

use aya_ebpf::{bindings::xdp_action::XDP_PASS, maps::PerCpuArray};
use lb_common::Stats;

use crate::maps::GLOBAL_STATS;

/// Counts one event of `lb_common::counter` index `idx`.
#[inline(always)]
pub(crate) fn count(idx: u32) {
    if let Some(p) = GLOBAL_STATS.get_ptr_mut(idx) {
        unsafe { *p += 1 };
    }
}

/// Counts `counter_idx` and hands the frame to the kernel.
#[inline(always)]
pub(crate) fn pass<T>(counter_idx: u32) -> Result<T, u32> {
    count(counter_idx);
    Err(XDP_PASS)
}

#[inline(always)]
pub(crate) fn add_stats(map: &PerCpuArray<Stats>, idx: u32, new_conn: bool, bytes: u64) {
    if let Some(s) = map.get_ptr_mut(idx) {
        unsafe {
            (*s).packets += 1;
            (*s).bytes += bytes;
            if new_conn {
                (*s).conns += 1;
            }
        }
    }
}
