//! What a previous daemon left in the pinned maps: the published state
//! (ids, rings, real-server slots, CONFIG), and, for a restart without a
//! configuration or a saved state, the table those maps serve.

use std::collections::BTreeMap;

use lb_common::{rs_flags, svc_flags, MAGLEV_MAX, RING_SIZE};

use super::{
    chunks::chunks_for,
    codec::{bytes_addr, service_addr},
    plan::Published,
};
use crate::{
    dataplane::{Maps, MapsError, Slot, Value},
    model::{Forward, PortGroup, RealSpec, SchedFlags, Scheduler, ServiceAddr, ServiceSpec, Table},
};

/// The maps' contents as the director tracks them.
pub(super) fn read_published<M: Maps>(maps: &M) -> Result<Published, MapsError> {
    let mut p = Published::default();
    for (k, v) in maps.services()? {
        let Some(addr) = service_addr(&k, &v) else {
            continue;
        };
        p.svc_ids.insert(addr, v.id);
        p.services.insert(k, v);
        if p.rings.contains_key(&v.id) {
            continue;
        }
        let slot = v.id * 2 + (v.gen as u32 & 1);
        let ring = match maps.read(Slot::Ring(slot))? {
            Value::Ring(r) if v.flags & svc_flags::MAGLEV_LARGE != 0 => {
                match read_large(maps, r.reals[0], r.reals[1] as usize)? {
                    Some(table) => {
                        p.chunks.insert(slot, (r.reals[0], chunks_for(table.len())));
                        table
                    }
                    None => Vec::new(),
                }
            }
            Value::Ring(r) => r.reals[..(v.ring_len as usize).min(RING_SIZE)].to_vec(),
            _ => Vec::new(),
        };
        p.rings.insert(v.id, (v.gen, ring));
    }
    for id in 0..maps.limits().max_reals {
        let Value::Real(rs) = maps.read(Slot::Real(id))? else {
            continue;
        };
        if rs.flags & rs_flags::IN_USE == 0 {
            continue;
        }
        let addr = bytes_addr(&rs.addr, rs.family);
        p.real_ids
            .insert((rs.svc_id, addr, u16::from_be(rs.port)), id);
        p.reals.insert(id, rs);
    }
    if let Value::Config(c) = maps.read(Slot::Config)? {
        p.config = c;
    }
    for v in 1..4095u16 {
        if let Value::Word(1) = maps.read(Slot::Vlan(v))? {
            p.vlans.insert(v);
        }
    }
    for i in 0..lb_common::VIP_FILTER_WORDS {
        if let Value::Bits(w) = maps.read(Slot::VipFilter(i))? {
            p.vip_bits
                .extend((0..64).filter(|b| w & (1u64 << b) != 0).map(|b| i * 64 + b));
        }
    }
    Ok(p)
}

/// A large Maglev table of `len` slots from chunk `first` on (None: the
/// ring slot does not describe one that fits the map).
fn read_large<M: Maps>(maps: &M, first: u32, len: usize) -> Result<Option<Vec<u32>>, MapsError> {
    let n = chunks_for(len);
    if len <= RING_SIZE
        || len > MAGLEV_MAX
        || first.saturating_add(n) > maps.limits().maglev_chunks()
    {
        return Ok(None);
    }
    let mut table = Vec::with_capacity(len);
    for i in first..first + n {
        if let Value::Chunk(c) = maps.read(Slot::Chunk(i))? {
            table.extend_from_slice(&c.reals);
        }
    }
    table.truncate(len);
    Ok(Some(table))
}

/// The table the published state serves, as far as the maps tell: services
/// with their scheduler, flags and persistence, port groups (named after
/// their fwmark), and real servers with the weight in force (health checks,
/// policies and configured weights are not in the maps).
pub fn table_of(p: &Published) -> Table {
    let mut t = Table::default();
    let mut groups: BTreeMap<u32, Vec<ServiceAddr>> = BTreeMap::new();
    let mut values = BTreeMap::new();
    for (k, v) in &p.services {
        let Some(a) = service_addr(k, v) else {
            continue;
        };
        if a.is_fwmark() {
            if let Some(member) = service_addr(k, &lb_common::ServiceValue { fwmark: 0, ..*v }) {
                groups.entry(a.fwmark).or_default().push(member);
            }
        }
        values.insert(a, *v);
    }
    for (mark, members) in groups {
        let _ = t.set_group(
            mark,
            PortGroup {
                name: format!("fwmark{mark}"),
                members,
            },
        );
    }
    for (a, v) in values {
        let Some(scheduler) = Scheduler::from_id(v.sched) else {
            continue;
        };
        let port = v.flags & svc_flags::MH_PORT != 0;
        let fallback = v.flags & svc_flags::MH_FALLBACK != 0;
        let flags = match scheduler {
            Scheduler::Mh => SchedFlags {
                mh_port: port,
                mh_fallback: fallback,
                ..Default::default()
            },
            Scheduler::Sh => SchedFlags {
                sh_port: port,
                sh_fallback: fallback,
                ..Default::default()
            },
            _ => SchedFlags::default(),
        };
        let full = if a.address.is_ipv4() { 32 } else { 128 };
        let spec = ServiceSpec {
            addr: a,
            scheduler,
            flags,
            persistent: (v.flags & svc_flags::PERSISTENT != 0).then_some(v.persist_timeout),
            netmask: (v.persist_prefix != full).then_some(v.persist_prefix),
            one_packet: v.flags & svc_flags::ONE_PACKET != 0,
        };
        if t.add_service(spec).is_err() {
            continue;
        }
        for ((sid, addr, port), id) in &p.real_ids {
            let r = p.reals[id];
            if *sid != v.id || r.flags & rs_flags::REMOVED != 0 {
                continue;
            }
            let _ = t.add_real(
                &a,
                RealSpec {
                    address: *addr,
                    port: *port,
                    weight: r.weight,
                    forward: Forward::Route,
                    u_threshold: r.u_threshold,
                    l_threshold: r.l_threshold,
                },
            );
        }
    }
    t
}
