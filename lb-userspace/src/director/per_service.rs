//! One service's part of a plan: its real servers' REALS values, its ring
//! and its services-map value, and whether anything it depends on changed
//! since the last plan (an unchanged service is not planned again).

use std::{collections::BTreeMap, net::IpAddr};

use lb_common::{rs_flags, svc_flags, RealServer, ServiceKey, ServiceValue, RING_SIZE};

use super::{
    chunks::{chunks_for, Chunks, Run},
    codec::{addr_bytes, service_flags, service_key, RealKey},
    plan::{Inputs, Published},
    rings::{maglev_size, Candidate, RingCache},
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
    /// MAGLEV runs that change: (ring slot, new run or none).
    pub chunks: Vec<(u32, Option<Run>)>,
    /// The Maglev table this service should have had (slots), when the
    /// MAGLEV map had no room for it and it got a RING_SIZE one.
    pub squeezed: Option<usize>,
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
    let (old_gen, old_ring) = cur.rings.get(&sid).cloned().unwrap_or((0, Vec::new()));
    let new_service = cur.svc_ids.get(a) != Some(&sid);
    let live_large = !new_service && old_ring.len() > RING_SIZE;
    // A Maglev table is sized by the configured real servers, so that one
    // failing a check (or a health policy's weight) keeps the size.
    let mut maglev_slots = maglev_size(s.reals.values().map(|r| r.weight));
    if inp.small_maglev_only && !live_large {
        maglev_slots = RING_SIZE;
    }
    let sched = s.spec.scheduler;
    let mut ring = cache.ring(sid, sched, candidates.clone(), maglev_slots);
    let (live_slot, standby_slot) = (
        sid * 2 + (old_gen as u32 & 1),
        sid * 2 + (!old_gen as u32 & 1),
    );
    let mut standby_at = None;
    let mut chunks = Vec::new();
    let mut squeezed = None;
    if (new_service || ring != old_ring) && ring.len() > RING_SIZE {
        match place(
            space,
            cur,
            standby_slot,
            live_slot,
            live_large,
            chunks_for(ring.len()),
        ) {
            Ok((at, c)) => (standby_at, chunks) = (Some(at), c),
            Err(c) => {
                squeezed = Some(ring.len());
                chunks = c;
                ring = cache.ring(sid, sched, candidates, RING_SIZE);
            }
        }
    }
    let mut gen = old_gen;
    let mut standby = None;
    if (new_service || ring != old_ring) && !ring.is_empty() {
        // Write the standby ring, then flip the generation.
        gen ^= 1;
        if standby_at.is_none() {
            // A small ring: the runs no table of this service reads go
            // back (the live one's only once it is no longer live).
            for (slot, r) in [(standby_slot, true), (live_slot, !live_large)] {
                if r && cur.chunks.contains_key(&slot) && !chunks.iter().any(|(s, _)| *s == slot) {
                    space.give_back(cur.chunks[&slot]);
                    chunks.push((slot, None));
                }
            }
        }
        standby = Some((standby_slot, ring.clone()));
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
        squeezed,
        ring: (gen, live),
        quorum: (holds, healthy),
    }
}

/// Runs for a large Maglev table of `need` chunks: the standby slot's (where
/// it is written now) and the live slot's (where the next change writes),
/// both or neither, so that a service does not alternate between a large
/// and a small table as room comes and goes. The live slot's run is only
/// replaced while no large table of it is live. Ok: where the table goes
/// and the runs that change; Err: the runs given back (none is taken).
type RunChanges = Vec<(u32, Option<Run>)>;

fn place(
    space: &mut Chunks,
    cur: &Published,
    standby: u32,
    live: u32,
    live_large: bool,
    need: u32,
) -> Result<(u32, RunChanges), RunChanges> {
    let mut changes = Vec::new();
    let mut taken = Vec::new();
    let mut fit = |slot: u32, changes: &mut RunChanges, taken: &mut Vec<Run>| -> bool {
        match cur.chunks.get(&slot).copied() {
            Some(r) if r.1 == need => true,
            old => {
                if let Some(r) = old {
                    space.give_back(r);
                    changes.push((slot, None));
                }
                match space.take(need) {
                    Some(r) => {
                        taken.push(r);
                        changes.retain(|(s, _)| *s != slot);
                        changes.push((slot, Some(r)));
                        true
                    }
                    None => false,
                }
            }
        }
    };
    let ok = fit(standby, &mut changes, &mut taken)
        && (live_large || fit(live, &mut changes, &mut taken));
    if !ok {
        for r in taken {
            space.give_back(r);
        }
        changes.retain(|(_, r)| r.is_none());
        return Err(changes);
    }
    let at = changes
        .iter()
        .find(|(s, _)| *s == standby)
        .and_then(|(_, r)| *r)
        .or_else(|| cur.chunks.get(&standby).copied())
        .map(|r| r.0)
        .unwrap_or_default();
    Ok((at, changes))
}
