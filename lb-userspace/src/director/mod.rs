//! The director keeps the data plane's maps in step with what the operator
//! and the health checks want. Every change (a table edit, a configuration,
//! a health transition, a MAC resolved or lost, a setting) goes through one
//! path, [`Director::apply`]: the pure planner computes the maps' next
//! contents and the ordered writes ([`plan`]), the commit executes them and
//! restores the old contents if any write fails ([`commit`]). The inputs and
//! the published state change only when the commit succeeds, so what
//! `lbadm -L` shows is always what the maps hold.
//!
//! Ids are stable (recovered from the pinned maps after a restart); rings
//! are published by a generation flip; removed real servers stay in REALS
//! (flagged REMOVED) so their established connections keep flowing until
//! they end, as IPVS does with expire_nodest_conn=0.

pub mod chunks;
pub mod codec;
pub mod commit;
mod ids;
mod order;
mod per_service;
pub mod plan;
mod prefilter;
mod queries;
pub mod recover;
pub mod rings;
mod stats;
pub mod sweep;
mod synced;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_capacity;
#[cfg(test)]
mod tests_maglev;
#[cfg(test)]
mod tests_prefilter;

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    time::Instant,
};

use lb_common::{rs_flags, tcp_state, RealLoad};
use tracing::{error, info, warn};

use self::{codec::bytes_addr, rings::RingCache, sweep::Evictions};
pub use self::{
    commit::CommitError,
    plan::{Inputs, Plan, PlanError, Published},
    stats::RateEstimator,
    sweep::{monotonic_ns, ConnCounts, Timeouts},
};
use crate::{
    dataplane::{Dataplane, Maps, MapsError, Slot, Value},
    health::Verdict,
    model::{ServiceAddr, Table},
};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Commit(#[from] Box<CommitError>),
}

pub struct Director<M: Maps = Dataplane> {
    maps: M,
    /// What the maps follow from (the last committed inputs).
    inputs: Inputs,
    /// Successful commits.
    commits: u64,
    /// What the maps hold.
    published: Published,
    cache: RingCache,
    /// Whether `published` is what `inputs` planned (then only services
    /// whose inputs change are planned again); false after a recovery or a
    /// failed rollback.
    synced: bool,
    /// Per-state connection timeouts (ipvsadm --set), used by the sweep.
    pub timeouts: Timeouts,
    evictions: Evictions,
    rates: RateEstimator,
    /// When a VIP last lost its services (its prefilter bit stays until a
    /// sweep that began [`VIP_SETTLE`] later finds no entry to it).
    vip_removed_at: Option<Instant>,
    /// The live counts per real-server slot the last collecting sweep
    /// found (what `/metrics` shows without a walk of its own).
    last_counts: HashMap<u32, ConnCounts>,
    /// Packets forwarded, summed over services as a counter that never
    /// goes back (a zeroed or reused service slot lowers the plain sum):
    /// (total, each slot's last reading).
    tx: std::sync::Mutex<(u64, HashMap<u32, u64>)>,
}

pub use self::prefilter::VIP_SETTLE;

impl<M: Maps> Director<M> {
    /// Wraps the maps and recovers what a previous daemon left in them:
    /// service ids and rings, real-server slots and their MACs, the
    /// director's settings.
    pub fn recover(mut maps: M) -> Result<Director<M>, MapsError> {
        let published = recover::read_published(&maps)?;
        let mut inputs = Inputs {
            director_mac: published.config.mac,
            expire_nodest: published.config.flags & lb_common::dir_flags::EXPIRE_NODEST_CONN != 0,
            sloppy_tcp: published.config.flags & lb_common::dir_flags::SLOPPY_TCP != 0,
            vlans: published.vlans.clone(),
            ..Default::default()
        };
        // MACs of real servers in service first: a removed slot's MAC is
        // never refreshed and may be older.
        for removed in [true, false] {
            for r in published.reals.values() {
                if r.flags & rs_flags::MAC_VALID != 0
                    && (r.flags & rs_flags::REMOVED != 0) == removed
                {
                    inputs.macs.insert(bytes_addr(&r.addr, r.family), r.mac);
                }
            }
        }
        let mut published = published;
        prefilter::seed(&mut maps, &mut published)?;
        if !published.svc_ids.is_empty() {
            info!(
                services = published.svc_ids.len(),
                reals = published.reals.len(),
                "recovered state from pinned maps"
            );
        }
        Ok(Director {
            maps,
            inputs,
            commits: 0,
            published,
            cache: RingCache::default(),
            synced: false,
            timeouts: tcp_state::DEFAULT_TIMEOUTS,
            evictions: Evictions::default(),
            rates: RateEstimator::default(),
            // What the previous daemon removed last is not known: the
            // first sweeps may not clear bits.
            vip_removed_at: Some(Instant::now()),
            last_counts: HashMap::new(),
            tx: Default::default(),
        })
    }

    pub fn maps(&self) -> &M {
        &self.maps
    }

    pub fn maps_mut(&mut self) -> &mut M {
        &mut self.maps
    }

    /// The committed inputs.
    pub fn inputs(&self) -> &Inputs {
        &self.inputs
    }

    pub fn published(&self) -> &Published {
        &self.published
    }

    pub fn table(&self) -> &Table {
        &self.inputs.table
    }

    /// The table the maps serve (for a restart without a configuration or
    /// a saved state): see [`recover::table_of`].
    pub fn table_in_maps(&self) -> Table {
        recover::table_of(&self.published)
    }

    /// Plans `next` against the maps' contents (without writing).
    pub fn plan(&mut self, next: &Inputs) -> Result<Plan, PlanError> {
        let limits = self.maps.limits().clone();
        let none = BTreeSet::new();
        let prev = self.synced.then_some(&self.inputs);
        match plan::plan(next, prev, &self.published, &limits, &none, &mut self.cache) {
            Err(PlanError::RealsFull { .. }) if self.published.removed().next().is_some() => {
                // Slots of real servers removed by an earlier change that no
                // connection uses any more can be given to newcomers.
                let reclaimable = self.reclaimable();
                plan::plan(
                    next,
                    prev,
                    &self.published,
                    &limits,
                    &reclaimable,
                    &mut self.cache,
                )
            }
            r => r,
        }
    }

    /// The one path that changes the data plane: makes the maps follow
    /// `next`, all or nothing. Returns how many map writes it took.
    pub fn apply(&mut self, mut next: Inputs) -> Result<usize, ApplyError> {
        let losing = prefilter::loses_a_vip(&self.published, &next);
        if losing {
            next.vip_bits_settled = false;
        }
        let plan = self.plan(&next)?;
        if !plan.reclaimed.is_empty() {
            // A reclaimed slot's previous server stays out of the lblc/lblcr
            // destination cache (it pointed at a removed server anyway, so
            // this holds whatever the commit does).
            self.maps.forget_in_lblc(&plan.reclaimed);
        }
        let n = match commit::commit(&mut self.maps, &plan.writes) {
            Ok(n) => n,
            Err(e) => {
                // A commit that failed after a flip may have let the program
                // open connections on slots the plan gave out; the slots are
                // free again, so those entries would point at nothing (or,
                // once reused, at another server). The clients' next packets
                // are scheduled afresh.
                let orphans: Vec<_> = self
                    .maps
                    .conns()
                    .into_iter()
                    .filter(|(_, v)| plan.fresh.contains(&v.real_id))
                    .map(|(k, _)| k)
                    .collect();
                for k in &orphans {
                    self.maps.remove_conn(k);
                }
                if !e.restored {
                    self.resync();
                }
                return Err(e.into());
            }
        };
        if let Some((first, want)) = plan.maglev_squeezed.first() {
            // One line per commit, however many services it concerns.
            warn!(
                services = plan.maglev_squeezed.len(),
                first = %first,
                wanted_slots = want,
                "no room in MAGLEV (limits.max_maglev_slots) for both generations of \
                 these services' Maglev tables: they get {}-slot ones (less even)",
                lb_common::RING_SIZE
            );
        }
        for (a, holds, healthy) in &plan.quorum_changes {
            let what = if *holds { "regained" } else { "lost" };
            info!(service = %a, healthy_weight = healthy, "quorum {what}");
        }
        self.published.apply(plan.delta);
        self.inputs = next;
        self.synced = true;
        self.commits += 1;
        if losing {
            self.vip_removed_at = Some(Instant::now());
        }
        Ok(n)
    }

    /// Commits so far (what follows the published ids watches it).
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// After a commit whose rollback failed: the published state is read
    /// back from the maps, so the next change plans from what is there.
    /// What the maps do not hold is kept: the ids of port-group services
    /// without a declared group (no key) and the quorum states.
    fn resync(&mut self) {
        match recover::read_published(&self.maps) {
            Ok(mut p) => {
                let taken: BTreeSet<u32> = p.svc_ids.values().copied().collect();
                for (a, id) in &self.published.svc_ids {
                    if !p.svc_ids.contains_key(a) && !taken.contains(id) {
                        p.svc_ids.insert(*a, *id);
                    }
                }
                p.quorum = std::mem::take(&mut self.published.quorum);
                self.published = p;
                self.synced = false;
            }
            Err(e) => error!("reading the maps back after a failed rollback: {e}"),
        }
    }

    /// `apply` with the inputs as `f` changes them.
    pub fn change(&mut self, f: impl FnOnce(&mut Inputs)) -> Result<usize, ApplyError> {
        let mut next = self.inputs.clone();
        f(&mut next);
        self.apply(next)
    }

    /// `apply` with another table.
    pub fn set_table(&mut self, table: Table) -> Result<usize, ApplyError> {
        self.change(|i| i.table = table)
    }

    /// `apply` with other health policies.
    pub fn set_policies(
        &mut self,
        policies: HashMap<ServiceAddr, crate::health::ServicePolicy>,
    ) -> Result<usize, ApplyError> {
        self.change(|i| i.policies = policies)
    }

    /// `apply` with IPVS expire_nodest_conn on or off: when on, a removed
    /// real server's connections end (the program drops their next packet
    /// and expires the entry; the sweep collects the rest).
    pub fn set_expire_nodest(&mut self, on: bool) -> Result<usize, ApplyError> {
        self.change(|i| i.expire_nodest = on)
    }

    /// `apply` with another source MAC for forwarded frames.
    pub fn set_director_mac(&mut self, mac: [u8; 6]) -> Result<usize, ApplyError> {
        self.change(|i| i.director_mac = mac)
    }

    /// Records a health-check verdict (None: no longer checked, so up).
    /// Returns whether the state or the weight in force changed.
    pub fn set_health(
        &mut self,
        svc: ServiceAddr,
        real: IpAddr,
        verdict: Option<Verdict>,
    ) -> Result<bool, ApplyError> {
        let key = (svc, real);
        let state = |v: Option<&Verdict>| v.map(|v| (v.up, v.weight)).unwrap_or((true, None));
        let changed = state(self.inputs.health.get(&key)) != state(verdict.as_ref());
        let mut next = self.inputs.clone();
        match verdict {
            Some(v) => next.health.insert(key, v),
            None => next.health.remove(&key),
        };
        self.apply(next)?;
        Ok(changed)
    }

    /// Records neighbour-table results (None: unresolved, so the real
    /// server gets no new connection). Returns whether anything changed.
    pub fn set_macs(&mut self, updates: &[(IpAddr, Option<[u8; 6]>)]) -> Result<bool, ApplyError> {
        let changed: Vec<(IpAddr, Option<[u8; 6]>)> = updates
            .iter()
            .filter(|(a, m)| self.inputs.macs.get(a).copied() != *m)
            .copied()
            .collect();
        if changed.is_empty() {
            return Ok(false);
        }
        let mut next = self.inputs.clone();
        for (a, m) in &changed {
            match m {
                Some(mac) => next.macs.insert(*a, *mac),
                None => next.macs.remove(a),
            };
        }
        // (The daemon logs each change in force, with its reason.)
        self.apply(next)?;
        Ok(true)
    }

    pub fn mac(&self, a: &IpAddr) -> Option<[u8; 6]> {
        self.inputs.macs.get(a).copied()
    }

    /// How many services on `vips` (port groups: with a member there) have
    /// lost their quorum (no real server can take a connection).
    pub fn quorum_lost_on(&self, vips: &[IpAddr]) -> usize {
        self.quorum_counts(vips).1
    }

    /// How many services are on `vips` (port groups: with a member there),
    /// and how many of them have lost their quorum.
    pub fn quorum_counts(&self, vips: &[IpAddr]) -> (usize, usize) {
        let on = |a: &ServiceAddr| {
            if a.is_fwmark() {
                self.inputs
                    .table
                    .groups
                    .get(&a.fwmark)
                    .is_some_and(|g| g.members.iter().any(|m| vips.contains(&m.address)))
            } else {
                vips.contains(&a.address)
            }
        };
        self.published
            .quorum
            .iter()
            .filter(|(a, _)| on(a))
            .fold((0, 0), |(n, lost), (_, holds)| {
                (n + 1, lost + usize::from(!*holds))
            })
    }

    /// Whether the sorry server of `svc` is in use now.
    pub fn sorry_active(&self, svc: &ServiceAddr) -> bool {
        self.inputs.sorry_real(svc).is_some() && self.published.quorum.get(svc) == Some(&false)
    }

    /// A real server is up unless its health check says otherwise.
    pub fn is_up(&self, svc: &ServiceAddr, real: &IpAddr) -> bool {
        self.inputs.health.get(&(*svc, *real)).is_none_or(|v| v.up)
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

    /// Slots of removed real servers that no connection entry (nor
    /// persistence template) refers to. Only those are safe to give to a
    /// newcomer: a removed server is in no ring, so no new connection can
    /// reach its slot while the plan is made and committed. (A server
    /// leaving in the very change that needs its slot is still in a live
    /// ring until that change's flip: its slot is not taken back.)
    fn reclaimable(&self) -> BTreeSet<u32> {
        let referenced: BTreeSet<u32> = self.maps.conns().iter().map(|(_, v)| v.real_id).collect();
        self.published
            .removed()
            .filter(|id| !referenced.contains(id))
            .collect()
    }

    /// Tells the program the connection counts are being kept (see
    /// lb_common::HEARTBEAT_STALE_NS): written at every sweep tick.
    pub fn heartbeat(&mut self) {
        let _ = self
            .maps
            .write(Slot::Heartbeat, &Value::Time(monotonic_ns()));
    }

    /// Walks the connection table: deletes expired entries when `collect`
    /// is set, re-bases the program's connection counts and the overloaded
    /// flags on what it found, and returns the live counts per real-server
    /// slot. A template outlives its timeout while connections of its
    /// clients exist, as in IPVS.
    pub fn sweep(&mut self, collect: bool) -> HashMap<u32, ConnCounts> {
        let started = Instant::now();
        let prefixes: HashMap<u32, u8> = self
            .published
            .services
            .values()
            .map(|v| (v.id, v.persist_prefix))
            .collect();
        let removed: BTreeSet<u32> = self.published.removed().collect();
        let w = sweep::walk(
            self.maps.conns(),
            monotonic_ns(),
            &self.timeouts,
            &prefixes,
            &removed,
            self.inputs.expire_nodest,
        );
        if !collect {
            return w.counts;
        }
        for (k, v) in &w.rearm {
            self.maps.update_conn(*k, *v);
        }
        // Expired (now deleted) and LRU-evicted entries leave the program's
        // counts too high: record the difference so that RS_LOAD - RS_CLOSED
        // equals the live counts just observed. Connections opened during
        // the walk are counted on the next one.
        let ids: Vec<u32> = self.published.reals.keys().copied().collect();
        for id in ids {
            let Ok(Value::Load(load)) = self.maps.read(Slot::Load(id)) else {
                continue;
            };
            let live = w.counts.get(&id).copied().unwrap_or_default();
            let closed = RealLoad {
                active: load.active.wrapping_sub(live.active),
                inactive: load.inactive.wrapping_sub(live.inactive),
            };
            let prev = match self.maps.read(Slot::Closed(id)) {
                Ok(Value::Load(p)) => p,
                _ => RealLoad::default(),
            };
            // What closed since the last walk beyond what this walk expired
            // was evicted by the LRU (a connection opened during a walk
            // shows up here once and is taken back the next time, hence a
            // running balance).
            let gone = w.expired_counts.get(&id).copied().unwrap_or_default();
            let da = closed.active.wrapping_sub(prev.active) as i64 - gone.active as i64;
            let di = closed.inactive.wrapping_sub(prev.inactive) as i64 - gone.inactive as i64;
            self.evictions.active += da;
            self.evictions.all += da + di;
            if closed != prev {
                let _ = self.maps.write(Slot::Closed(id), &Value::Load(closed));
            }
        }
        // Overloaded flags (-x/-y): the program sets and clears them when it
        // considers a server; clear here those that fell below the lower
        // threshold since.
        for (id, rs) in &self.published.reals {
            if rs.u_threshold == 0 {
                continue;
            }
            if let Ok(Value::Word(1)) = self.maps.read(Slot::Over(*id)) {
                let c = w.counts.get(id).copied().unwrap_or_default();
                let total = c.active + c.inactive;
                if !lb_common::sched::overloaded_next(true, total, rs.u_threshold, rs.l_threshold) {
                    let _ = self.maps.write(Slot::Over(*id), &Value::Word(0));
                }
            }
        }
        self.evictions.settle();
        if self.evictions.shown.1 > self.evictions.active_reported {
            warn!(
                evicted_established = self.evictions.shown.1,
                "the connection table evicted established connections: raise limits.max_conns"
            );
            self.evictions.active_reported = self.evictions.shown.1;
        }
        for (k, judged) in &w.expired {
            // Not if a packet refreshed it since it was judged expired (a
            // narrow window stays between this read and the delete: maps
            // have no compare-and-delete).
            if self.maps.conn(k).is_none_or(|now| now == *judged) {
                self.maps.remove_conn(k);
            }
        }
        if !w.expired.is_empty() {
            tracing::debug!(
                expired = w.expired.len(),
                "collected expired connection entries"
            );
        }
        self.settle_vip_bits(started, &w.vip_bits);
        self.last_counts = w.counts.clone();
        w.counts
    }
}
