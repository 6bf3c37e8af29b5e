//! The `lb` program's pipeline and its known-flow path: the connection
//! entry first, as IPVS does (state transitions, port reuse,
//! expire_nodest_conn), and for a new flow the hand-off to `lb_new`. Later
//! fragments follow their first (see `frag`); ICMP errors follow the
//! connection they are about.

use aya_ebpf::{
    bindings::xdp_action::XDP_DROP, helpers::bpf_ktime_get_coarse_ns, programs::XdpContext,
};
use lb_common::{
    conn_flags, counter, dir_flags, rs_flags, sched, svc_flags, tcp_state, vip_bit, DirectorConfig,
    PROTO_TCP,
};

use crate::{
    forward::{config, forward},
    frag,
    maps::{CONNS, VIP_FILTER},
    new_conn::hand_over,
    parse::{parse, Flow, KIND_FRAG_FIRST, KIND_FRAG_LATER, KIND_ICMP},
    reals::{account, resolved},
    service::lookup_service,
    stats::{count, pass},
    sync,
};

/// The `lb` program: parse, then the connection entry; a new connection
/// is handed over to `lb_new`. The known-flow path stays in this one body:
/// split into helpers (even `#[inline(always)]` ones), the compiler lays it
/// out differently and the verifier walked 3077 instructions for `lb`
/// instead of 2866.
#[inline(always)]
pub(crate) fn process(ctx: &XdpContext) -> Result<u32, u32> {
    let config = config();
    let flow = parse(ctx, &config)?;
    // The VIP prefilter: an address no VIP has goes to the kernel before
    // any connection or service lookup.
    let bit = vip_bit(&flow.key.daddr);
    if !VIP_FILTER
        .get(bit / 64)
        .is_some_and(|w| *w & (1u64 << (bit % 64)) != 0)
    {
        return pass(counter::PASS_NOT_VIP_ADDRESS);
    }
    if flow.kind == KIND_FRAG_LATER {
        return frag::later(ctx, &config, &flow);
    }
    if flow.kind == KIND_ICMP {
        return icmp_error(ctx, &config, &flow);
    }
    // CLOCK_MONOTONIC_COARSE: cheaper, and tick resolution is plenty for
    // timeouts counted in seconds.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let is_tcp = flow.key.proto == PROTO_TCP;

    // The connection entry first, as IPVS does: an established flow costs one
    // hash lookup, and keeps going to its real server even if its service
    // was edited or deleted since (until the entry expires).
    let mut known = None;
    if let Some(entry) = CONNS.get_ptr_mut(&flow.key) {
        let e = unsafe { &mut *entry };
        let closed = e.state == tcp_state::CLOSE || e.state == tcp_state::TIME_WAIT;
        let syn_only = flow.tcp_flags & (tcp_state::F_SYN | tcp_state::F_ACK) == tcp_state::F_SYN;
        if is_tcp && closed && syn_only {
            // Port reuse: a new SYN on a closed entry starts a new connection
            // (the closed one stops counting as inactive).
            count(counter::CONN_REUSE);
            account(e.real_id, 0, -1);
        } else {
            // A backup's copy of a peer's entry: this director serves it now.
            if e.flags & conn_flags::SYNCED != 0 {
                e.flags &= !conn_flags::SYNCED;
            }
            // Write only what changed: the entry's cache line is shared by
            // every CPU that sees this flow.
            if e.last_seen_ns != now {
                e.last_seen_ns = now;
            }
            if is_tcp {
                let next = tcp_state::next(e.state, flow.tcp_flags);
                if next != e.state {
                    let was = e.state == tcp_state::ESTABLISHED;
                    let is = next == tcp_state::ESTABLISHED;
                    if was != is {
                        let d = if is { 1 } else { -1 };
                        account(e.real_id, d, -d);
                    }
                    e.state = next;
                    if sync::synced_state(next) {
                        sync::emit(config.flags, &flow.key, e);
                    }
                }
            }
            known = Some((e.real_id, e.svc_id, e.state));
        }
    }
    let Some((real_id, svc_id, state)) = known else {
        let (svc, vport) = lookup_service(&flow.key)?;
        if svc.flags & svc_flags::STANDBY != 0 {
            return pass(counter::PASS_STANDBY);
        }
        // Only a SYN (without RST) starts a TCP connection (IPVS with
        // sloppy_tcp=0): a spoofed ACK creates no entry and counts toward
        // no real server. An mh service forwards it by its ring, without
        // an entry, so a flow whose entry was lost keeps its real server.
        let syn = flow.tcp_flags & (tcp_state::F_SYN | tcp_state::F_RST) == tcp_state::F_SYN;
        if is_tcp && !syn && config.flags & dir_flags::SLOPPY_TCP == 0 {
            if svc.sched == sched::MH {
                return hand_over(ctx, &flow, svc, vport, now, true);
            }
            return pass(counter::PASS_TCP_NO_CONN);
        }
        // A new connection: hand over to lb_new.
        return hand_over(ctx, &flow, svc, vport, now, false);
    };
    let (mac, rflags) = resolved(real_id)?;
    if rflags & rs_flags::REMOVED != 0 && config.flags & dir_flags::EXPIRE_NODEST_CONN != 0 {
        // expire_nodest_conn: the real server is gone; expire the entry and
        // drop, so the client's retransmission is scheduled afresh.
        let _ = CONNS.remove(&flow.key);
        if state == tcp_state::ESTABLISHED {
            account(real_id, -1, 0);
        } else {
            account(real_id, 0, -1);
        }
        count(counter::DROP_EXPIRED_NODEST);
        return Err(XDP_DROP);
    }
    if flow.kind == KIND_FRAG_FIRST {
        frag::remember(&flow, real_id, svc_id);
    }
    forward(ctx, &config, &mac, svc_id, real_id, false, flow.ip_len)
}

/// An ICMP error about a known connection goes to its real server (path
/// MTU discovery needs it there); its state is not touched. About no
/// known connection: the kernel's.
#[inline(always)]
fn icmp_error(ctx: &XdpContext, config: &DirectorConfig, flow: &Flow) -> Result<u32, u32> {
    let Some(e) = (unsafe { CONNS.get(&flow.key) }) else {
        return pass(counter::PASS_ICMP);
    };
    let (real_id, svc_id) = (e.real_id, e.svc_id);
    let (mac, _) = resolved(real_id)?;
    count(counter::ICMP_FORWARDED);
    forward(ctx, config, &mac, svc_id, real_id, false, flow.ip_len)
}
