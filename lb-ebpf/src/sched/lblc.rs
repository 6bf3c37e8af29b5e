//! lblc and lblcr: locality-based least connections, per destination
//! address (LBLC), without and with replication. Split over programs for
//! the verifier: `lb_lblc` (lblc), `lb_lblcr` (the set) and
//! `lb_lblcr_grow` (the wlc scan when the set must grow).

use lb_common::{names::jump, sched, ConnKey, LblcKey, LblcValue, ServiceValue};

use super::dynamic::dynamic_pick;
use crate::{
    maps::LBLC,
    reals::{load_of, overloaded, usable, weight_of},
};

/// Whether lblc/lblcr should leave real server `id`: lblc's is_overloaded
/// (more active connections than its weight) while another server is
/// under half load (which needs the scan: `half`).
#[inline(always)]
fn lblc_over(id: u32) -> bool {
    let (a, _) = load_of(id);
    a > weight_of(id) as u64
}

/// What lblc/lblcr found for a destination before the scan.
struct LblcState {
    key: LblcKey,
    entry: *mut LblcValue,
    current: u32,
    max_i: usize,
}

/// State of the scan of an lblcr set (bpf_loop): the least loaded (wlc)
/// usable member and the position of the most loaded one.
#[repr(C)]
struct SetScan {
    reals: [u32; sched::LBLCR_SET],
    n: u32,
    thr: u32,
    min_id: u32,
    max_at: u32,
    have_max: u32,
    min_w: u32,
    max_w: u32,
    /// The service (members must still be its own).
    svc_id: u32,
    min_a: u64,
    min_in: u64,
    max_a: u64,
    max_in: u64,
}

#[inline(never)]
extern "C" fn set_step(i: u32, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut SetScan) };
    if i >= c.n {
        return 1;
    }
    let id = c.reals[(i as usize) & (sched::LBLCR_SET - 1)];
    let w = weight_of(id);
    let (a, ina) = load_of(id);
    if c.have_max == 0 || sched::better(sched::WLC, (c.max_a, c.max_in, c.max_w), (a, ina, w)) {
        c.have_max = 1;
        c.max_at = i;
        c.max_a = a;
        c.max_in = ina;
        c.max_w = w;
    }
    if w > 0
        && usable(id, c.svc_id)
        && !(c.thr != 0 && overloaded(id))
        && (c.min_id == u32::MAX
            || sched::better(sched::WLC, (a, ina, w), (c.min_a, c.min_in, c.min_w)))
    {
        c.min_id = id;
        c.min_a = a;
        c.min_in = ina;
        c.min_w = w;
    }
    0
}

/// lblcr, first half (program lb_lblcr): the least loaded member of the
/// destination's set, used while it is not overloaded (active <= weight).
/// Otherwise (None) lb_lblcr_grow runs the wlc scan: one program for both
/// loops would exceed the verifier's budget. Returns the member and the
/// position of the most loaded one (u32::MAX: no usable member).
#[inline(always)]
pub(crate) fn lblcr_set(
    svc: &ServiceValue,
    key: &ConnKey,
    thr: bool,
    now: u64,
) -> (Option<u32>, u32, u32) {
    let k = LblcKey {
        daddr: key.daddr,
        svc_id: svc.id,
    };
    let Some(e) = LBLC.get_ptr_mut(&k) else {
        return (None, u32::MAX, 0);
    };
    let e = unsafe { &mut *e };
    e.last_use_ns = now;
    let mut c = SetScan {
        reals: e.reals,
        n: e.n,
        thr: thr as u32,
        min_id: u32::MAX,
        max_at: 0,
        have_max: 0,
        min_w: 0,
        max_w: 0,
        svc_id: svc.id,
        min_a: 0,
        min_in: 0,
        max_a: 0,
        max_in: 0,
    };
    unsafe {
        aya_ebpf::helpers::bpf_loop(
            sched::LBLCR_SET as u32,
            set_step as *mut core::ffi::c_void,
            &mut c as *mut SetScan as *mut core::ffi::c_void,
            0,
        );
    }
    if e.n > 1 && now.saturating_sub(e.last_mod_ns) > sched::LBLCR_EXPIRATION_NS {
        // The set has not changed for a long time: drop its most loaded
        // member (the kernel's set shrinking). Masks (LBLCR_SET is a power
        // of two) give the verifier its bounds; n <= LBLCR_SET.
        let last = (e.n - 1) as usize & (sched::LBLCR_SET - 1);
        let mi = c.max_at as usize & (sched::LBLCR_SET - 1);
        e.reals[mi] = e.reals[last];
        e.n -= 1;
        e.last_mod_ns = now;
    }
    if c.min_id != u32::MAX && !lblc_over(c.min_id) {
        return (Some(c.min_id), c.min_id, c.max_at);
    }
    (None, c.min_id, c.max_at)
}

/// lblc (program lb_lblc) and the second half of lblcr (lb_lblcr_grow):
/// the wlc scan first, from one verifier state, then the destination's
/// entry. lblc: its server while not overloaded (active <= weight), else
/// as [`lblc_after`] decides; lblcr: `cur` and `max_i` come from
/// [`lblcr_set`].
#[inline(always)]
pub(crate) fn lblc_pick<const MODE: u32>(
    svc: &ServiceValue,
    key: &ConnKey,
    slot: u32,
    n: u32,
    thr: bool,
    now: u64,
    cur: u32,
    max_i: u32,
) -> Option<u32> {
    let c = dynamic_pick(sched::WLC, slot, n, thr);
    let mut st = LblcState {
        key: LblcKey {
            daddr: key.daddr,
            svc_id: svc.id,
        },
        entry: core::ptr::null_mut(),
        current: u32::MAX,
        max_i: 0,
    };
    if let Some(e) = LBLC.get_ptr_mut(&st.key) {
        st.entry = e;
        let e = unsafe { &mut *e };
        e.last_use_ns = now;
        if MODE == jump::LBLC {
            let id = e.reals[0];
            if e.n > 0 && weight_of(id) > 0 && usable(id, svc.id) && !(thr && overloaded(id)) {
                st.current = id;
            }
        } else {
            st.current = cur;
            st.max_i = max_i as usize;
        }
    }
    if MODE == jump::LBLC && st.current != u32::MAX && !lblc_over(st.current) {
        return Some(st.current);
    }
    lblc_after(svc, &st, c.best(), c.half != 0, now)
}

/// lblc / lblcr, second half: keep the overloaded server unless another is
/// under half load (`half`); else the wlc choice `best` becomes the
/// destination's server (lblc) or joins its set (lblcr).
#[inline(always)]
fn lblc_after(
    svc: &ServiceValue,
    st: &LblcState,
    best: Option<u32>,
    half: bool,
    now: u64,
) -> Option<u32> {
    if st.current != u32::MAX && !half {
        return Some(st.current);
    }
    let best = best?;
    if st.entry.is_null() {
        let mut v = LblcValue {
            reals: [best, 0, 0, 0, 0, 0, 0, 0],
            n: 1,
            _pad: 0,
            last_mod_ns: now,
            last_use_ns: now,
        };
        v.n = 1;
        let _ = LBLC.insert(&st.key, &v, 0);
        return Some(best);
    }
    let e = unsafe { &mut *st.entry };
    if svc.sched == sched::LBLC || e.n == 0 {
        e.reals[0] = best;
        e.n = 1;
    } else {
        // lblcr: the set grows by the wlc choice (its most loaded member
        // makes room when it is full).
        let at = if (e.n as usize) < sched::LBLCR_SET {
            e.n as usize
        } else {
            st.max_i
        };
        e.reals[at & (sched::LBLCR_SET - 1)] = best;
        if (e.n as usize) < sched::LBLCR_SET {
            e.n += 1;
        }
    }
    e.last_mod_ns = now;
    Some(best)
}
