//! Real servers as the program sees them: their entry (REALS), live
//! connection counts (RS_LOAD - RS_CLOSED) and overloaded flag (RS_OVER).

use aya_ebpf::bindings::xdp_action::{XDP_DROP, XDP_PASS};
use lb_common::{counter, rs_flags, sched, HEARTBEAT_STALE_NS};

use crate::{
    maps::{HEARTBEAT, REALS, RS_CLOSED, RS_LOAD, RS_OVER},
    stats::count,
};

/// A real server is usable for a persistent client (or an lblc/lblcr
/// destination) of service `svc_id` while it is in that service with a
/// valid MAC, even at weight 0 (IPVS keeps following a template to a
/// quiesced real server; only removal breaks it). The service check keeps
/// a cached id from following its slot once the slot serves another
/// service.
#[inline(always)]
pub(crate) fn usable(real_id: u32, svc_id: u32) -> bool {
    match REALS.get(real_id) {
        Some(rs) => {
            rs.svc_id == svc_id
                && rs.flags & (rs_flags::IN_USE | rs_flags::MAC_VALID | rs_flags::REMOVED)
                    == rs_flags::IN_USE | rs_flags::MAC_VALID
        }
        None => false,
    }
}

/// May this real server take a new connection now (weight, in service,
/// resolved, and under its thresholds when `thr`)?
#[inline(always)]
pub(crate) fn available(real_id: u32, thr: bool) -> bool {
    let ok = match REALS.get(real_id) {
        Some(rs) => {
            rs.weight > 0
                && rs.flags & (rs_flags::IN_USE | rs_flags::MAC_VALID | rs_flags::REMOVED)
                    == rs_flags::IN_USE | rs_flags::MAC_VALID
        }
        None => false,
    };
    ok && !(thr && overloaded(real_id))
}

/// The weight in force of a real server (0 if unknown).
#[inline(always)]
pub(crate) fn weight_of(real_id: u32) -> u32 {
    match REALS.get(real_id) {
        Some(rs) => rs.weight,
        None => 0,
    }
}

/// (active, inactive) connections of a real server, as the dynamic
/// schedulers see them.
#[inline(always)]
pub(crate) fn load_of(real_id: u32) -> (u64, u64) {
    let (mut a, mut i) = (0u64, 0u64);
    if let Some(l) = RS_LOAD.get(real_id) {
        a = l.active;
        i = l.inactive;
    }
    if let Some(c) = RS_CLOSED.get(real_id) {
        a = a.wrapping_sub(c.active);
        i = i.wrapping_sub(c.inactive);
    }
    // A transient negative (a close seen before its open) counts as zero.
    if a > u32::MAX as u64 {
        a = 0;
    }
    if i > u32::MAX as u64 {
        i = 0;
    }
    (a, i)
}

/// Moves the live connection counts of `real_id`.
#[inline(always)]
pub(crate) fn account(real_id: u32, active: i64, inactive: i64) {
    if let Some(l) = RS_LOAD.get_ptr_mut(real_id) {
        unsafe {
            if active != 0 {
                xadd(&mut (*l).active, active as u64);
            }
            if inactive != 0 {
                xadd(&mut (*l).inactive, inactive as u64);
            }
        }
    }
}

/// Atomically adds `v` (two's complement for a decrement) to `*p`.
#[inline(always)]
fn xadd(p: *mut u64, v: u64) {
    unsafe {
        let _ = core::intrinsics::atomic_xadd::<
            u64,
            u64,
            { core::intrinsics::AtomicOrdering::Relaxed },
        >(p, v);
    }
}

/// Whether the connection counts are fresh: the daemon re-based them
/// lately. While it is down they only drift (closed connections are
/// counted by its sweep), so the program fails open rather than refuse
/// connections on stale counts.
#[inline(always)]
pub(crate) fn counts_fresh(now: u64) -> bool {
    match HEARTBEAT.get(0) {
        Some(t) => now.saturating_sub(*t) < HEARTBEAT_STALE_NS,
        None => false,
    }
}

/// Whether a real server is over its connection thresholds now (IPVS's
/// overloaded flag, kept in RS_OVER with its hysteresis).
#[inline(always)]
pub(crate) fn overloaded(real_id: u32) -> bool {
    let Some(rs) = REALS.get(real_id) else {
        return false;
    };
    let Some(flag) = RS_OVER.get_ptr_mut(real_id) else {
        return false;
    };
    let (a, i) = load_of(real_id);
    let was = unsafe { *flag } != 0;
    let now = sched::overloaded_next(was, a + i, rs.u_threshold, rs.l_threshold);
    if now != was {
        unsafe { *flag = now as u32 };
    }
    now
}

/// The real server's MAC and flags, if its MAC is known and its service
/// is not on standby (VRRP backup: passed to the kernel).
#[inline(always)]
pub(crate) fn resolved(real_id: u32) -> Result<([u8; 6], u16), u32> {
    match REALS.get(real_id) {
        Some(rs) if rs.flags & rs_flags::STANDBY != 0 => {
            count(counter::PASS_STANDBY);
            Err(XDP_PASS)
        }
        Some(rs) if rs.flags & rs_flags::MAC_VALID != 0 && rs.flags & rs_flags::IN_USE != 0 => {
            Ok((rs.mac, rs.flags))
        }
        _ => {
            count(counter::DROP_UNRESOLVED);
            Err(XDP_DROP)
        }
    }
}
