//! rr, wrr and mh: an index into the service's published ring (rr and wrr
//! by a shared cursor, mh by the client's hash), and ring entries for the
//! other schedulers.

use lb_common::{
    flow_hash, sched, svc_flags, ConnKey, Ring, ServiceValue, MAGLEV_CHUNK, RING_SIZE,
};

use super::hash::walk_from;
use crate::{
    maps::{CURSORS, MAGLEV, RINGS},
    reals::overloaded,
};

/// A `slot` with this bit is a large Maglev table: the rest is its first
/// MAGLEV chunk (see [`svc_flags::MAGLEV_LARGE`]).
pub(crate) const LARGE: u32 = 1 << 31;

/// rr, wrr, mh: the ring entry at the cursor or the client's hash; past an
/// overloaded server, the next available one where IPVS would look for it.
#[inline(always)]
pub(crate) fn ring_pick(
    svc: &ServiceValue,
    key: &ConnKey,
    ring: *const Ring,
    slot: u32,
    n: u32,
    thr: bool,
) -> Option<u32> {
    let idx = match svc.sched {
        sched::MH => {
            let port = if svc.flags & svc_flags::MH_PORT != 0 {
                key.sport
            } else {
                0
            };
            flow_hash(&key.saddr, port) % n
        }
        // rr and wrr walk the published sequence with a shared cursor.
        _ => match CURSORS.get_ptr_mut(svc.id) {
            Some(c) => unsafe {
                let i = *c % n;
                *c = i + 1;
                i
            },
            None => 0,
        },
    } as usize;
    let id = if slot & LARGE != 0 {
        ring_entry(slot, idx as u32)?
    } else {
        // The compiler knows idx < ring_len <= RING_SIZE and would drop the
        // check; the verifier does not know it. Launder idx through memory.
        let idx = unsafe { core::ptr::read_volatile(&idx) };
        if idx >= RING_SIZE {
            return None;
        }
        unsafe { *(*ring).reals.as_ptr().add(idx) }
    };
    if !thr || !overloaded(id) {
        return Some(id);
    }
    // Over its upper threshold: rr and wrr go on to the next servers of the
    // sequence (as ip_vs_rr/wrr skip overloaded ones); mh only with
    // mh-fallback (ip_vs_mh returns no destination otherwise).
    if svc.sched == sched::MH && svc.flags & svc_flags::MH_FALLBACK == 0 {
        return None;
    }
    walk_from(slot, n, idx as u32, thr)
}

/// The real-server id at position `i` of ring `slot` (or of the large
/// Maglev table `slot` names). The index is laundered through memory so
/// the compiler keeps the bound the verifier needs.
#[inline(always)]
pub(crate) fn ring_entry(slot: u32, i: u32) -> Option<u32> {
    if slot & LARGE != 0 {
        let chunk = MAGLEV.get_ptr((slot & !LARGE).wrapping_add(i / MAGLEV_CHUNK as u32))?;
        let off = unsafe { core::ptr::read_volatile(&((i as usize) % MAGLEV_CHUNK)) };
        if off >= MAGLEV_CHUNK {
            return None;
        }
        return Some(unsafe { *(*chunk).reals.as_ptr().add(off) });
    }
    let ring = RINGS.get_ptr(slot)?;
    let idx = unsafe { core::ptr::read_volatile(&(i as usize)) };
    if idx >= RING_SIZE {
        return None;
    }
    Some(unsafe { *(*ring).reals.as_ptr().add(idx) })
}
