//! New connections, in programs entered by tail call (`lb_new`, `lb_lblc`,
//! `lb_lblcr`, `lb_lblcr_grow`: one function instantiated per JUMP slot of
//! `lb_common::names::jump`, the slot being its mode): persistence, the
//! scheduler, the connection entry, forward. `lb` hands the flow over in
//! SCRATCH.

use aya_ebpf::{bindings::xdp_action::XDP_DROP, programs::XdpContext};
use lb_common::{
    counter, names::jump, sched, svc_flags, tcp_state, ConnValue, FragKey, FragValue, ServiceValue,
    PROTO_TCP,
};

use crate::{
    forward::{config, forward},
    maps::{NewConn, CONNS, FRAGS, JUMP, SCRATCH},
    parse::{Flow, KIND_FRAG_FIRST},
    persist::{template_hit, template_new},
    reals::{account, resolved},
    sched::{lblc::lblcr_set, schedule},
    stats::count,
    sync,
};

/// `lb`'s hand-off of a new connection to `lb_new` (tail call, JUMP slot
/// [`jump::NEW`]), with the flow and its service in SCRATCH.
#[inline(always)]
pub(crate) fn hand_over(
    ctx: &XdpContext,
    flow: &Flow,
    svc: ServiceValue,
    vport: u16,
    now: u64,
    stateless: bool,
) -> Result<u32, u32> {
    let sc = SCRATCH.get_ptr_mut(0).ok_or(XDP_DROP)?;
    unsafe {
        *sc = NewConn {
            key: flow.key,
            svc,
            ip_len: flow.ip_len,
            now,
            vport,
            tcp_flags: flow.tcp_flags,
            kind: flow.kind,
            lblcr_cur: u32::MAX,
            lblcr_max_i: 0,
            frag_id: flow.frag_id,
            stateless: stateless as u32,
        };
        JUMP.tail_call(ctx, jump::NEW);
    }
    // Only reached when lb_new is not installed.
    count(counter::DROP_NO_REAL);
    Err(XDP_DROP)
}

/// The body of the new-connection program of JUMP slot `MODE`.
#[inline(always)]
pub(crate) fn new_conn<const MODE: u32>(ctx: &XdpContext) -> Result<u32, u32> {
    // Read in place: a copy would cost 88 bytes of the 512-byte stack.
    let sc = match SCRATCH.get(0) {
        Some(sc) => sc,
        None => return Err(XDP_DROP),
    };
    let svc = &sc.svc;
    let now = sc.now;
    let one_packet = svc.flags & svc_flags::ONE_PACKET != 0;
    let persist = svc.flags & svc_flags::PERSISTENT != 0;
    let hit = if persist {
        template_hit(svc, sc.vport, &sc.key, now)
    } else {
        None
    };
    if hit.is_none() && MODE == jump::NEW {
        let to = match svc.sched {
            sched::LBLC => jump::LBLC,
            sched::LBLCR => jump::LBLCR,
            _ => jump::NEW,
        };
        if to != jump::NEW {
            unsafe { JUMP.tail_call(ctx, to) };
            count(counter::DROP_NO_REAL);
            return Err(XDP_DROP);
        }
    }
    let mut early = None;
    if hit.is_none() && MODE == jump::LBLCR {
        let thr = svc.flags & svc_flags::THRESHOLDS != 0;
        let (id, cur, max_i) = lblcr_set(svc, &sc.key, thr, now);
        match id {
            Some(id) => early = Some(id),
            None => {
                if let Some(m) = SCRATCH.get_ptr_mut(0) {
                    unsafe {
                        (*m).lblcr_cur = cur;
                        (*m).lblcr_max_i = max_i;
                    }
                }
                unsafe { JUMP.tail_call(ctx, jump::LBLCR_GROW) };
                count(counter::DROP_NO_REAL);
                return Err(XDP_DROP);
            }
        }
    }
    let real_id = match (hit, early) {
        (Some(r), _) | (None, Some(r)) => r,
        (None, None) => schedule::<MODE>(svc, &sc.key, now, sc.lblcr_cur, sc.lblcr_max_i)?,
    };
    let stateless = sc.stateless != 0;
    if persist && hit.is_none() && !stateless {
        template_new(svc, sc.vport, &sc.key, real_id, now);
    }
    let (mac, _) = resolved(real_id)?;
    if stateless {
        count(counter::FWD_STATELESS);
    } else if !one_packet {
        insert_conn(sc, svc.id, real_id, now);
    }
    if sc.kind == KIND_FRAG_FIRST {
        remember_first(sc, real_id);
    }
    let config = config();
    forward(ctx, &config, &mac, svc.id, real_id, !stateless, sc.ip_len)
}

/// The first fragment of a datagram went to `real_id` (the later ones
/// follow it).
#[inline(never)]
fn remember_first(sc: &NewConn, real_id: u32) {
    let k = FragKey {
        saddr: sc.key.saddr,
        daddr: sc.key.daddr,
        id: sc.frag_id,
        proto: sc.key.proto,
        family: sc.key.family,
        _pad: [0; 2],
    };
    let _ = FRAGS.insert(
        &k,
        &FragValue {
            real_id,
            svc_id: sc.svc.id,
        },
        0,
    );
}

/// The connection entry of a new connection, counted in RS_LOAD.
#[inline(never)]
fn insert_conn(sc: &NewConn, svc_id: u32, real_id: u32, now: u64) {
    let is_tcp = sc.key.proto == PROTO_TCP;
    {
        let state = if !is_tcp {
            tcp_state::UDP
        } else if sc.tcp_flags & (tcp_state::F_SYN | tcp_state::F_FIN | tcp_state::F_RST) == 0 {
            // Mid-stream pick-up (sloppy_tcp: no SYN seen): established.
            tcp_state::ESTABLISHED
        } else {
            tcp_state::next(tcp_state::NONE, sc.tcp_flags)
        };
        let value = ConnValue {
            real_id,
            svc_id,
            last_seen_ns: now,
            state,
            flags: 0,
            _pad: [0; 2],
            timeout: 0,
        };
        if CONNS.insert(&sc.key, &value, 0).is_err() {
            count(counter::CONN_INSERT_FAIL);
        } else {
            count(counter::CONN_NEW);
            if state == tcp_state::ESTABLISHED {
                account(real_id, 1, 0);
            } else {
                account(real_id, 0, 1);
            }
            if !is_tcp || sync::synced_state(state) {
                sync::emit(config().flags, &sc.key, &value);
            }
        }
    }
}
