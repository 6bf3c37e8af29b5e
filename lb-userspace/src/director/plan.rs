//! The planner: from what the operator and the health checks want
//! ([`Inputs`]) and what the maps hold ([`Published`]), the maps' next
//! contents and the ordered writes that get them there. Pure: no syscall,
//! no clock; the commit (see `commit`) executes the writes.
//!
//! Capacity is checked here, before anything is written. The writes are
//! ordered so that every intermediate state forwards correctly:
//!
//! 1. the director's own settings (source MAC, flags), and the VIP
//!    prefilter bits that are new (a new VIP's packets reach the lookups
//!    before its service is there);
//! 2. services-map keys that leave (their traffic goes to the kernel, as
//!    it will in the end; this also makes room for new keys);
//! 3. statistics of newly assigned service ids start at zero;
//! 4. real-server slots that are new or gain capability (a new slot's
//!    counters zeroed first), before any ring can point at them;
//! 5. the standby rings (not yet read by the program), a large Maglev
//!    table's chunks before the ring slot that says where they are;
//! 6. services-map entries that are new or changed: one write flips a
//!    service to its new ring (its generation);
//! 7. real-server slots that lose capability (removed, MAC lost), once no
//!    live ring points at them any more;
//! 8. VIP prefilter bits that go (no service and no entry needs them).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use lb_common::{dir_flags, rs_flags, DirectorConfig, RealServer, ServiceKey, ServiceValue};

use super::{
    chunks::{Chunks, Run},
    codec::{bytes_addr, RealKey},
    ids, order, per_service,
    rings::RingCache,
};
use crate::{
    dataplane::{Limits, Write},
    health::{effective_weight, ServicePolicy, Verdict},
    model::{Forward, RealSpec, ServiceAddr, Table},
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
    /// IPVS sloppy_tcp: any TCP packet may start a connection.
    pub sloppy_tcp: bool,
    /// VLANs whose tagged frames the director serves.
    pub vlans: BTreeSet<u16>,
    /// A sync master runs: the program reports the entries to sync.
    pub sync_master: bool,
    /// VIPs this director is a VRRP backup for: their services are on
    /// standby (nothing forwarded; the master does it).
    pub standby: BTreeSet<IpAddr>,
    /// The attached program may be an older build's (lbd starting, before
    /// it swaps its own program in): no service gets a large Maglev table
    /// it does not have published already (an older program would read the
    /// ring slot that says where the table is as the table).
    pub small_maglev_only: bool,
    /// VIP prefilter bits (`lb_common::vip_bit`) that connection entries
    /// go to, beyond the services' VIPs (a VIP whose services were deleted
    /// while connections to it go on), as the last sweep found them.
    pub vip_bits_in_use: BTreeSet<u32>,
    /// Whether `vip_bits_in_use` accounts for every entry: a sweep that
    /// began after the last VIP lost its services saw all the entries such
    /// a VIP can have (no new ones are made without a service). Until then
    /// the published bits stay.
    pub vip_bits_settled: bool,
}

/// The VIP prefilter bits of every service's addresses (port-group members
/// included).
pub fn service_vip_bits(t: &Table) -> BTreeSet<u32> {
    t.services
        .keys()
        .flat_map(|a| t.entries(a))
        .map(|e| lb_common::vip_bit(&super::codec::addr_bytes(&e.address).0))
        .collect()
}

impl Inputs {
    /// Whether service `a` is on standby: its VIP is (a port group's: all
    /// its members' VIPs are).
    pub fn is_standby(&self, a: &ServiceAddr) -> bool {
        if self.standby.is_empty() {
            return false;
        }
        if a.is_fwmark() {
            let members = self.table.groups.get(&a.fwmark).map(|g| &g.members);
            return members.is_some_and(|m| {
                !m.is_empty() && m.iter().all(|s| self.standby.contains(&s.address))
            });
        }
        self.standby.contains(&a.address)
    }

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
    /// MAGLEV chunks of each ring slot (service id * 2 + generation) that
    /// holds a large Maglev table.
    pub chunks: BTreeMap<u32, Run>,
    /// REALS slots in use (removed ones included: their connections go on).
    pub reals: BTreeMap<u32, RealServer>,
    /// Slot of each (service id, address, port).
    pub real_ids: BTreeMap<RealKey, u32>,
    /// Whether each service's quorum holds.
    pub quorum: BTreeMap<ServiceAddr, bool>,
    pub config: DirectorConfig,
    /// VLANs served (VLANS at 1).
    pub vlans: BTreeSet<u16>,
    /// Bits set in the VIP prefilter.
    pub vip_bits: BTreeSet<u32>,
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

/// What a plan changes in the published state (None: the entry goes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delta {
    pub svc_ids: BTreeMap<ServiceAddr, Option<u32>>,
    pub services: BTreeMap<ServiceKey, Option<ServiceValue>>,
    pub rings: BTreeMap<u32, Option<(u8, Vec<u32>)>>,
    pub chunks: BTreeMap<u32, Option<Run>>,
    pub reals: BTreeMap<u32, Option<RealServer>>,
    pub real_ids: BTreeMap<RealKey, Option<u32>>,
    pub quorum: BTreeMap<ServiceAddr, Option<bool>>,
    pub config: Option<DirectorConfig>,
    pub vlans: Option<BTreeSet<u16>>,
    pub vip_bits: Option<BTreeSet<u32>>,
}

fn merge<K: Ord, V>(m: &mut BTreeMap<K, V>, changes: BTreeMap<K, Option<V>>) {
    for (k, v) in changes {
        match v {
            Some(v) => m.insert(k, v),
            None => m.remove(&k),
        };
    }
}

impl Published {
    /// The state once a plan's writes are committed.
    pub fn apply(&mut self, d: Delta) {
        merge(&mut self.svc_ids, d.svc_ids);
        merge(&mut self.services, d.services);
        merge(&mut self.rings, d.rings);
        merge(&mut self.chunks, d.chunks);
        merge(&mut self.reals, d.reals);
        merge(&mut self.real_ids, d.real_ids);
        merge(&mut self.quorum, d.quorum);
        if let Some(c) = d.config {
            self.config = c;
        }
        if let Some(v) = d.vlans {
            self.vlans = v;
        }
        if let Some(b) = d.vip_bits {
            self.vip_bits = b;
        }
    }
}

/// The outcome of planning.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// What changes in the published state once `writes` are done.
    pub delta: Delta,
    /// The writes, in commit order.
    pub writes: Vec<Write>,
    /// Real-server slots given out by this plan (never used, or reclaimed).
    pub fresh: BTreeSet<u32>,
    /// The fresh slots that a removed real server had.
    pub reclaimed: BTreeSet<u32>,
    /// Services whose quorum changed: (service, holds now, healthy weight).
    pub quorum_changes: Vec<(ServiceAddr, bool, u64)>,
    /// mh services that got a RING_SIZE table for want of room in MAGLEV,
    /// with the size they should have had.
    pub maglev_squeezed: Vec<(ServiceAddr, usize)>,
}

impl Plan {
    /// The published state after this plan, from `cur`.
    pub fn next(&self, cur: &Published) -> Published {
        let mut p = cur.clone();
        p.apply(self.delta.clone());
        p
    }
}

/// Plans the maps' contents for `inp`. With `prev`, the inputs `cur` was
/// planned from, only the services whose inputs changed are planned again
/// (the others' entries stay as they are); without it, every service is.
/// `reclaimable` lists removed slots that no connection refers to any
/// more, which may be given to new real servers.
pub fn plan(
    inp: &Inputs,
    prev: Option<&Inputs>,
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
    let dirty: Vec<ServiceAddr> = table
        .services
        .keys()
        .filter(|a| {
            let same_id = cur.svc_ids.get(a) == Some(&svc_ids[a]);
            !(same_id && prev.is_some_and(|p| per_service::unchanged(p, inp, a)))
        })
        .copied()
        .collect();
    let gone: Vec<(ServiceAddr, u32)> = cur
        .svc_ids
        .iter()
        .filter(|(a, _)| !table.services.contains_key(a))
        .map(|(a, id)| (*a, *id))
        .collect();
    let wanted = wanted_reals(inp, &svc_ids, &dirty);
    let slots = ids::reals(&wanted, cur, reclaimable, limits.max_reals)?;

    let mut d = Delta::default();
    let config = DirectorConfig {
        mac: inp.director_mac,
        flags: if inp.expire_nodest {
            dir_flags::EXPIRE_NODEST_CONN
        } else {
            0
        } | if inp.sloppy_tcp {
            dir_flags::SLOPPY_TCP
        } else {
            0
        } | if inp.sync_master { dir_flags::SYNC } else { 0 },
        _pad: 0,
    };
    if config != cur.config {
        d.config = Some(config);
    }
    if inp.vlans != cur.vlans {
        d.vlans = Some(inp.vlans.clone());
    }
    // The VIP prefilter: the services' VIPs, and the addresses entries
    // still go to (until a sweep says which, every bit published stays).
    let mut vip_bits = service_vip_bits(table);
    vip_bits.extend(inp.vip_bits_in_use.iter().copied());
    if !inp.vip_bits_settled {
        vip_bits.extend(cur.vip_bits.iter().copied());
    }
    if vip_bits != cur.vip_bits {
        d.vip_bits = Some(vip_bits);
    }
    let mut new_ids = BTreeSet::new();
    for (a, id) in &svc_ids {
        if cur.svc_ids.get(a) != Some(id) {
            d.svc_ids.insert(*a, Some(*id));
            new_ids.insert(*id);
        }
    }
    for (a, _) in &gone {
        d.svc_ids.insert(*a, None);
        d.quorum.insert(*a, None);
    }
    // Real servers of the services planned again, as the table wants them...
    for (key, spec, svc) in &wanted {
        let id = slots.real_ids[key];
        if cur.real_ids.get(key) != Some(&id) {
            d.real_ids.insert(*key, Some(id));
        }
        let v = per_service::real_value(inp, svc, spec, key.0);
        if slots.fresh.contains(&id) || cur.reals.get(&id) != Some(&v) {
            d.reals.insert(id, Some(v));
        }
    }
    // ...a reclaimed slot's former identity goes...
    for id in &slots.reclaimed {
        if let Some(r) = cur.reals.get(id) {
            let old = (
                r.svc_id,
                bytes_addr(&r.addr, r.family),
                u16::from_be(r.port),
            );
            if !slots.real_ids.contains_key(&old) {
                d.real_ids.insert(old, None);
            }
        }
    }
    // ...and the ones that left stay, flagged, for their connections.
    let touched: BTreeSet<u32> = dirty
        .iter()
        .map(|a| svc_ids[a])
        .chain(gone.iter().map(|(_, id)| *id))
        .collect();
    // (A service deleted in this change keeps its old id's entry.)
    let standby_of: BTreeMap<u32, bool> = cur
        .svc_ids
        .iter()
        .chain(svc_ids.iter())
        .map(|(a, sid)| (*sid, inp.is_standby(a)))
        .collect();
    for sid in &touched {
        for (key, id) in cur.real_ids.range(ids::of_service(*sid)) {
            if slots.real_ids.contains_key(key) || slots.reclaimed.contains(id) {
                continue;
            }
            let mut r = cur.reals[id];
            r.flags |= rs_flags::REMOVED;
            // Their connections follow the service's standby state too.
            if standby_of.get(sid).copied().unwrap_or(false) {
                r.flags |= rs_flags::STANDBY;
            } else {
                r.flags &= !rs_flags::STANDBY;
            }
            if r != cur.reals[id] {
                d.reals.insert(*id, Some(r));
            }
        }
    }
    let mut plans = Vec::new();
    let mut quorum_changes = Vec::new();
    let mut maglev_squeezed = Vec::new();
    let mut entries: BTreeMap<ServiceKey, ServiceValue> = BTreeMap::new();
    let mut chunks = Chunks::new(&cur.chunks, limits.maglev_chunks());
    for a in &dirty {
        let s = &table.services[a];
        let p = per_service::plan_service(
            inp,
            cur,
            &slots.real_ids,
            cache,
            &mut chunks,
            a,
            s,
            svc_ids[a],
        );
        for (slot, run) in &p.chunks {
            if cur.chunks.get(slot) != run.as_ref() {
                d.chunks.insert(*slot, *run);
            }
        }
        let was = cur.quorum.get(a).copied();
        if was.is_some() && was != Some(p.quorum.0) {
            quorum_changes.push((*a, p.quorum.0, p.quorum.1));
        }
        if was != Some(p.quorum.0) {
            d.quorum.insert(*a, Some(p.quorum.0));
        }
        if let Some(want) = p.squeezed {
            maglev_squeezed.push((*a, want));
        }
        if cur.rings.get(&p.id) != Some(&p.ring) {
            d.rings.insert(p.id, Some(p.ring.clone()));
        }
        for k in &p.keys {
            entries.insert(*k, p.value);
        }
        plans.push(p);
    }
    for (_, id) in &gone {
        if !d.rings.contains_key(id) && !svc_ids.values().any(|i| i == id) {
            d.rings.insert(*id, None);
            for slot in [id * 2, id * 2 + 1] {
                if cur.chunks.contains_key(&slot) {
                    d.chunks.insert(slot, None);
                }
            }
        }
    }
    // Services-map keys of the services planned again or gone: those no
    // service has any more leave, the others are set.
    for (k, v) in &cur.services {
        if touched.contains(&v.id) && !entries.contains_key(k) {
            d.services.insert(*k, None);
        }
    }
    for (k, v) in entries {
        if cur.services.get(&k) != Some(&v) {
            d.services.insert(k, Some(v));
        }
    }
    let writes = order::writes(cur, &d, &plans, &slots.fresh, &new_ids);
    Ok(Plan {
        delta: d,
        writes,
        fresh: slots.fresh,
        reclaimed: slots.reclaimed,
        quorum_changes,
        maglev_squeezed,
    })
}

/// The real servers that `services` want a slot for: (slot key, spec,
/// service), the sorry servers included.
fn wanted_reals(
    inp: &Inputs,
    svc_ids: &BTreeMap<ServiceAddr, u32>,
    services: &[ServiceAddr],
) -> Vec<(RealKey, RealSpec, ServiceAddr)> {
    let mut v = Vec::new();
    for a in services {
        let sid = svc_ids[a];
        for r in inp.table.services[a]
            .reals
            .values()
            .copied()
            .chain(inp.sorry_real(a))
        {
            v.push(((sid, r.address, r.port), r, *a));
        }
    }
    v
}
