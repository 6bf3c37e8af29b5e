//! The planner: from what the operator and the health checks want
//! ([`Inputs`]) and what the maps hold ([`Published`]), the maps' next
//! contents and the ordered writes that get them there. Pure: no syscall,
//! no clock; the commit (see `commit`) executes the writes.
//!
//! Capacity is checked here, before anything is written. The writes are
//! ordered so that every intermediate state forwards correctly:
//!
//! 1. the director's own settings (source MAC, flags);
//! 2. services-map keys that leave (their traffic goes to the kernel, as
//!    it will in the end; this also makes room for new keys);
//! 3. statistics of newly assigned service ids start at zero;
//! 4. real-server slots that are new or gain capability (a new slot's
//!    counters zeroed first), before any ring can point at them;
//! 5. the standby rings (not yet read by the program);
//! 6. services-map entries that are new or changed: one write flips a
//!    service to its new ring (its generation);
//! 7. real-server slots that lose capability (removed, MAC lost), once no
//!    live ring points at them any more.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use lb_common::{
    dir_flags, rs_flags, DirectorConfig, RealServer, ServiceKey, ServiceValue, RING_SIZE,
};

use super::{
    codec::{addr_bytes, service_flags, service_key, RealKey},
    ids,
    rings::{Candidate, RingCache},
};
use crate::{
    dataplane::{Limits, Slot, Value, Write},
    health::{effective_weight, ServicePolicy, Verdict},
    model::{fmt_addr_port, Forward, RealSpec, RingKind, Service, ServiceAddr, Table},
};

/// Everything the maps' contents follow from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inputs {
    pub table: Table,
    /// Health policy per service (absent: [`ServicePolicy::none`]).
    pub policies: HashMap<ServiceAddr, ServicePolicy>,
    /// Health-check verdicts (absent: not checked, so up).
    pub health: HashMap<(ServiceAddr, IpAddr), Verdict>,
    /// Resolved MACs (absent: unresolved, so no new connection goes there).
    pub macs: HashMap<IpAddr, [u8; 6]>,
    /// Source MAC of forwarded frames.
    pub director_mac: [u8; 6],
    /// IPVS expire_nodest_conn.
    pub expire_nodest: bool,
}

impl Inputs {
    pub fn policy(&self, svc: &ServiceAddr) -> ServicePolicy {
        self.policies
            .get(svc)
            .cloned()
            .unwrap_or_else(ServicePolicy::none)
    }

    /// The sorry server of `svc` as a real-server entry (weight 1, DR port).
    pub fn sorry_real(&self, svc: &ServiceAddr) -> Option<RealSpec> {
        let a = self.policies.get(svc)?.sorry_server?;
        Some(RealSpec {
            u_threshold: 0,
            l_threshold: 0,
            address: a,
            port: svc.port,
            weight: 1,
            forward: Forward::Route,
        })
    }

    /// Real-server addresses that need a MAC (sorry servers included).
    pub fn addresses(&self) -> BTreeSet<IpAddr> {
        self.table
            .services
            .values()
            .flat_map(|s| s.reals.keys().map(|(a, _)| *a))
            .chain(self.policies.values().filter_map(|p| p.sorry_server))
            .collect()
    }

    /// The weight in force of real server `r` of `svc`.
    pub fn weight(&self, svc: &ServiceAddr, r: &RealSpec) -> u32 {
        effective_weight(r.weight, self.health.get(&(*svc, r.address)))
    }
}

/// What the maps hold, as the director wrote (or recovered) them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Published {
    /// Service ids (index into RINGS, SVC_STATS, CURSORS).
    pub svc_ids: BTreeMap<ServiceAddr, u32>,
    /// The services map.
    pub services: BTreeMap<ServiceKey, ServiceValue>,
    /// The live ring of each service id: (generation, real-server ids).
    pub rings: BTreeMap<u32, (u8, Vec<u32>)>,
    /// REALS slots in use (removed ones included: their connections go on).
    pub reals: BTreeMap<u32, RealServer>,
    /// Slot of each (service id, address, port).
    pub real_ids: BTreeMap<RealKey, u32>,
    /// Whether each service's quorum holds.
    pub quorum: BTreeMap<ServiceAddr, bool>,
    pub config: DirectorConfig,
}

impl Published {
    /// Slots of real servers that left their service (kept for their
    /// established connections).
    pub fn removed(&self) -> impl Iterator<Item = u32> + '_ {
        self.reals
            .iter()
            .filter(|(_, r)| r.flags & rs_flags::REMOVED != 0)
            .map(|(id, _)| *id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("too many virtual services: {need} needed, limits.max_services is {max}")]
    ServicesFull { need: usize, max: u32 },
    #[error("too many real servers: {need} slots needed, limits.max_reals is {max} (a removed real server keeps its slot while connections use it, and a slot freed by a change is reused only by a later one)")]
    RealsFull { need: usize, max: u32 },
}

/// The outcome of planning.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The maps' contents once `writes` are done.
    pub next: Published,
    /// The writes, in commit order.
    pub writes: Vec<Write>,
    /// Real-server slots given out by this plan (never used, or reclaimed).
    pub fresh: BTreeSet<u32>,
    /// Services whose quorum changed: (service, holds now, healthy weight).
    pub quorum_changes: Vec<(ServiceAddr, bool, u64)>,
}

/// The desired state of one service.
struct ServicePlan {
    id: u32,
    value: ServiceValue,
    keys: Vec<ServiceKey>,
    /// A ring to write into the standby slot before the flip.
    standby: Option<(u32, Vec<u32>)>,
    ring: (u8, Vec<u32>),
    quorum: (bool, u64),
}

/// Plans the maps' contents for `inp`. `reclaimable` lists removed slots no
/// connection refers to any more, which may be given to new real servers.
pub fn plan(
    inp: &Inputs,
    cur: &Published,
    limits: &Limits,
    reclaimable: &BTreeSet<u32>,
    cache: &mut RingCache,
) -> Result<Plan, PlanError> {
    let table = &inp.table;
    let need = table.slots_needed();
    if need > limits.max_services as usize {
        return Err(PlanError::ServicesFull {
            need,
            max: limits.max_services,
        });
    }
    let svc_ids = ids::services(table, &cur.svc_ids, limits.max_services)?;
    let wanted = wanted_reals(inp, &svc_ids);
    let slots = ids::reals(&wanted, cur, reclaimable, limits.max_reals)?;

    let mut next = Published {
        svc_ids: svc_ids.clone(),
        real_ids: slots.real_ids,
        config: DirectorConfig {
            mac: inp.director_mac,
            flags: if inp.expire_nodest {
                dir_flags::EXPIRE_NODEST_CONN
            } else {
                0
            },
            _pad: 0,
        },
        ..Default::default()
    };
    // Real servers as the table wants them...
    for (key, spec, svc) in &wanted {
        let id = next.real_ids[key];
        next.reals.insert(id, real_value(inp, svc, spec, key.0));
    }
    // ...and the ones that left, kept (flagged) for their connections.
    for (key, id) in &cur.real_ids {
        if next.reals.contains_key(id) || slots.reclaimed.contains(id) {
            continue;
        }
        let mut r = cur.reals[id];
        r.flags |= rs_flags::REMOVED;
        next.reals.insert(*id, r);
        next.real_ids.insert(*key, *id);
    }
    let mut plans = Vec::new();
    let mut quorum_changes = Vec::new();
    for (a, s) in &table.services {
        let p = plan_service(inp, cur, &next, cache, a, s, svc_ids[a]);
        let was = cur.quorum.get(a).copied();
        if was.is_some() && was != Some(p.quorum.0) {
            quorum_changes.push((*a, p.quorum.0, p.quorum.1));
        }
        next.quorum.insert(*a, p.quorum.0);
        next.rings.insert(p.id, p.ring.clone());
        for k in &p.keys {
            next.services.insert(*k, p.value);
        }
        plans.push(p);
    }
    let writes = order_writes(cur, &next, &plans, &slots.fresh, &svc_ids);
    Ok(Plan {
        next,
        writes,
        fresh: slots.fresh,
        quorum_changes,
    })
}

/// Every real server the table wants a slot for: (slot key, spec, service),
/// the sorry servers included.
fn wanted_reals(
    inp: &Inputs,
    svc_ids: &BTreeMap<ServiceAddr, u32>,
) -> Vec<(RealKey, RealSpec, ServiceAddr)> {
    let mut v = Vec::new();
    for (a, s) in &inp.table.services {
        let sid = svc_ids[a];
        for r in s.reals.values().copied().chain(inp.sorry_real(a)) {
            v.push(((sid, r.address, r.port), r, *a));
        }
    }
    v
}

/// The REALS value of real server `r` of service `svc` (id `sid`).
fn real_value(inp: &Inputs, svc: &ServiceAddr, r: &RealSpec, sid: u32) -> RealServer {
    let (addr, family) = addr_bytes(&r.address);
    let mac = inp.macs.get(&r.address).copied();
    let mut flags = rs_flags::IN_USE;
    if mac.is_some() {
        flags |= rs_flags::MAC_VALID;
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

fn candidate(next: &Published, sid: u32, r: &RealSpec, weight: u32) -> Candidate {
    Candidate {
        id: next.real_ids[&(sid, r.address, r.port)],
        name: fmt_addr_port(&r.address, r.port),
        weight,
    }
}

fn plan_service(
    inp: &Inputs,
    cur: &Published,
    next: &Published,
    cache: &mut RingCache,
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
        .map(|(r, w)| candidate(next, sid, r, w))
        .collect();
    // Quorum with hysteresis; below it the sorry server (if any) takes
    // every new connection.
    let healthy: u64 = available.iter().map(|c| c.weight as u64).sum();
    let holds = inp
        .policy(a)
        .quorum_holds(cur.quorum.get(a).copied(), healthy);
    let candidates = match inp.sorry_real(a) {
        Some(sr) if !holds && inp.macs.contains_key(&sr.address) => {
            vec![candidate(next, sid, &sr, 1)]
        }
        // sh/dh hash over every real server of the service (the program
        // skips unavailable ones, or falls back), so one going down moves
        // nobody else.
        _ if s.spec.scheduler.ring() == RingKind::Buckets => s
            .reals
            .values()
            .map(|r| candidate(next, sid, r, r.weight))
            .collect(),
        _ => available,
    };
    let ring = cache.ring(sid, s.spec.scheduler, candidates);
    let (old_gen, old_ring) = cur.rings.get(&sid).cloned().unwrap_or((0, Vec::new()));
    let new_service = cur.svc_ids.get(a) != Some(&sid);
    let mut gen = old_gen;
    let mut standby = None;
    if (new_service || ring != old_ring) && !ring.is_empty() {
        // Write the standby ring, then flip the generation.
        gen ^= 1;
        standby = Some((sid * 2 + gen as u32, ring.clone()));
    }
    let ring_len = ring.len().min(RING_SIZE) as u32;
    let value = ServiceValue {
        id: sid,
        ring_len,
        flags: service_flags(a, s),
        persist_timeout: s.spec.persistent.unwrap_or(0),
        fwmark: a.fwmark,
        sched: s.spec.scheduler.id(),
        gen,
        persist_prefix: s.spec.prefix(),
        _pad: 0,
    };
    // An empty ring keeps the old one published (ring_len 0 says "none").
    let live = if standby.is_some() { ring } else { old_ring };
    ServicePlan {
        id: sid,
        value,
        keys: inp.table.entries(a).iter().map(service_key).collect(),
        standby,
        ring: (gen, live),
        quorum: (holds, healthy),
    }
}

/// Whether `new` takes away something `old` had (in use, MAC, not removed).
fn loses_capability(old: &RealServer, new: &RealServer) -> bool {
    let usable = |r: &RealServer| {
        r.flags & (rs_flags::IN_USE | rs_flags::MAC_VALID | rs_flags::REMOVED)
            == rs_flags::IN_USE | rs_flags::MAC_VALID
    };
    let in_use =
        |r: &RealServer| r.flags & rs_flags::IN_USE != 0 && r.flags & rs_flags::REMOVED == 0;
    (usable(old) && !usable(new)) || (in_use(old) && !in_use(new))
}

fn order_writes(
    cur: &Published,
    next: &Published,
    plans: &[ServicePlan],
    fresh: &BTreeSet<u32>,
    svc_ids: &BTreeMap<ServiceAddr, u32>,
) -> Vec<Write> {
    let mut w = Vec::new();
    let mut put = |slot, value| w.push(Write { slot, value });
    // 1. the director's settings
    if next.config != cur.config {
        put(Slot::Config, Value::Config(next.config));
    }
    // 2. keys that leave
    for k in cur.services.keys() {
        if !next.services.contains_key(k) {
            put(Slot::Service(*k), Value::Service(None));
        }
    }
    // 3. new service ids start with zero statistics
    let old_ids: BTreeSet<(ServiceAddr, u32)> =
        cur.svc_ids.iter().map(|(a, id)| (*a, *id)).collect();
    for (a, id) in svc_ids {
        if !old_ids.contains(&(*a, *id)) {
            put(Slot::SvcStats(*id), Value::Stats(Vec::new()));
        }
    }
    // 4. real servers that are new or gain capability
    let mut later = Vec::new();
    for (id, r) in &next.reals {
        if fresh.contains(id) {
            // A (re)used slot starts with no connections and no history.
            put(Slot::Load(*id), Value::Load(Default::default()));
            put(Slot::Closed(*id), Value::Load(Default::default()));
            put(Slot::Over(*id), Value::Over(0));
            put(Slot::RsStats(*id), Value::Stats(Vec::new()));
            put(Slot::Real(*id), Value::Real(*r));
            continue;
        }
        match cur.reals.get(id) {
            Some(old) if old == r => {}
            Some(old) if loses_capability(old, r) => later.push((*id, *r)),
            _ => put(Slot::Real(*id), Value::Real(*r)),
        }
    }
    // 5. standby rings
    for p in plans {
        if let Some((slot, ring)) = &p.standby {
            put(Slot::Ring(*slot), Value::ring(ring));
        }
    }
    // 6. services: new entries and flips
    for (k, v) in &next.services {
        if cur.services.get(k) != Some(v) {
            put(Slot::Service(*k), Value::Service(Some(*v)));
        }
    }
    // 7. real servers that lose capability
    for (id, r) in later {
        put(Slot::Real(id), Value::Real(r));
    }
    w
}
