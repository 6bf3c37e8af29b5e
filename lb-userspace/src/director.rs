//! Keeps the BPF maps in step with the service table.
//!
//! The director owns the [`Dataplane`] (one owner, no locks). `apply` makes
//! the maps match a new [`Table`]: ids are stable (recovered from the pinned
//! maps after a restart), rings are rebuilt and published by a generation
//! flip only when they change, and removed real servers stay in REALS
//! (flagged REMOVED) so their established connections keep flowing until they
//! end, as IPVS does with expire_nodest_conn=0.

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::MapError;
use lb_common::{
    rs_flags, svc_flags, tcp_state, ConnKey, ConnValue, RealLoad, RealServer, Ring, ServiceKey,
    ServiceValue, AF_INET, AF_INET6, RING_SIZE,
};
use tracing::{debug, info, warn};

use crate::{
    control::{ConnView, HealthView, Listing, RealView, ServiceView, StatsView},
    dataplane::{Dataplane, DataplaneError},
    health::{OnFailure, ServicePolicy, WeightChange},
    model::{fmt_addr_port, Protocol, RealSpec, Scheduler, ServiceAddr, Table},
    sched::{build_ring, Candidate},
};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("too many virtual services: {need} needed, limits.max_services is {max}")]
    ServicesFull { need: usize, max: u32 },
    #[error("too many real servers: {need} slots needed, limits.max_reals is {max}")]
    RealsFull { need: usize, max: u32 },
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> ApplyError {
    move |cause| ApplyError::Dataplane(DataplaneError::Map { name, cause })
}

pub fn addr_bytes(a: &IpAddr) -> ([u8; 16], u8) {
    let mut b = [0u8; 16];
    match a {
        IpAddr::V4(v4) => {
            b[..4].copy_from_slice(&v4.octets());
            (b, AF_INET)
        }
        IpAddr::V6(v6) => (v6.octets(), AF_INET6),
    }
}

pub fn bytes_addr(b: &[u8; 16], family: u8) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*b))
    }
}

pub fn service_key(a: &ServiceAddr) -> ServiceKey {
    let (addr, family) = addr_bytes(&a.address);
    ServiceKey {
        addr,
        port: a.port.to_be(),
        proto: a.protocol.number(),
        family,
    }
}

/// The SERVICES keys of service `a` in `table`: its own, or its port
/// group's members (none while the group is not declared).
pub fn keys_of(a: &ServiceAddr, table: &Table) -> Vec<ServiceKey> {
    if a.is_fwmark() {
        table
            .groups
            .get(&a.fwmark)
            .map(|g| g.members.iter().map(service_key).collect())
            .unwrap_or_default()
    } else {
        vec![service_key(a)]
    }
}

fn remove_key(dp: &mut Dataplane, k: &ServiceKey) -> Result<(), ApplyError> {
    match dp.services.remove(k) {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(map_err("SERVICES")(e)),
    }
}

/// The service a SERVICES entry belongs to (a port group's members all
/// carry the group's fwmark).
fn service_addr(k: &ServiceKey, v: &ServiceValue) -> Option<ServiceAddr> {
    if v.fwmark != 0 {
        return Some(ServiceAddr::fwmark(v.fwmark, k.family == AF_INET6));
    }
    let protocol = match k.proto {
        lb_common::PROTO_TCP => Protocol::Tcp,
        lb_common::PROTO_UDP => Protocol::Udp,
        _ => return None,
    };
    Some(ServiceAddr {
        fwmark: 0,
        protocol,
        address: bytes_addr(&k.addr, k.family),
        port: u16::from_be(k.port),
    })
}

pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What the health check of one real server says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub up: bool,
    /// Weight asked for by an external program or an agent.
    pub weight: Option<WeightChange>,
    pub reason: String,
}

/// The weight in force for a real server of configured weight `w`.
pub fn effective_weight(w: u32, v: Option<&Verdict>) -> u32 {
    match v {
        None => w,
        Some(v) if !v.up => 0,
        Some(v) => match v.weight {
            None => w,
            Some(WeightChange::Absolute(a)) => a.min(crate::model::MAX_WEIGHT),
            Some(WeightChange::Percent(p)) => ((w as u64 * p as u64) / 100).min(65535) as u32,
        },
    }
}

/// Identity of a real-server slot: (service id, address, port).
type RealKey = (u32, IpAddr, u16);

pub struct Director {
    pub dp: Dataplane,
    pub table: Table,
    svc_ids: HashMap<ServiceAddr, u32>,
    /// Published generation and ring per service id, with the scheduler and
    /// candidates it was built from (an unchanged input skips the rebuild).
    published: HashMap<u32, (u8, Vec<u32>)>,
    built_from: HashMap<u32, (crate::model::Scheduler, Vec<Candidate>)>,
    /// What was last written to SERVICES (value and keys: one key for a
    /// plain service, the members for a port group) and REALS, so that an
    /// apply writes only what changed without reading the maps back.
    written_svcs: HashMap<ServiceAddr, (ServiceValue, Vec<ServiceKey>)>,
    written_reals: HashMap<u32, RealServer>,
    /// True when the maps reflect `table` with the current MACs.
    clean: bool,
    /// Services to rebuild at the next apply although their spec is
    /// unchanged (a real server's health changed).
    dirty: BTreeSet<ServiceAddr>,
    /// Health-check verdicts (absent = not checked = up).
    health: HashMap<(ServiceAddr, IpAddr), Verdict>,
    /// Connection entries the LRU evicted (running balance; see sweep), all
    /// and ESTABLISHED ones.
    evicted: i64,
    evicted_active: i64,
    evicted_active_reported: i64,
    /// Health policy per service (on_failure, sorry server, quorum).
    policies: HashMap<ServiceAddr, ServicePolicy>,
    /// Quorum state per service (absent = not yet computed).
    quorum_up: HashMap<ServiceAddr, bool>,
    real_ids: HashMap<RealKey, u32>,
    /// Slots of real servers no longer in the table (kept for their connections).
    removed: BTreeSet<u32>,
    /// Resolved MACs of real servers.
    macs: HashMap<IpAddr, [u8; 6]>,
    /// Per-state timeouts in seconds (tcp_state indices, then UDP).
    pub timeouts: [u32; 12],
    /// IPVS expire_nodest_conn: connections of removed real servers end.
    expire_nodest: bool,
    /// Rate estimation (ipvsadm --rate): the last sample of each counter.
    rates: RateEstimator,
}

/// Per-second rates of connections, packets and bytes, estimated as the
/// IPVS estimator does: a sample every 2 s, smoothed (avg += (rate - avg) / 4).
#[derive(Debug, Default)]
pub struct RateEstimator {
    last: HashMap<(bool, u32), (u64, lb_common::Stats)>,
    /// (connections, packets, bytes) per second, by (is_real, id).
    pub avg: HashMap<(bool, u32), (f64, f64, f64)>,
}

impl RateEstimator {
    pub fn sample(&mut self, key: (bool, u32), now_ns: u64, s: lb_common::Stats) {
        if let Some((t, prev)) = self.last.get(&key) {
            let dt = now_ns.saturating_sub(*t) as f64 / 1e9;
            if dt < 0.5 {
                return;
            }
            let r = (
                s.conns.saturating_sub(prev.conns) as f64 / dt,
                s.packets.saturating_sub(prev.packets) as f64 / dt,
                s.bytes.saturating_sub(prev.bytes) as f64 / dt,
            );
            let a = self.avg.entry(key).or_insert(r);
            a.0 += (r.0 - a.0) / 4.0;
            a.1 += (r.1 - a.1) / 4.0;
            a.2 += (r.2 - a.2) / 4.0;
        }
        self.last.insert(key, (now_ns, s));
    }

    pub fn get(&self, key: (bool, u32)) -> crate::control::RateView {
        let (c, p, b) = self.avg.get(&key).copied().unwrap_or_default();
        crate::control::RateView {
            cps: c.round() as u64,
            in_pps: p.round() as u64,
            in_bps: b.round() as u64,
        }
    }
}

/// Monotonic clock in ns, the clock bpf_ktime_get_coarse_ns() reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Connection counts per real-server slot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnCounts {
    pub active: u64,
    pub inactive: u64,
    /// Persistence templates pointing at the real server.
    pub persistent: u64,
}

impl Director {
    /// Wraps a freshly loaded dataplane and recovers the ids, generations and
    /// MACs left in pinned maps by a previous daemon.
    pub fn recover(dp: Dataplane) -> Result<Director, ApplyError> {
        let mut d = Director {
            dp,
            table: Table::default(),
            svc_ids: HashMap::new(),
            published: HashMap::new(),
            built_from: HashMap::new(),
            written_svcs: HashMap::new(),
            written_reals: HashMap::new(),
            clean: false,
            dirty: BTreeSet::new(),
            health: HashMap::new(),
            policies: HashMap::new(),
            quorum_up: HashMap::new(),
            evicted: 0,
            evicted_active: 0,
            evicted_active_reported: 0,
            real_ids: HashMap::new(),
            removed: BTreeSet::new(),
            macs: HashMap::new(),
            timeouts: tcp_state::DEFAULT_TIMEOUTS,
            expire_nodest: false,
            rates: RateEstimator::default(),
        };
        let entries: Vec<(ServiceKey, ServiceValue)> =
            d.dp.services.iter().filter_map(|r| r.ok()).collect();
        for (k, v) in entries {
            if let Some(addr) = service_addr(&k, &v) {
                d.svc_ids.insert(addr, v.id);
                d.written_svcs
                    .entry(addr)
                    .or_insert((v, Vec::new()))
                    .1
                    .push(k);
                let ring = d.read_ring(v.id, v.gen, v.ring_len);
                d.published.insert(v.id, (v.gen, ring));
            }
        }
        for id in 0..d.dp.limits.max_reals {
            let Ok(rs) = d.dp.reals.get(&id, 0) else {
                continue;
            };
            if rs.flags & rs_flags::IN_USE == 0 {
                continue;
            }
            let addr = bytes_addr(&rs.addr, rs.family);
            d.real_ids
                .insert((rs.svc_id, addr, u16::from_be(rs.port)), id);
            // Until the table is applied, every recovered slot counts as removed.
            d.removed.insert(id);
            if rs.flags & rs_flags::MAC_VALID != 0 {
                d.macs.insert(addr, rs.mac);
            }
        }
        if !d.svc_ids.is_empty() {
            info!(
                services = d.svc_ids.len(),
                reals = d.real_ids.len(),
                "recovered state from pinned maps"
            );
        }
        Ok(d)
    }

    fn read_ring(&self, id: u32, gen: u8, len: u32) -> Vec<u32> {
        match self.dp.rings.get(&(id * 2 + (gen as u32 & 1)), 0) {
            Ok(r) => r.reals[..(len as usize).min(RING_SIZE)].to_vec(),
            Err(_) => Vec::new(),
        }
    }

    /// Real-server addresses the table needs MACs for.
    pub fn wanted_addresses(&self) -> BTreeSet<IpAddr> {
        self.table
            .services
            .values()
            .flat_map(|s| s.reals.keys().map(|(a, _)| *a))
            .chain(self.policies.values().filter_map(|p| p.sorry_server))
            .collect()
    }

    pub fn mac(&self, a: &IpAddr) -> Option<[u8; 6]> {
        self.macs.get(a).copied()
    }

    /// Records neighbour-table results; re-applies when anything changed.
    /// `None` = unresolved (the real server gets no traffic).
    pub fn update_macs(
        &mut self,
        updates: &[(IpAddr, Option<[u8; 6]>)],
    ) -> Result<bool, ApplyError> {
        let mut changed = false;
        for (a, m) in updates {
            let old = self.macs.get(a).copied();
            if old != *m {
                match m {
                    Some(mac) => {
                        info!(real = %a, mac = %fmt_mac(mac), "real server MAC resolved");
                        self.macs.insert(*a, *mac);
                    }
                    None => {
                        info!(real = %a, "real server MAC unresolved: no traffic to it");
                        self.macs.remove(a);
                    }
                }
                changed = true;
            }
        }
        if changed {
            self.clean = false;
            let t = self.table.clone();
            self.apply(t)?;
        }
        Ok(changed)
    }

    /// Makes the maps match `table`. Capacity is checked before anything is
    /// written, so a table that does not fit changes nothing.
    pub fn apply(&mut self, table: Table) -> Result<(), ApplyError> {
        // --- capacity check -----------------------------------------------
        let max_s = self.dp.limits.max_services;
        let n_keys: usize = table
            .services
            .keys()
            .map(|a| keys_of(a, &table).len().max(1))
            .sum();
        if table.services.len().max(n_keys) > max_s as usize {
            return Err(ApplyError::ServicesFull {
                need: table.services.len().max(n_keys),
                max: max_s,
            });
        }
        // Fresh ids first; ids of services leaving in this same apply only
        // if nothing else is free (their rings stay valid until they go).
        let kept: BTreeSet<u32> = table
            .services
            .keys()
            .filter_map(|a| self.svc_ids.get(a).copied())
            .collect();
        let current: BTreeSet<u32> = self.svc_ids.values().copied().collect();
        let mut free_svc: Vec<u32> = (0..max_s)
            .filter(|i| !current.contains(i))
            .chain(current.iter().copied().filter(|i| !kept.contains(i)))
            .collect();
        free_svc.reverse();
        let mut new_svc_ids = HashMap::new();
        for a in table.services.keys() {
            if !self.svc_ids.contains_key(a) {
                let id = free_svc.pop().expect("checked above");
                new_svc_ids.insert(*a, id);
            }
        }
        // Services whose maps already match: same spec and real servers as
        // the last successful apply, and no MAC change since. They are
        // skipped entirely, so one weight change costs one service's work.
        let clean = self.clean;
        let changed: Vec<ServiceAddr> = table
            .services
            .iter()
            .filter(|(a, s)| {
                !(clean
                    && !self.dirty.contains(a)
                    && self.svc_ids.contains_key(a)
                    && self.table.services.get(a) == Some(s)
                    && (!a.is_fwmark()
                        || self.table.groups.get(&a.fwmark) == table.groups.get(&a.fwmark)))
            })
            .map(|(a, _)| *a)
            .collect();
        let svc_id = |a: &ServiceAddr| self.svc_ids.get(a).or(new_svc_ids.get(a)).copied();
        let mut wanted_reals: Vec<RealKey> = Vec::new();
        for a in &changed {
            let s = &table.services[a];
            let id = svc_id(a).expect("allocated");
            for (addr, port) in s.reals.keys() {
                wanted_reals.push((id, *addr, *port));
            }
            if let Some(r) = self.sorry_real(a) {
                wanted_reals.push((id, r.address, r.port));
            }
        }
        let fresh = wanted_reals
            .iter()
            .filter(|k| !self.real_ids.contains_key(k))
            .count();
        let max_r = self.dp.limits.max_reals;
        let in_use = self.real_ids.len();
        if in_use + fresh > max_r as usize {
            // Slots of removed real servers with no connection can be reclaimed.
            self.reclaim_removed()?;
            if self.real_ids.len() + fresh > max_r as usize {
                return Err(ApplyError::RealsFull {
                    need: self.real_ids.len() + fresh,
                    max: max_r,
                });
            }
        }
        self.svc_ids.extend(new_svc_ids);

        // --- real servers ---------------------------------------------------
        let mut free_real: Vec<u32> = if fresh > 0 {
            let taken: BTreeSet<u32> = self.real_ids.values().copied().collect();
            (0..max_r).rev().filter(|i| !taken.contains(i)).collect()
        } else {
            Vec::new()
        };
        let wanted_set: BTreeSet<RealKey> = wanted_reals.iter().copied().collect();
        for a in &changed {
            let s = &table.services[a];
            let sid = self.svc_ids[a];
            let sorry = self.sorry_real(a);
            for r in s.reals.values().chain(sorry.as_ref()) {
                let k = (sid, r.address, r.port);
                let id = match self.real_ids.get(&k) {
                    Some(id) => *id,
                    None => {
                        let id = free_real.pop().expect("capacity checked");
                        self.real_ids.insert(k, id);
                        id
                    }
                };
                self.removed.remove(&id);
                let (addr, family) = addr_bytes(&r.address);
                let mac = self.macs.get(&r.address).copied();
                let mut flags = rs_flags::IN_USE;
                if mac.is_some() {
                    flags |= rs_flags::MAC_VALID;
                }
                let v = RealServer {
                    addr,
                    mac: mac.unwrap_or([0; 6]),
                    flags,
                    svc_id: sid,
                    port: r.port.to_be(),
                    family,
                    _pad: 0,
                    // The weight in force: what the dynamic schedulers divide by.
                    weight: effective_weight(r.weight, self.health.get(&(*a, r.address))),
                    u_threshold: r.u_threshold,
                    l_threshold: r.l_threshold,
                };
                if self.written_reals.get(&id) != Some(&v) {
                    self.dp.reals.set(id, v, 0).map_err(map_err("REALS"))?;
                    self.written_reals.insert(id, v);
                }
            }
        }
        // Real servers that left the table: keep their slot for established
        // connections, flag it removed (no new connections reach it).
        // When clean, only the old real servers of changed or deleted
        // services can be leaving; otherwise every slot is looked at (then
        // every service counts as changed, so wanted_set is complete).
        let mut leaving: Vec<(RealKey, u32)> = Vec::new();
        if clean {
            for (a, s) in &self.table.services {
                if table.services.get(a) == Some(s) {
                    continue;
                }
                let Some(sid) = self.svc_ids.get(a) else {
                    continue;
                };
                for (ad, p) in s.reals.keys() {
                    let k = (*sid, *ad, *p);
                    if let Some(id) = self.real_ids.get(&k) {
                        leaving.push((k, *id));
                    }
                }
            }
        } else {
            leaving.extend(self.real_ids.iter().map(|(k, id)| (*k, *id)));
        }
        leaving.retain(|(k, id)| !wanted_set.contains(k) && !self.removed.contains(id));
        for (k, id) in leaving {
            if let Some(mut rs) = self.written_reals.get(&id).copied() {
                rs.flags |= rs_flags::REMOVED;
                self.dp.reals.set(id, rs, 0).map_err(map_err("REALS"))?;
                self.written_reals.insert(id, rs);
            }
            debug!(real = %k.1, slot = id, "real server removed; its connections continue");
            self.removed.insert(id);
        }

        // --- services and rings ---------------------------------------------
        // Every key the new table uses: a key moving between services in
        // this apply is never removed by the one it leaves.
        let claimed: std::collections::HashSet<ServiceKey> = table
            .services
            .keys()
            .flat_map(|a| keys_of(a, &table))
            .collect();
        for a in &changed {
            let s = &table.services[a];
            let sid = self.svc_ids[a];
            let candidates: Vec<Candidate> = s
                .reals
                .values()
                .map(|r| {
                    (
                        r,
                        effective_weight(r.weight, self.health.get(&(*a, r.address))),
                    )
                })
                .filter(|(r, w)| *w > 0 && self.macs.contains_key(&r.address))
                .map(|(r, w)| Candidate {
                    id: self.real_ids[&(sid, r.address, r.port)],
                    name: fmt_addr_port(&r.address, r.port),
                    weight: w,
                })
                .collect();
            // Quorum with hysteresis; below it the sorry server (if any) takes
            // every new connection.
            let policy = self.policies.get(a).cloned().unwrap_or(ServicePolicy {
                quorum: 1,
                ..Default::default()
            });
            let healthy: u64 = candidates.iter().map(|c| c.weight as u64).sum();
            let was_up = self.quorum_up.get(a).copied();
            let up = match was_up {
                None | Some(true)
                    if healthy + (policy.hysteresis as u64) < policy.quorum as u64 =>
                {
                    false
                }
                None | Some(true) => true,
                Some(false) => healthy >= policy.quorum as u64 + policy.hysteresis as u64,
            };
            if was_up.is_some() && was_up != Some(up) {
                info!(service = %a, healthy_weight = healthy, "quorum {}", if up { "regained" } else { "lost" });
            }
            self.quorum_up.insert(*a, up);
            let candidates = match (&self.sorry_real(a), up) {
                (Some(sr), false) if self.macs.contains_key(&sr.address) => vec![Candidate {
                    id: self.real_ids[&(sid, sr.address, sr.port)],
                    name: fmt_addr_port(&sr.address, sr.port),
                    weight: 1,
                }],
                // sh/dh hash over every real server of the service (the
                // program skips unavailable ones, or falls back), so one
                // going down moves nobody else.
                _ if matches!(s.spec.scheduler, Scheduler::Sh | Scheduler::Dh) => s
                    .reals
                    .values()
                    .map(|r| Candidate {
                        id: self.real_ids[&(sid, r.address, r.port)],
                        name: fmt_addr_port(&r.address, r.port),
                        weight: r.weight,
                    })
                    .collect(),
                _ => candidates,
            };
            let (mut gen, old_ring) = self.published.get(&sid).cloned().unwrap_or((0, Vec::new()));
            let same_input = self
                .built_from
                .get(&sid)
                .is_some_and(|(sch, c)| *sch == s.spec.scheduler && *c == candidates);
            let ring = if same_input {
                old_ring.clone()
            } else {
                build_ring(s.spec.scheduler, &candidates)
            };
            self.built_from.insert(sid, (s.spec.scheduler, candidates));
            let keys = keys_of(a, &table);
            let current = self.written_svcs.get(a).map(|w| w.0);
            let ring_changed = current.is_none() || ring != old_ring;
            if ring_changed && !ring.is_empty() {
                // Write the standby ring, then flip the generation below.
                gen ^= 1;
                let mut r = Ring {
                    reals: [0; RING_SIZE],
                };
                r.reals[..ring.len()].copy_from_slice(&ring);
                self.dp
                    .rings
                    .set(sid * 2 + gen as u32, r, 0)
                    .map_err(map_err("RINGS"))?;
            }
            let mut flags = 0;
            if s.spec.flags.mh_port || s.spec.flags.sh_port {
                flags |= svc_flags::MH_PORT;
            }
            if s.spec.flags.mh_fallback || s.spec.flags.sh_fallback {
                flags |= svc_flags::MH_FALLBACK;
            }
            if s.spec.persistent.is_some() {
                flags |= svc_flags::PERSISTENT;
            }
            if s.spec.one_packet {
                flags |= svc_flags::ONE_PACKET;
            }
            if a.is_fwmark() {
                flags |= svc_flags::FWMARK;
            }
            if s.reals.values().any(|r| r.u_threshold > 0) {
                flags |= svc_flags::THRESHOLDS;
            }
            let v = ServiceValue {
                id: sid,
                ring_len: ring.len() as u32,
                flags,
                persist_timeout: s.spec.persistent.unwrap_or(0),
                fwmark: a.fwmark,
                sched: s.spec.scheduler.id(),
                gen,
                persist_prefix: s.spec.prefix(),
                _pad: 0,
            };
            let old_keys = self
                .written_svcs
                .get(a)
                .map(|w| w.1.clone())
                .unwrap_or_default();
            if current != Some(v) || old_keys != keys {
                for k in &keys {
                    self.dp
                        .services
                        .insert(*k, v, 0)
                        .map_err(map_err("SERVICES"))?;
                }
                // Members that left the group (and are nobody else's now).
                for k in old_keys.iter().filter(|k| !keys.contains(k)) {
                    if !claimed.contains(k) {
                        remove_key(&mut self.dp, k)?;
                    }
                }
                self.written_svcs.insert(*a, (v, keys));
            }
            self.published.insert(sid, (gen, ring));
        }
        // Services that left the table.
        let gone: Vec<ServiceAddr> = self
            .svc_ids
            .keys()
            .filter(|a| !table.services.contains_key(a))
            .copied()
            .collect();
        for a in gone {
            let keys = self
                .written_svcs
                .remove(&a)
                .map(|w| w.1)
                .unwrap_or_default();
            for k in keys.iter().filter(|k| !claimed.contains(k)) {
                remove_key(&mut self.dp, k)?;
            }
            if let Some(id) = self.svc_ids.remove(&a) {
                self.published.remove(&id);
                self.built_from.remove(&id);
            }
        }
        self.table = table;
        self.clean = true;
        self.dirty.clear();
        Ok(())
    }

    /// The program's counters plus the daemon's: connection entries evicted
    /// by the LRU (all, and established ones), as found by the sweeps.
    pub fn counters(&self) -> Vec<(String, u64)> {
        let mut c = self.dp.global_counters();
        c.push(("conn_evicted".into(), self.evicted.max(0) as u64));
        c.push((
            "conn_evicted_established".into(),
            self.evicted_active.max(0) as u64,
        ));
        c
    }

    /// IPVS expire_nodest_conn (YAML `expire_nodest_conn`): when set, a
    /// removed real server's connections end (the program drops their next
    /// packet and expires the entry; the sweep collects the rest).
    pub fn set_expire_nodest(&mut self, on: bool) -> Result<(), ApplyError> {
        self.expire_nodest = on;
        let flags = if on {
            lb_common::dir_flags::EXPIRE_NODEST_CONN
        } else {
            0
        };
        self.dp.set_flags(flags).map_err(ApplyError::Dataplane)
    }

    pub fn expire_nodest(&self) -> bool {
        self.expire_nodest
    }

    /// ipvsadm -Z: zero the packet, byte and connection counters of one
    /// service (and its real servers) or of all.
    pub fn zero(&mut self, svc: Option<&ServiceAddr>) -> Result<(), crate::model::ModelError> {
        let ids: Vec<u32> = match svc {
            Some(a) => vec![*self
                .svc_ids
                .get(a)
                .ok_or(crate::model::ModelError::NoService)?],
            None => self.svc_ids.values().copied().collect(),
        };
        let ncpu = aya::util::nr_cpus().unwrap_or(1);
        let zero = |m: &mut aya::maps::PerCpuArray<aya::maps::MapData, lb_common::Stats>,
                    id: u32| {
            if let Ok(v) =
                aya::maps::PerCpuValues::try_from(vec![lb_common::Stats::default(); ncpu])
            {
                let _ = m.set(id, v, 0);
            }
        };
        for id in &ids {
            zero(&mut self.dp.svc_stats, *id);
        }
        let reals: Vec<u32> = self
            .real_ids
            .iter()
            .filter(|((sid, _, _), _)| ids.contains(sid))
            .map(|(_, id)| *id)
            .collect();
        for id in reals {
            zero(&mut self.dp.rs_stats, id);
            self.rates.last.remove(&(true, id));
            self.rates.avg.remove(&(true, id));
        }
        for id in ids {
            self.rates.last.remove(&(false, id));
            self.rates.avg.remove(&(false, id));
        }
        Ok(())
    }

    /// Takes a rate-estimator sample of every service and real server
    /// (called by the daemon every 2 s).
    pub fn sample_rates(&mut self) {
        let now = monotonic_ns();
        for id in self.svc_ids.values() {
            let st = Dataplane::sum_stats(&self.dp.svc_stats, *id);
            self.rates.sample((false, *id), now, st);
        }
        for id in self.real_ids.values() {
            let st = Dataplane::sum_stats(&self.dp.rs_stats, *id);
            self.rates.sample((true, *id), now, st);
        }
    }

    /// ipvsadm --set: 0 leaves a value unchanged.
    pub fn set_timeouts(&mut self, tcp: u32, tcpfin: u32, udp: u32) {
        for (v, i) in [
            (tcp, tcp_state::ESTABLISHED),
            (tcpfin, tcp_state::FIN_WAIT),
            (udp, tcp_state::UDP),
        ] {
            if v != 0 {
                self.timeouts[i as usize] = v;
            }
        }
    }

    /// (tcp, tcpfin, udp) as ipvsadm --timeout prints them.
    pub fn get_timeouts(&self) -> (u32, u32, u32) {
        (
            self.timeouts[tcp_state::ESTABLISHED as usize],
            self.timeouts[tcp_state::FIN_WAIT as usize],
            self.timeouts[tcp_state::UDP as usize],
        )
    }

    pub fn policies(&self) -> &HashMap<ServiceAddr, ServicePolicy> {
        &self.policies
    }

    /// Replaces the per-service health policies; every service is rebuilt at
    /// the next apply.
    pub fn set_policies(&mut self, p: HashMap<ServiceAddr, ServicePolicy>) {
        if p != self.policies {
            self.policies = p;
            self.clean = false;
        }
    }

    /// The sorry server of `svc` as a real-server entry (weight 1, DR port).
    fn sorry_real(&self, svc: &ServiceAddr) -> Option<RealSpec> {
        let a = self.policies.get(svc)?.sorry_server?;
        Some(RealSpec {
            u_threshold: 0,
            l_threshold: 0,
            address: a,
            port: svc.port,
            weight: 1,
            forward: crate::model::Forward::Route,
        })
    }

    /// Whether the sorry server of `svc` is in use now.
    pub fn sorry_active(&self, svc: &ServiceAddr) -> bool {
        self.sorry_real(svc).is_some() && self.quorum_up.get(svc) == Some(&false)
    }

    /// A real server is up unless its health check says otherwise.
    pub fn is_up(&self, svc: &ServiceAddr, real: &IpAddr) -> bool {
        self.health.get(&(*svc, *real)).is_none_or(|v| v.up)
    }

    /// Records a health-check verdict; rebuilds the service's ring when the
    /// state or the weight changes. Returns whether it changed.
    pub fn set_health(
        &mut self,
        svc: ServiceAddr,
        real: IpAddr,
        up: bool,
        weight: Option<WeightChange>,
        reason: String,
    ) -> Result<bool, ApplyError> {
        let old = self.health.get(&(svc, real)).map(|v| (v.up, v.weight));
        let changed = old.unwrap_or((true, None)) != (up, weight);
        self.health
            .insert((svc, real), Verdict { up, weight, reason });
        if changed {
            self.dirty.insert(svc);
            let t = self.table.clone();
            self.apply(t)?;
        }
        Ok(changed)
    }

    /// Forgets verdicts of checks that no longer exist (their real servers
    /// count as up again).
    pub fn retain_health(
        &mut self,
        keep: impl Fn(&ServiceAddr, &IpAddr) -> bool,
    ) -> Result<(), ApplyError> {
        let gone: Vec<(ServiceAddr, IpAddr)> = self
            .health
            .keys()
            .filter(|(s, r)| !keep(s, r))
            .copied()
            .collect();
        for k in gone {
            if let Some(v) = self.health.remove(&k) {
                if !v.up || v.weight.is_some() {
                    self.dirty.insert(k.0);
                }
            }
        }
        if !self.dirty.is_empty() {
            let t = self.table.clone();
            self.apply(t)?;
        }
        Ok(())
    }

    /// Frees removed real-server slots that no connection entry references.
    fn reclaim_removed(&mut self) -> Result<(), ApplyError> {
        if self.removed.is_empty() {
            return Ok(());
        }
        let referenced: BTreeSet<u32> = self
            .dp
            .conns
            .iter()
            .filter_map(|r| r.ok())
            .map(|(_, v)| v.real_id)
            .collect();
        let free: Vec<u32> = self
            .removed
            .iter()
            .filter(|id| !referenced.contains(id))
            .copied()
            .collect();
        for id in free {
            self.dp
                .reals
                .set(id, RealServer::default(), 0)
                .map_err(map_err("REALS"))?;
            // A reused slot starts with no connections.
            let _ = self.dp.rs_load.set(id, RealLoad::default(), 0);
            let _ = self.dp.rs_closed.set(id, RealLoad::default(), 0);
            let _ = self.dp.rs_over.set(id, 0, 0);
            self.written_reals.remove(&id);
            self.removed.remove(&id);
            self.real_ids.retain(|_, v| *v != id);
        }
        Ok(())
    }

    /// Walks the connection table: deletes expired entries when `collect` is
    /// set and counts live ones per real-server slot (ActiveConn = ESTABLISHED,
    /// InActConn = every other state, as ipvsadm shows them; persistence
    /// templates apart). A template outlives its timeout while connections
    /// of its clients exist, as in IPVS.
    pub fn sweep(&mut self, collect: bool) -> HashMap<u32, ConnCounts> {
        let now = monotonic_ns();
        let mut counts: HashMap<u32, ConnCounts> = HashMap::new();
        let mut expired: Vec<ConnKey> = Vec::new();
        let prefixes: HashMap<u32, u8> = self
            .written_svcs
            .values()
            .map(|(v, _)| (v.id, v.persist_prefix))
            .collect();
        let mut templates: Vec<(ConnKey, ConnValue)> = Vec::new();
        let mut expired_counts: HashMap<u32, ConnCounts> = HashMap::new();
        // (service, masked client) of live connections, to keep their templates.
        let mut clients: BTreeSet<(u32, [u8; 16])> = BTreeSet::new();
        for (k, v) in self.dp.conns.iter().filter_map(|r| r.ok()) {
            if v.state == tcp_state::TEMPLATE {
                templates.push((k, v));
                continue;
            }
            let nodest = self.expire_nodest && self.removed.contains(&v.real_id);
            if nodest || self.expired(&v, now) {
                expired.push(k);
                let e = expired_counts.entry(v.real_id).or_default();
                if v.state == tcp_state::ESTABLISHED {
                    e.active += 1;
                } else {
                    e.inactive += 1;
                }
                continue;
            }
            if let Some(p) = prefixes.get(&v.svc_id) {
                clients.insert((v.svc_id, lb_common::mask_addr(&k.saddr, *p)));
            }
            let c = counts.entry(v.real_id).or_default();
            if v.state == tcp_state::ESTABLISHED {
                c.active += 1;
            } else {
                c.inactive += 1;
            }
        }
        let mut rearm: Vec<(ConnKey, ConnValue)> = Vec::new();
        for (k, mut v) in templates {
            if self.expired(&v, now) {
                if !clients.contains(&(v.svc_id, k.saddr)) {
                    expired.push(k);
                    continue;
                }
                // IPVS re-arms a template whose timer runs out while it
                // still controls connections.
                v.last_seen_ns = now;
                rearm.push((k, v));
            }
            counts.entry(v.real_id).or_default().persistent += 1;
        }
        if collect {
            for (k, v) in rearm {
                let _ = self.dp.conns.insert(k, v, 0);
            }
        }
        if collect {
            // Expired (now deleted) and LRU-evicted entries leave the
            // program's counts too high: record the difference so that
            // RS_LOAD - RS_CLOSED equals the live counts just observed.
            // Connections opened during the walk are counted on the next one.
            for id in self.real_ids.values().copied().collect::<Vec<_>>() {
                let Ok(load) = self.dp.rs_load.get(&id, 0) else {
                    continue;
                };
                let live = counts.get(&id).copied().unwrap_or_default();
                let closed = RealLoad {
                    active: load.active.wrapping_sub(live.active),
                    inactive: load.inactive.wrapping_sub(live.inactive),
                };
                let prev = self.dp.rs_closed.get(&id, 0).unwrap_or_default();
                // What closed since the last walk beyond what this walk
                // expired was evicted by the LRU (a connection opened during
                // a walk shows up here once and is taken back the next time,
                // hence a running balance).
                let gone = expired_counts.get(&id).copied().unwrap_or_default();
                let da = closed.active.wrapping_sub(prev.active) as i64 - gone.active as i64;
                let di = closed.inactive.wrapping_sub(prev.inactive) as i64 - gone.inactive as i64;
                self.evicted_active += da;
                self.evicted += da + di;
                if closed != prev {
                    let _ = self.dp.rs_closed.set(id, closed, 0);
                }
            }
            // Overloaded flags (-x/-y): the program sets and clears them
            // when it considers a server; clear here those that fell below
            // the lower threshold since.
            for (id, rs) in &self.written_reals {
                if rs.u_threshold == 0 {
                    continue;
                }
                if let Ok(1) = self.dp.rs_over.get(id, 0) {
                    let c = counts.get(id).copied().unwrap_or_default();
                    let total = c.active + c.inactive;
                    if !lb_common::sched::overloaded_next(
                        true,
                        total,
                        rs.u_threshold,
                        rs.l_threshold,
                    ) {
                        let _ = self.dp.rs_over.set(*id, 0, 0);
                    }
                }
            }
            if self.evicted_active > self.evicted_active_reported {
                warn!(
                    evicted_established = self.evicted_active,
                    "the connection table evicted established connections: raise limits.max_conns"
                );
                self.evicted_active_reported = self.evicted_active;
            }
        }
        if collect {
            for k in &expired {
                let _ = self.dp.conns.remove(k);
            }
            if !expired.is_empty() {
                debug!(
                    expired = expired.len(),
                    "collected expired connection entries"
                );
            }
        }
        counts
    }

    fn timeout_s(&self, v: &ConnValue) -> u64 {
        if v.state == tcp_state::TEMPLATE {
            return v.timeout as u64;
        }
        self.timeouts
            .get(v.state as usize)
            .copied()
            .unwrap_or(tcp_state::DEFAULT_TIMEOUTS[tcp_state::UDP as usize]) as u64
    }

    fn expired(&self, v: &ConnValue, now: u64) -> bool {
        now.saturating_sub(v.last_seen_ns) > self.timeout_s(v) * 1_000_000_000
    }

    /// The connection entries, as `ipvsadm -Lnc` lists them (at most `limit`).
    pub fn connections(&mut self, limit: usize) -> Vec<ConnView> {
        let now = monotonic_ns();
        let mut reals: HashMap<u32, (IpAddr, u16)> = HashMap::new();
        for ((_, a, p), id) in &self.real_ids {
            reals.insert(*id, (*a, *p));
        }
        let mut out = Vec::new();
        for (k, v) in self.dp.conns.iter().filter_map(|r| r.ok()) {
            if out.len() >= limit {
                break;
            }
            if self.expired(&v, now) {
                continue;
            }
            let Some((raddr, rport)) = reals.get(&v.real_id).copied() else {
                continue;
            };
            let left = (self.timeout_s(&v) * 1_000_000_000)
                .saturating_sub(now.saturating_sub(v.last_seen_ns))
                / 1_000_000_000;
            let proto = match k.proto {
                lb_common::PROTO_TCP => "TCP",
                lb_common::PROTO_UDP => "UDP",
                // A port group's template (fwmark in place of the VIP).
                _ => "IP",
            };
            let template = v.state == tcp_state::TEMPLATE;
            out.push(ConnView {
                protocol: proto.to_string(),
                expire_s: left,
                state: tcp_state::NAMES
                    .get(v.state as usize)
                    .copied()
                    .unwrap_or("NONE")
                    .to_string(),
                client: fmt_addr_port(&bytes_addr(&k.saddr, k.family), u16::from_be(k.sport)),
                virtual_: fmt_addr_port(&bytes_addr(&k.daddr, k.family), u16::from_be(k.dport)),
                real: fmt_addr_port(
                    &raddr,
                    if template {
                        u16::from_be(k.dport)
                    } else {
                        rport
                    },
                ),
                template,
            });
        }
        out
    }

    /// The table with counters, for `lbadm -L`.
    pub fn listing(&mut self) -> Listing {
        let counts = self.sweep(false);
        let mut services = Vec::new();
        for (a, s) in &self.table.services {
            let sid = self.svc_ids[a];
            let st = Dataplane::sum_stats(&self.dp.svc_stats, sid);
            let mut reals: Vec<RealView> = s
                .reals
                .values()
                .map(|r| {
                    let id = self.real_ids[&(sid, r.address, r.port)];
                    let rs = Dataplane::sum_stats(&self.dp.rs_stats, id);
                    let c = counts.get(&id).copied().unwrap_or_default();
                    let health = self.health.get(&(*a, r.address));
                    let up = health.is_none_or(|v| v.up);
                    let remove =
                        self.policies.get(a).map(|p| p.on_failure) == Some(OnFailure::Remove);
                    RealView {
                        id,
                        health: health.map(|v| HealthView {
                            up: v.up,
                            reason: v.reason.clone(),
                        }),
                        effective_weight: effective_weight(r.weight, health),
                        in_service: up || !remove,
                        spec: *r,
                        active_conns: c.active,
                        inactive_conns: c.inactive,
                        persistent_conns: c.persistent,
                        stats: StatsView {
                            conns: rs.conns,
                            in_packets: rs.packets,
                            in_bytes: rs.bytes,
                        },
                        rate: self.rates.get((true, id)),
                        mac: self.macs.get(&r.address).map(fmt_mac),
                    }
                })
                .collect();
            // An active sorry server is listed like a real server (as
            // keepalived adds it to IPVS).
            if let (Some(sr), true) = (self.sorry_real(a), self.sorry_active(a)) {
                let id = self.real_ids.get(&(sid, sr.address, sr.port)).copied();
                let st = id
                    .map(|id| Dataplane::sum_stats(&self.dp.rs_stats, id))
                    .unwrap_or_default();
                let c = id
                    .and_then(|id| counts.get(&id).copied())
                    .unwrap_or_default();
                reals.push(RealView {
                    id: id.unwrap_or(u32::MAX),
                    spec: sr,
                    health: Some(HealthView {
                        up: true,
                        reason: "sorry server (quorum lost)".into(),
                    }),
                    effective_weight: 1,
                    in_service: true,
                    active_conns: c.active,
                    inactive_conns: c.inactive,
                    persistent_conns: c.persistent,
                    stats: StatsView {
                        conns: st.conns,
                        in_packets: st.packets,
                        in_bytes: st.bytes,
                    },
                    rate: id.map(|id| self.rates.get((true, id))).unwrap_or_default(),
                    mac: self.macs.get(&sr.address).map(fmt_mac),
                });
            }
            services.push(ServiceView {
                id: sid,
                rate: self.rates.get((false, sid)),
                spec: s.spec.clone(),
                stats: StatsView {
                    conns: st.conns,
                    in_packets: st.packets,
                    in_bytes: st.bytes,
                },
                reals,
            });
        }
        Listing {
            conn_table_size: self.dp.limits.max_conns,
            services,
            groups: self.table.groups.clone().into_iter().collect(),
        }
    }
}
