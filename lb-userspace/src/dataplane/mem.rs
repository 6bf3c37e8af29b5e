//! [`Maps`] in memory, with the kernel maps' capacities: the director's
//! planner, commit and queries run on it without root. It logs every write,
//! so tests check the order of a commit (wrap it in [`super::Faulty`] to make
//! a write fail).

use std::collections::BTreeMap;

use lb_common::{
    counter, names::map, ConnKey, ConnValue, DirectorConfig, LblcKey, LblcValue, MaglevChunk,
    RealLoad, RealServer, Ring, ServiceKey, ServiceValue, Stats, MAGLEV_CHUNK, RING_SIZE,
};

use super::{Limits, Maps, MapsError, Slot, Value};

/// The maps' contents (what tests compare before and after).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemState {
    pub services: BTreeMap<ServiceKey, ServiceValue>,
    pub rings: BTreeMap<u32, Box<Ring>>,
    pub chunks: BTreeMap<u32, Box<MaglevChunk>>,
    pub vip_filter: BTreeMap<u32, u64>,
    pub reals: BTreeMap<u32, RealServer>,
    pub load: BTreeMap<u32, RealLoad>,
    pub closed: BTreeMap<u32, RealLoad>,
    pub over: BTreeMap<u32, u32>,
    pub svc_stats: BTreeMap<u32, Stats>,
    pub rs_stats: BTreeMap<u32, Stats>,
    pub config: DirectorConfig,
    pub heartbeat: u64,
    pub vlans: BTreeMap<u32, u32>,
    pub conns: BTreeMap<ConnKey, ConnValue>,
    pub lblc: BTreeMap<LblcKey, LblcValue>,
    pub counters: BTreeMap<u32, u64>,
}

pub struct MemMaps {
    limits: Limits,
    pub state: MemState,
    /// Every successful write, in order.
    pub log: Vec<(Slot, Value)>,
}

impl MemMaps {
    pub fn new(limits: Limits) -> MemMaps {
        MemMaps {
            limits,
            state: MemState::default(),
            log: Vec::new(),
        }
    }

    fn check(&self, slot: Slot) -> Result<(), MapsError> {
        let (i, max) = match slot {
            Slot::Service(_) | Slot::Config | Slot::Heartbeat => return Ok(()),
            Slot::Vlan(v) => (v as u32, 4096),
            Slot::Ring(i) => (i, self.limits.max_services.saturating_mul(2)),
            Slot::Chunk(i) => (i, self.limits.maglev_chunks()),
            Slot::VipFilter(i) => (i, lb_common::VIP_FILTER_WORDS),
            Slot::SvcStats(i) => (i, self.limits.max_services),
            Slot::Real(i) | Slot::Load(i) | Slot::Closed(i) | Slot::Over(i) | Slot::RsStats(i) => {
                (i, self.limits.max_reals)
            }
        };
        if i >= max {
            return Err(MapsError::OutOfRange { slot });
        }
        Ok(())
    }
}

fn mismatch(slot: Slot) -> MapsError {
    MapsError::Mismatch {
        slot,
        value: "this value",
    }
}

fn zero_ring() -> Box<Ring> {
    Box::new(Ring {
        reals: [0; RING_SIZE],
    })
}

fn zero_chunk() -> Box<MaglevChunk> {
    Box::new(MaglevChunk {
        reals: [0; MAGLEV_CHUNK],
    })
}

/// Stores `v` at `i`; a zero value is stored as absent, as an array slot
/// that was never written (so contents compare equal after a rollback).
fn put<V: PartialEq>(m: &mut BTreeMap<u32, V>, i: u32, v: V, zero: V) {
    if v == zero {
        m.remove(&i);
    } else {
        m.insert(i, v);
    }
}

/// A one-CPU statistics value (empty = zero).
fn one_cpu(s: &[Stats]) -> Stats {
    s.first().copied().unwrap_or_default()
}

impl Maps for MemMaps {
    fn limits(&self) -> &Limits {
        &self.limits
    }

    fn read(&self, slot: Slot) -> Result<Value, MapsError> {
        self.check(slot)?;
        let s = &self.state;
        Ok(match slot {
            Slot::Service(k) => Value::Service(s.services.get(&k).copied()),
            Slot::Ring(i) => Value::Ring(s.rings.get(&i).cloned().unwrap_or_else(zero_ring)),
            Slot::Chunk(i) => Value::Chunk(s.chunks.get(&i).cloned().unwrap_or_else(zero_chunk)),
            Slot::VipFilter(i) => Value::Bits(s.vip_filter.get(&i).copied().unwrap_or_default()),
            Slot::Real(i) => Value::Real(s.reals.get(&i).copied().unwrap_or_default()),
            Slot::Load(i) => Value::Load(s.load.get(&i).copied().unwrap_or_default()),
            Slot::Closed(i) => Value::Load(s.closed.get(&i).copied().unwrap_or_default()),
            Slot::Over(i) => Value::Word(s.over.get(&i).copied().unwrap_or_default()),
            Slot::Vlan(v) => Value::Word(s.vlans.get(&(v as u32)).copied().unwrap_or_default()),
            Slot::SvcStats(i) => {
                Value::Stats(vec![s.svc_stats.get(&i).copied().unwrap_or_default()])
            }
            Slot::RsStats(i) => Value::Stats(vec![s.rs_stats.get(&i).copied().unwrap_or_default()]),
            Slot::Config => Value::Config(s.config),
            Slot::Heartbeat => Value::Time(s.heartbeat),
        })
    }

    fn write(&mut self, slot: Slot, value: &Value) -> Result<(), MapsError> {
        self.check(slot)?;
        let s = &mut self.state;
        match (slot, value) {
            (Slot::Service(k), Value::Service(Some(v))) => {
                if !s.services.contains_key(&k)
                    && s.services.len() >= self.limits.max_services as usize
                {
                    return Err(MapsError::Full {
                        name: map::SERVICES,
                        max: self.limits.max_services,
                    });
                }
                s.services.insert(k, *v);
            }
            (Slot::Service(k), Value::Service(None)) => {
                s.services.remove(&k);
            }
            (Slot::Ring(i), Value::Ring(r)) => put(&mut s.rings, i, r.clone(), zero_ring()),
            (Slot::Chunk(i), Value::Chunk(c)) => put(&mut s.chunks, i, c.clone(), zero_chunk()),
            (Slot::VipFilter(i), Value::Bits(b)) => put(&mut s.vip_filter, i, *b, 0),
            (Slot::Real(i), Value::Real(r)) => put(&mut s.reals, i, *r, Default::default()),
            (Slot::Load(i), Value::Load(l)) => put(&mut s.load, i, *l, Default::default()),
            (Slot::Closed(i), Value::Load(l)) => put(&mut s.closed, i, *l, Default::default()),
            (Slot::Over(i), Value::Word(o)) => put(&mut s.over, i, *o, 0),
            (Slot::Vlan(v), Value::Word(on)) => put(&mut s.vlans, v as u32, *on, 0),
            (Slot::SvcStats(i), Value::Stats(v)) => {
                put(&mut s.svc_stats, i, one_cpu(v), Default::default())
            }
            (Slot::RsStats(i), Value::Stats(v)) => {
                put(&mut s.rs_stats, i, one_cpu(v), Default::default())
            }
            (Slot::Config, Value::Config(c)) => s.config = *c,
            (Slot::Heartbeat, Value::Time(t)) => s.heartbeat = *t,
            (slot, _) => return Err(mismatch(slot)),
        }
        self.log.push((slot, value.clone()));
        Ok(())
    }

    fn services(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, MapsError> {
        Ok(self.state.services.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn conns(&self) -> Vec<(ConnKey, ConnValue)> {
        self.state.conns.iter().map(|(k, v)| (*k, *v)).collect()
    }

    fn conn(&self, key: &ConnKey) -> Option<ConnValue> {
        self.state.conns.get(key).copied()
    }

    fn remove_conn(&mut self, key: &ConnKey) {
        self.state.conns.remove(key);
    }

    fn update_conn(&mut self, key: ConnKey, value: ConnValue) {
        self.state.conns.insert(key, value);
    }

    fn forget_in_lblc(&mut self, ids: &std::collections::BTreeSet<u32>) {
        let old = std::mem::take(&mut self.state.lblc);
        for (k, v) in old {
            if let Some(w) = super::ops::without(&v, ids) {
                self.state.lblc.insert(k, w);
            }
        }
    }

    fn counter(&self, index: u32) -> u64 {
        if index == counter::TX {
            return self.state.svc_stats.values().map(|s| s.packets).sum();
        }
        self.state.counters.get(&index).copied().unwrap_or(0)
    }
}
