//! [`Maps`] over the pinned BPF maps.

use aya::maps::{MapError, PerCpuValues};
use lb_common::{counter, names::map, ConnKey, ConnValue, ServiceKey, ServiceValue, Stats};

use super::{map_err, Dataplane, Limits, Maps, MapsError, Slot, Value};

fn mismatch(slot: Slot, value: &Value) -> MapsError {
    let value = match value {
        Value::Service(_) => "a service",
        Value::Ring(_) => "a ring",
        Value::Chunk(_) => "a Maglev chunk",
        Value::Real(_) => "a real server",
        Value::Load(_) => "a load",
        Value::Word(_) => "a flag",
        Value::Bits(_) => "64 bits",
        Value::Stats(_) => "statistics",
        Value::Config(_) => "a configuration",
        Value::Time(_) => "a time",
    };
    MapsError::Mismatch { slot, value }
}

fn stats_of(
    v: Result<PerCpuValues<Stats>, MapError>,
    name: &'static str,
) -> Result<Value, MapsError> {
    Ok(Value::Stats(
        v.map_err(map_err(name))?.iter().copied().collect(),
    ))
}

/// Per-CPU values for a write (an empty list: zero on every CPU).
fn per_cpu(v: &[Stats], name: &'static str) -> Result<PerCpuValues<Stats>, MapsError> {
    let vals = if v.is_empty() {
        let n = aya::util::nr_cpus().map_err(|(_, cause)| MapsError::Io { name, cause })?;
        vec![Stats::default(); n]
    } else {
        v.to_vec()
    };
    PerCpuValues::try_from(vals).map_err(|cause| MapsError::Io { name, cause })
}

impl Maps for Dataplane {
    fn limits(&self) -> &Limits {
        &self.limits
    }

    fn read(&self, slot: Slot) -> Result<Value, MapsError> {
        Ok(match slot {
            Slot::Service(k) => match self.services.get(&k, 0) {
                Ok(v) => Value::Service(Some(v)),
                Err(MapError::KeyNotFound) => Value::Service(None),
                Err(e) => return Err(map_err(map::SERVICES)(e)),
            },
            Slot::Ring(i) => Value::Ring(Box::new(
                self.rings.get(&i, 0).map_err(map_err(map::RINGS))?,
            )),
            Slot::Chunk(i) => Value::Chunk(Box::new(
                self.maglev.get(&i, 0).map_err(map_err(map::MAGLEV))?,
            )),
            Slot::VipFilter(i) => Value::Bits(
                self.vip_filter
                    .get(&i, 0)
                    .map_err(map_err(map::VIP_FILTER))?,
            ),
            Slot::Real(i) => Value::Real(self.reals.get(&i, 0).map_err(map_err(map::REALS))?),
            Slot::Load(i) => Value::Load(self.rs_load.get(&i, 0).map_err(map_err(map::RS_LOAD))?),
            Slot::Closed(i) => {
                Value::Load(self.rs_closed.get(&i, 0).map_err(map_err(map::RS_CLOSED))?)
            }
            Slot::Over(i) => Value::Word(self.rs_over.get(&i, 0).map_err(map_err(map::RS_OVER))?),
            Slot::Vlan(v) => Value::Word(
                self.vlans
                    .get(&(v as u32), 0)
                    .map_err(map_err(map::VLANS))?,
            ),
            Slot::SvcStats(i) => stats_of(self.svc_stats.get(&i, 0), map::SVC_STATS)?,
            Slot::RsStats(i) => stats_of(self.rs_stats.get(&i, 0), map::RS_STATS)?,
            Slot::Config => Value::Config(self.config.get(&0, 0).map_err(map_err(map::CONFIG))?),
            Slot::Heartbeat => {
                Value::Time(self.heartbeat.get(&0, 0).map_err(map_err(map::HEARTBEAT))?)
            }
        })
    }

    fn write(&mut self, slot: Slot, value: &Value) -> Result<(), MapsError> {
        match (slot, value) {
            (Slot::Service(k), Value::Service(Some(v))) => self
                .services
                .insert(k, *v, 0)
                .map_err(map_err(map::SERVICES)),
            (Slot::Service(k), Value::Service(None)) => match self.services.remove(&k) {
                Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
                Err(e) => Err(map_err(map::SERVICES)(e)),
            },
            (Slot::Ring(i), Value::Ring(r)) => {
                self.rings.set(i, **r, 0).map_err(map_err(map::RINGS))
            }
            (Slot::Chunk(i), Value::Chunk(c)) => {
                self.maglev.set(i, **c, 0).map_err(map_err(map::MAGLEV))
            }
            (Slot::VipFilter(i), Value::Bits(b)) => self
                .vip_filter
                .set(i, *b, 0)
                .map_err(map_err(map::VIP_FILTER)),
            (Slot::Real(i), Value::Real(r)) => {
                self.reals.set(i, *r, 0).map_err(map_err(map::REALS))
            }
            (Slot::Load(i), Value::Load(l)) => {
                self.rs_load.set(i, *l, 0).map_err(map_err(map::RS_LOAD))
            }
            (Slot::Closed(i), Value::Load(l)) => self
                .rs_closed
                .set(i, *l, 0)
                .map_err(map_err(map::RS_CLOSED)),
            (Slot::Vlan(v), Value::Word(on)) => self
                .vlans
                .set(v as u32, *on, 0)
                .map_err(map_err(map::VLANS)),
            (Slot::Over(i), Value::Word(o)) => {
                self.rs_over.set(i, *o, 0).map_err(map_err(map::RS_OVER))
            }
            (Slot::SvcStats(i), Value::Stats(s)) => {
                let v = per_cpu(s, map::SVC_STATS)?;
                self.svc_stats.set(i, v, 0).map_err(map_err(map::SVC_STATS))
            }
            (Slot::RsStats(i), Value::Stats(s)) => {
                let v = per_cpu(s, map::RS_STATS)?;
                self.rs_stats.set(i, v, 0).map_err(map_err(map::RS_STATS))
            }
            (Slot::Config, Value::Config(c)) => {
                self.config.set(0, *c, 0).map_err(map_err(map::CONFIG))
            }
            (Slot::Heartbeat, Value::Time(t)) => self
                .heartbeat
                .set(0, *t, 0)
                .map_err(map_err(map::HEARTBEAT)),
            (slot, value) => Err(mismatch(slot, value)),
        }
    }

    fn services(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, MapsError> {
        self.services
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(map::SERVICES))
    }

    fn conns(&self) -> Vec<(ConnKey, ConnValue)> {
        self.conns_batch().unwrap_or_else(|_| self.conns_by_key())
    }

    fn conn(&self, key: &ConnKey) -> Option<ConnValue> {
        self.conns.get(key, 0).ok()
    }

    fn remove_conn(&mut self, key: &ConnKey) {
        let _ = self.conns.remove(key);
    }

    fn update_conn(&mut self, key: ConnKey, value: ConnValue) {
        let _ = self.conns.insert(key, value, 0);
    }

    fn forget_in_lblc(&mut self, ids: &std::collections::BTreeSet<u32>) {
        let entries: Vec<_> = self.lblc.iter().filter_map(|r| r.ok()).collect();
        for (k, v) in entries {
            if !v.reals[..(v.n as usize).min(v.reals.len())]
                .iter()
                .any(|id| ids.contains(id))
            {
                continue;
            }
            let _ = match super::ops::without(&v, ids) {
                Some(w) => self.lblc.insert(k, w, 0),
                None => self.lblc.remove(&k),
            };
        }
    }

    fn counter(&self, index: u32) -> u64 {
        if index == counter::TX {
            // Not counted on the hot path: the sum of the per-service
            // packet counters.
            return (0..self.limits.max_services)
                .filter_map(|id| self.svc_stats.get(&id, 0).ok())
                .map(|v| v.iter().map(|s| s.packets).sum::<u64>())
                .sum();
        }
        self.global_stats
            .get(&index, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }
}
