//! Schedulers: pick a real server for a new connection of a service, from
//! its published ring (`RINGS`, two generations per service) and, for the
//! dynamic ones, the live connection counts.
//!
//! - [`ring`]: rr, wrr (shared cursor) and mh (Maglev) index the ring;
//! - [`hash`]: sh and dh (256-bucket table), and the walk past unavailable
//!   servers;
//! - [`dynamic`]: lc, wlc, sed, nq, fo, ovf compare every server (bpf_loop);
//! - [`twos`]: power of two choices;
//! - [`lblc`]: lblc and lblcr, with their destination cache (LBLC).

pub(crate) mod dynamic;
pub(crate) mod hash;
pub(crate) mod lblc;
pub(crate) mod ring;
pub(crate) mod twos;

use aya_ebpf::bindings::xdp_action::XDP_DROP;
use lb_common::{
    counter, names::jump, sched, svc_flags, ConnKey, ServiceValue, MAGLEV_MAX, RING_SIZE,
};

use crate::{maps::RINGS, reals::counts_fresh, stats::count};

/// Scheduler: pick a real server id for a new connection of `svc`. No
/// server available is counted (drop_overloaded when the service has
/// connection thresholds, drop_no_real otherwise) and dropped.
#[inline(always)]
pub(crate) fn schedule<const MODE: u32>(
    svc: &ServiceValue,
    key: &ConnKey,
    now: u64,
    cur: u32,
    max_i: u32,
) -> Result<u32, u32> {
    match pick_call::<MODE>(svc, key, now, cur, max_i) {
        u32::MAX => {
            count(if svc.flags & svc_flags::THRESHOLDS != 0 {
                counter::DROP_OVERLOADED
            } else {
                counter::DROP_NO_REAL
            });
            Err(XDP_DROP)
        }
        id => Ok(id),
    }
}

/// The schedulers run in a BPF subprogram of their own: their scratch
/// state (bpf_loop contexts, lblc entries) lives in its frame, not in the
/// main program's, which keeps the combined stack under 512 bytes.
#[inline(never)]
fn pick_call<const MODE: u32>(
    svc: &ServiceValue,
    key: &ConnKey,
    now: u64,
    cur: u32,
    max_i: u32,
) -> u32 {
    pick::<MODE>(svc, key, now, cur, max_i).unwrap_or(u32::MAX)
}

/// Dispatch by scheduler. Outside `lb_new` (MODE other than
/// [`jump::NEW`]) the service is lblc or lblcr.
#[inline(always)]
fn pick<const MODE: u32>(
    svc: &ServiceValue,
    key: &ConnKey,
    now: u64,
    cur: u32,
    max_i: u32,
) -> Option<u32> {
    let mut n = svc.ring_len;
    if n == 0 || n as usize > RING_SIZE {
        return None;
    }
    // Thresholds and ovf's limit need the counts; stale counts (the daemon
    // is down) fail open.
    let fresh = counts_fresh(now);
    let thr = svc.flags & svc_flags::THRESHOLDS != 0 && fresh;
    let mut slot = svc.id * 2 + (svc.gen as u32 & 1);
    let ring = RINGS.get_ptr(slot)?;
    if svc.flags & svc_flags::MAGLEV_LARGE != 0 {
        // The ring holds where the table is: first chunk, size.
        let (first, size) = unsafe { ((*ring).reals[0], (*ring).reals[1]) };
        if size == 0 || size as usize > MAGLEV_MAX || first & ring::LARGE != 0 {
            return None;
        }
        slot = first | ring::LARGE;
        n = size;
    }
    if svc.sched == sched::SH || svc.sched == sched::DH {
        return hash::hash_pick(svc, key, slot, n, thr);
    }
    if svc.sched == sched::TWOS {
        return twos::twos_pick(slot, n, thr);
    }
    if MODE != jump::NEW {
        return lblc::lblc_pick::<MODE>(svc, key, slot, n, thr, now, cur, max_i);
    }
    if svc.sched >= sched::LC {
        let s = if svc.sched == sched::OVF && !fresh {
            sched::FO
        } else {
            svc.sched
        };
        return dynamic::dynamic_pick(s, slot, n, thr).best();
    }
    ring::ring_pick(svc, key, ring, slot, n, thr)
}
