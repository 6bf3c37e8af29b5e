//! One service's part of a plan: its real servers' REALS values, its ring
//! and its services-map value, and whether anything it depends on changed
//! since the last plan (an unchanged service is not planned again).

use std::{collections::BTreeMap, net::IpAddr};

use lb_common::{rs_flags, svc_flags, RealServer, ServiceKey, ServiceValue, RING_SIZE};

use super::{
    chunks::{chunks_for, Chunks, Run},
    codec::{addr_bytes, service_flags, service_key, RealKey},
    plan::{Inputs, Published},
    rings::{maglev_small, Candidate, RingCache},
};
use crate::model::{fmt_addr_port, RealSpec, RingKind, Service, ServiceAddr};

/// The desired state of one service.
pub(super) struct ServicePlan {
    pub id: u32,
    pub value: ServiceValue,
    pub keys: Vec<ServiceKey>,
    /// A ring to write into the standby slot before the flip.
    pub standby: Option<(u32, Vec<u32>)>,
    /// Where a large Maglev table of `standby` goes (first MAGLEV chunk).
    pub standby_at: Option<u32>,
    /// The standby slot's MAGLEV run changes: (slot, new run or none).
    pub chunks: Option<(u32, Option<Run>)>,
    pub ring: (u8, Vec<u32>),
    pub quorum: (bool, u64),
}

/// Whether everything the data-plane state of service `a` follows from is
/// the same in `prev` and `next`: its spec and real servers, its port
/// group's members, its health policy, its standby state (VRRP), whether
/// large Maglev tables may be started (mh), and the
/// health state (up, weight) and MAC of each of its real servers (and
/// sorry server).
pub(super) fn unchanged(prev: &Inputs, next: &Inputs, a: &ServiceAddr) -> bool {
    let (Some(p), Some(n)) = (prev.table.services.get(a), next.table.services.get(a)) else {
        return false;
    };
    if p != n || prev.table.entries(a) != next.table.entries(a) {
        return false;
    }
    if prev.small_maglev_only != next.small_maglev_only
        && n.spec.scheduler.ring() == RingKind::Maglev
    {
        return false;
    }
    let policy = next.policy(a);
    if prev.policy(a) != policy || prev.is_standby(a) != next.is_standby(a) {
        return false;
    }
    let state = |i: &Inputs, r: &IpAddr| {
        (
            i.health.get(&(*a, *r)).map(|v| (v.up, v.weight)),
            i.macs.get(r).copied(),
        )
    };
    n.reals
        .keys()
        .map(|(addr, _)| addr)
        .chain(policy.sorry_server.iter())
        .all(|r| state(prev, r) == state(next, r))
}

/// The REALS value of real server `r` of service `svc` (id `sid`).
pub(super) fn real_value(inp: &Inputs, svc: &ServiceAddr, r: &RealSpec, sid: u32) -> RealServer {
    let (addr, family) = addr_bytes(&r.address);
    let mac = inp.macs.get(&r.address).copied();
    let mut flags = rs_flags::IN_USE;
    if mac.is_some() {
        flags |= rs_flags::MAC_VALID;
    }
    if inp.is_standby(svc) {
        flags |= rs_flags::STANDBY;
    }
    RealServer {
        addr,
        mac: mac.unwrap_or([0; 6]),
        flags,
        svc_id: sid,
        port: r.port.to_be(),
        family,
        _pad: 0,
        // The weight in force: what the dynamic schedulers divide by.
        weight: inp.weight(svc, r),
        u_threshold: r.u_threshold,
        l_threshold: r.l_threshold,
    }
}

fn candidate(slots: &BTreeMap<RealKey, u32>, sid: u32, r: &RealSpec, weight: u32) -> Candidate {
    Candidate {
        id: slots[&(sid, r.address, r.port)],
        name: fmt_addr_port(&r.address, r.port),
        weight,
    }
}

/// The desired state of service `a` (id `sid`); `slots` holds the slot of
/// each of its real servers.
#[allow(clippy::too_many_arguments)]
pub(super) fn plan_service(
    inp: &Inputs,
    cur: &Published,
    slots: &BTreeMap<RealKey, u32>,
    cache: &mut RingCache,
    space: &mut Chunks,
    a: &ServiceAddr,
    s: &Service,
    sid: u32,
) -> ServicePlan {
    // The real servers that may take new connections: weight in force,
    // MAC resolved.
    let available: Vec<Candidate> = s
        .reals
        .values()
        .map(|r| (r, inp.weight(a, r)))
        .filter(|(r, w)| *w > 0 && inp.macs.contains_key(&r.address))
        .map(|(r, w)| candidate(slots, sid, r, w))
        .collect();
    // Quorum with hysteresis; below it the sorry server (if any) takes
    // every new connection.
    let healthy: u64 = available.iter().map(|c| c.weight as u64).sum();
    let holds = inp
        .policy(a)
        .quorum_holds(cur.quorum.get(a).copied(), healthy);
    let candidates = match inp.sorry_real(a) {
        Some(sr) if !holds && inp.macs.contains_key(&sr.address) => {
            vec![candidate(slots, sid, &sr, 1)]
        }
        // sh/dh hash over every real server of the service (the program
        // skips unavailable ones, or falls back), so one going down moves
        // nobody else.
        _ if s.spec.scheduler.ring() == RingKind::Buckets => s
            .reals
            .values()
            .map(|r| candidate(slots, sid, r, r.weight))
            .collect(),
        _ => available,
    };
    let mut ring = cache.ring(sid, s.spec.scheduler, candidates.clone());
    let (old_gen, old_ring) = cur.rings.get(&sid).cloned().unwrap_or((0, Vec::new()));
    let new_service = cur.svc_ids.get(a) != Some(&sid);
    let mut gen = old_gen;
    let mut standby = None;
    let (mut standby_at, mut chunks) = (None, None);
    if (new_service || ring != old_ring) && !ring.is_empty() {
        // Write the standby ring, then flip the generation.
        gen ^= 1;
        let slot = sid * 2 + gen as u32;
        let old_run = cur.chunks.get(&slot).copied();
        if let Some(r) = old_run {
            space.give_back(r);
        }
        let live_large = cur.chunks.contains_key(&(sid * 2 + (old_gen as u32 & 1)));
        if ring.len() > RING_SIZE && inp.small_maglev_only && !live_large {
            ring = maglev_small(&candidates);
        }
        if ring.len() > RING_SIZE {
            match space.take(chunks_for(ring.len())) {
                Some(run) => standby_at = Some(run.0),
                None => {
                    tracing::warn!(
                        service = %a,
                        slots = ring.len(),
                        "no room in MAGLEV (limits.max_maglev_slots) for this service's \
                         Maglev table: it gets a {RING_SIZE}-slot one (less even)"
                    );
                    ring = maglev_small(&candidates);
                }
            }
        }
        let run = standby_at.map(|f| (f, chunks_for(ring.len())));
        if run != old_run {
            chunks = Some((slot, run));
        }
        standby = Some((slot, ring.clone()));
    }
    // An empty ring keeps the old one published (ring_len 0 says "none").
    let ring_len = ring.len().min(RING_SIZE) as u32;
    let live = if standby.is_some() { ring } else { old_ring };
    let value = ServiceValue {
        id: sid,
        ring_len,
        flags: service_flags(a, s)
            | if inp.is_standby(a) {
                svc_flags::STANDBY
            } else {
                0
            }
            | if live.len() > RING_SIZE {
                svc_flags::MAGLEV_LARGE
            } else {
                0
            },
        persist_timeout: s.spec.persistent.unwrap_or(0),
        fwmark: a.fwmark,
        sched: s.spec.scheduler.id(),
        gen,
        persist_prefix: s.spec.prefix(),
        _pad: 0,
    };
    ServicePlan {
        id: sid,
        value,
        keys: inp.table.entries(a).iter().map(service_key).collect(),
        standby,
        standby_at,
        chunks,
        ring: (gen, live),
        quorum: (holds, healthy),
    }
}
