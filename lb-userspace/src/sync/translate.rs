//! Connection entries to sync records and back: a master's entry names its
//! service and real server by slot ids; on the wire they are addresses and
//! ports (IPVS's layout); a backup binds them to its own slots by service
//! key (or port group) and real-server address.

use std::{collections::HashMap, net::IpAddr};

use lb_common::{tcp_state, ConnKey, ConnValue, RealServer, ServiceKey, AF_INET, AF_INET6};

use super::proto::{flags, Record};
use crate::director::codec::{addr_bytes, bytes_addr};

/// What the translation needs of the director's published state.
#[derive(Debug, Clone, Default)]
pub struct IdMap {
    /// The services map: key -> (service id, fwmark).
    pub services: HashMap<ServiceKey, (u32, u32)>,
    pub by_fwmark: HashMap<u32, u32>,
    pub fwmark_of: HashMap<u32, u32>,
    /// REALS slots in use.
    pub reals: HashMap<u32, RealServer>,
    /// (service id, address) -> slot.
    pub real_of: HashMap<(u32, IpAddr), u32>,
    /// Timeouts by state (seconds).
    pub timeouts: [u32; 12],
}

/// Why a received record is not applied (counted by reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unbound {
    #[error("no such virtual service here")]
    NoService,
    #[error("no such real server in that service here")]
    NoReal,
    #[error("not a direct-routing connection")]
    NotRoute,
    #[error("unknown protocol or state")]
    Unknown,
}

/// The record of entry (`key`, `value`) of a master; None if its slot is
/// gone meanwhile.
pub fn to_record(ids: &IdMap, key: &ConnKey, value: &ConnValue) -> Option<Record> {
    let real = ids.reals.get(&value.real_id)?;
    let template = value.state == tcp_state::TEMPLATE;
    let state = match value.state {
        tcp_state::TEMPLATE => 1, // IP_VS_CTPL_S_ASSURED
        tcp_state::UDP => 0,
        s => s as u16,
    };
    let timeout = if template {
        value.timeout
    } else {
        ids.timeouts.get(value.state as usize).copied().unwrap_or(0)
    };
    let mut f = flags::DROUTE;
    if template {
        f |= flags::TEMPLATE;
    } else if key.proto == lb_common::PROTO_TCP && value.state != tcp_state::ESTABLISHED {
        f |= flags::INACTIVE;
    }
    Some(Record {
        protocol: key.proto,
        flags: f,
        state,
        cport: u16::from_be(key.sport),
        vport: u16::from_be(key.dport),
        dport: u16::from_be(real.port),
        fwmark: ids.fwmark_of.get(&value.svc_id).copied().unwrap_or(0),
        timeout,
        caddr: bytes_addr(&key.saddr, key.family),
        vaddr: bytes_addr(&key.daddr, key.family),
        daddr: bytes_addr(&real.addr, real.family),
    })
}

/// The entry a backup makes of record `r`, seen at `now` (monotonic ns).
pub fn from_record(ids: &IdMap, r: &Record, now: u64) -> Result<(ConnKey, ConnValue), Unbound> {
    if r.flags & flags::FWD_MASK != flags::DROUTE {
        return Err(Unbound::NotRoute);
    }
    let template = r.flags & flags::TEMPLATE != 0;
    let (saddr, family) = addr_bytes(&r.caddr);
    let (daddr, _) = addr_bytes(&r.vaddr);
    let key = ConnKey {
        saddr,
        daddr,
        sport: r.cport.to_be(),
        dport: r.vport.to_be(),
        proto: r.protocol,
        family: if family == AF_INET { AF_INET } else { AF_INET6 },
        _pad: [0; 2],
    };
    let sid = if template && r.protocol == 0 {
        // A port group's template: the fwmark where the VIP would be.
        let mark = u32::from_be_bytes([daddr[0], daddr[1], daddr[2], daddr[3]]);
        *ids.by_fwmark.get(&mark).ok_or(Unbound::NoService)?
    } else {
        let mut sk = ServiceKey {
            addr: daddr,
            port: key.dport,
            proto: r.protocol,
            family: key.family,
        };
        match ids.services.get(&sk) {
            Some((sid, _)) => *sid,
            None => {
                sk.port = 0;
                ids.services.get(&sk).ok_or(Unbound::NoService)?.0
            }
        }
    };
    let real_id = *ids.real_of.get(&(sid, r.daddr)).ok_or(Unbound::NoReal)?;
    let state = if template {
        tcp_state::TEMPLATE
    } else if r.protocol == lb_common::PROTO_TCP {
        if r.state as usize >= tcp_state::COUNT {
            return Err(Unbound::Unknown);
        }
        r.state as u8
    } else if r.protocol == lb_common::PROTO_UDP {
        tcp_state::UDP
    } else {
        return Err(Unbound::Unknown);
    };
    Ok((
        key,
        ConnValue {
            real_id,
            svc_id: sid,
            last_seen_ns: now,
            state,
            flags: lb_common::conn_flags::SYNCED,
            _pad: [0; 2],
            // Clamped: a template lives at most as long as ipvsadm allows
            // a persistence timeout (31 days), whatever the wire says.
            timeout: if template {
                r.timeout.clamp(1, 2_678_400)
            } else {
                0
            },
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> IdMap {
        let (vip, f) = addr_bytes(&"192.0.2.100".parse().unwrap());
        let (rs, _) = addr_bytes(&"192.0.2.11".parse().unwrap());
        let mut m = IdMap {
            timeouts: tcp_state::DEFAULT_TIMEOUTS,
            ..Default::default()
        };
        m.services.insert(
            ServiceKey {
                addr: vip,
                port: 80u16.to_be(),
                proto: 6,
                family: f,
            },
            (3, 0),
        );
        m.reals.insert(
            9,
            RealServer {
                addr: rs,
                family: f,
                port: 80u16.to_be(),
                svc_id: 3,
                ..Default::default()
            },
        );
        m.real_of.insert((3, "192.0.2.11".parse().unwrap()), 9);
        m
    }

    #[test]
    fn an_entry_goes_over_and_comes_back_bound_to_the_same_service_and_server() {
        let ids = ids();
        let (c, f) = addr_bytes(&"203.0.113.10".parse().unwrap());
        let (vip, _) = addr_bytes(&"192.0.2.100".parse().unwrap());
        let key = ConnKey {
            saddr: c,
            daddr: vip,
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            proto: 6,
            family: f,
            _pad: [0; 2],
        };
        let value = ConnValue {
            real_id: 9,
            svc_id: 3,
            last_seen_ns: 5,
            state: tcp_state::ESTABLISHED,
            ..Default::default()
        };
        let r = to_record(&ids, &key, &value).unwrap();
        assert_eq!(
            (r.cport, r.vport, r.dport, r.timeout, r.flags),
            (40000, 80, 80, 900, flags::DROUTE)
        );
        let (k2, v2) = from_record(&ids, &r, 77).unwrap();
        assert_eq!(k2, key);
        assert_eq!(
            (v2.real_id, v2.svc_id, v2.state, v2.last_seen_ns),
            (9, 3, tcp_state::ESTABLISHED, 77)
        );
        // Unknown here: counted, not applied.
        let mut other = r;
        other.daddr = "192.0.2.99".parse().unwrap();
        assert_eq!(from_record(&ids, &other, 0), Err(Unbound::NoReal));
        other.vport = 81;
        assert_eq!(from_record(&ids, &other, 0), Err(Unbound::NoService));
        other.flags = 0;
        assert_eq!(from_record(&ids, &other, 0), Err(Unbound::NotRoute));
    }
}
