//! Persistence: one template per client (and service or port group) in
//! CONNS, followed by the client's new connections while it lives.

use lb_common::{
    counter, mask_addr, svc_flags, tcp_state, ConnKey, ConnValue, ServiceValue, HEARTBEAT_STALE_NS,
};

use crate::{maps::CONNS, reals::usable, stats::count};

/// Persistence: the client's template key (client address masked by the
/// service's prefix, client port 0, the virtual port; for a port group the
/// fwmark in place of VIP and port, protocol 0, as IPVS keys them).
#[inline(always)]
fn template_key(svc: &ServiceValue, vport: u16, key: &ConnKey) -> ConnKey {
    let mut tkey = ConnKey {
        saddr: mask_addr(&key.saddr, svc.persist_prefix),
        daddr: key.daddr,
        sport: 0,
        dport: vport,
        proto: key.proto,
        family: key.family,
        _pad: [0; 2],
    };
    if svc.flags & svc_flags::FWMARK != 0 {
        let m = svc.fwmark.to_be_bytes();
        tkey.daddr = [m[0], m[1], m[2], m[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        tkey.dport = 0;
        tkey.proto = 0;
    }
    tkey
}

/// The real server of a live template (refreshed), if any. IPVS keeps
/// following a template to a quiesced real server; only removal breaks it.
/// (Own frame, as template_new: the main frame stays small.)
#[inline(never)]
pub(crate) fn template_hit(svc: &ServiceValue, vport: u16, key: &ConnKey, now: u64) -> Option<u32> {
    let tkey = template_key(svc, vport, key);
    let t = CONNS.get_ptr_mut(&tkey)?;
    let t = unsafe { &mut *t };
    // A template its timeout has run out on (by a margin the daemon's sweep
    // would have re-armed it within, if its client still had connections)
    // is over, also while the daemon is down.
    let age = now.saturating_sub(t.last_seen_ns);
    let over = age > (t.timeout as u64).saturating_mul(1_000_000_000) + HEARTBEAT_STALE_NS;
    if t.state == tcp_state::TEMPLATE && !over && usable(t.real_id, svc.id) {
        t.last_seen_ns = now;
        count(counter::PERSIST_HIT);
        return Some(t.real_id);
    }
    None
}

/// Creates the template of a newly scheduled persistent client. (Its own
/// frame: the scheduler's and this one are never on the stack together.)
#[inline(never)]
pub(crate) fn template_new(svc: &ServiceValue, vport: u16, key: &ConnKey, real_id: u32, now: u64) {
    let tkey = template_key(svc, vport, key);
    let template = ConnValue {
        real_id,
        svc_id: svc.id,
        last_seen_ns: now,
        state: tcp_state::TEMPLATE,
        flags: 0,
        _pad: [0; 2],
        timeout: svc.persist_timeout,
    };
    if CONNS.insert(&tkey, &template, 0).is_ok() {
        count(counter::PERSIST_NEW);
        crate::sync::emit(crate::forward::config().flags, &tkey, &template);
    } else {
        count(counter::CONN_INSERT_FAIL);
    }
}
