//! Between the model's types and the maps' byte layouts: addresses, keys,
//! a service's map value flags.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{svc_flags, ServiceKey, ServiceValue, AF_INET, AF_INET6, PROTO_TCP, PROTO_UDP};

use crate::model::{Protocol, Service, ServiceAddr};

/// Identity of a real-server slot: (service id, address, port).
pub type RealKey = (u32, IpAddr, u16);

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

/// The services-map key of a (protocol, VIP, port) entry.
pub fn service_key(a: &ServiceAddr) -> ServiceKey {
    let (addr, family) = addr_bytes(&a.address);
    ServiceKey {
        addr,
        port: a.port.to_be(),
        proto: a.protocol.number(),
        family,
    }
}

/// The service a services-map entry belongs to (a port group's members all
/// carry the group's fwmark).
pub fn service_addr(k: &ServiceKey, v: &ServiceValue) -> Option<ServiceAddr> {
    if v.fwmark != 0 {
        return Some(ServiceAddr::fwmark(v.fwmark, k.family == AF_INET6));
    }
    let protocol = match k.proto {
        PROTO_TCP => Protocol::Tcp,
        PROTO_UDP => Protocol::Udp,
        _ => return None,
    };
    Some(ServiceAddr {
        fwmark: 0,
        protocol,
        address: bytes_addr(&k.addr, k.family),
        port: u16::from_be(k.port),
    })
}

/// [`svc_flags`] of service `s` served as `a`.
pub fn service_flags(a: &ServiceAddr, s: &Service) -> u32 {
    let f = &s.spec.flags;
    let mut flags = 0;
    if f.mh_port || f.sh_port {
        flags |= svc_flags::MH_PORT;
    }
    if f.mh_fallback || f.sh_fallback {
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
    flags
}

/// A MAC as `aa:bb:cc:dd:ee:ff` (None if it is not one).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let b: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).ok())
        .collect::<Option<_>>()?;
    <[u8; 6]>::try_from(b).ok()
}

pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
