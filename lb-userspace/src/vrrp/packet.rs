//! VRRP advertisements on the wire: version 3 (RFC 5798, IPv4 and IPv6)
//! and version 2 (RFC 3768, IPv4), as keepalived sends and checks them.
//!
//! ```text
//! v3: 0x31 | VRID | priority | count | rsvd(4) max-adver-int(12, cs) | checksum | addresses
//! v2: 0x21 | VRID | priority | count | auth type | adver-int (s) | checksum | addresses | auth data (8)
//! ```
//! The v3 checksum covers an IP pseudo-header (source, the packet's real
//! destination, protocol 112, length) and the message; v2's covers the
//! message only. IPv6 checksums are computed and verified by the kernel
//! (IPV6_CHECKSUM), so [`encode`] leaves them zero for IPv6.

use std::net::{IpAddr, Ipv4Addr};

/// IP protocol number of VRRP.
pub const PROTO: u8 = 112;
/// The IPv4 multicast group of VRRP.
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The IPv6 multicast group of VRRP.
pub const GROUP_V6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// The longest v3 advertisement interval: 4095 centiseconds.
pub const MAX_INTERVAL_CS: u16 = 0x0fff;

/// One advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// 2 or 3.
    pub version: u8,
    pub vrid: u8,
    /// 0: the master is leaving; 255: the address owner.
    pub priority: u8,
    /// v3: centiseconds (12 bits); v2: whole seconds, carried as cs here.
    pub interval_cs: u16,
    /// The virtual addresses, all of one family.
    pub addrs: Vec<IpAddr>,
}

/// Why a received advertisement is refused (each counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("truncated or with a length that does not match its address count")]
    Length,
    #[error("wrong VRRP version")]
    Version,
    #[error("not an advertisement")]
    Type,
    #[error("bad checksum")]
    Checksum,
    #[error("IP TTL / hop limit is not 255")]
    Ttl,
    #[error("v2 authentication is not supported (auth type must be 0)")]
    Auth,
}

/// The one's complement sum of `data`, folded (as in the Internet
/// checksum), added to `acc`.
fn sum(mut acc: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        acc += w as u32;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The IPv4 pseudo-header sum of a v3 message of `len` bytes.
fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> u32 {
    let mut ph = [0u8; 12];
    ph[..4].copy_from_slice(&src.octets());
    ph[4..8].copy_from_slice(&dst.octets());
    ph[9] = PROTO;
    ph[10..12].copy_from_slice(&(len as u16).to_be_bytes());
    sum(0, &ph)
}

/// The advertisement as bytes (the VRRP message, without IP header), sent
/// from `src` to `dst` (the real destination: the group or a unicast peer;
/// it enters the v3 IPv4 checksum).
pub fn encode(a: &Advert, src: IpAddr, dst: IpAddr) -> Vec<u8> {
    let mut m = vec![
        (a.version << 4) | 1,
        a.vrid,
        a.priority,
        a.addrs.len() as u8,
    ];
    if a.version == 2 {
        m.push(0); // auth type: none
        m.push((a.interval_cs / 100).clamp(1, 255) as u8);
    } else {
        m.extend_from_slice(&(a.interval_cs & MAX_INTERVAL_CS).to_be_bytes());
    }
    m.extend_from_slice(&[0, 0]);
    for addr in &a.addrs {
        match addr {
            IpAddr::V4(v) => m.extend_from_slice(&v.octets()),
            IpAddr::V6(v) => m.extend_from_slice(&v.octets()),
        }
    }
    if a.version == 2 {
        m.extend_from_slice(&[0; 8]);
    }
    let csum = match (a.version, src, dst) {
        (2, ..) => Some(fold(sum(0, &m))),
        (_, IpAddr::V4(s), IpAddr::V4(d)) => Some(fold(sum(pseudo_v4(s, d, m.len()), &m))),
        // IPv6: the kernel fills it in (IPV6_CHECKSUM).
        _ => None,
    };
    if let Some(c) = csum {
        m[6..8].copy_from_slice(&c.to_be_bytes());
    }
    m
}

/// Reads an advertisement of `version` received from `src` to `dst` with
/// IP TTL / hop limit `ttl`. `check_ttl` is off for unicast (as keepalived);
/// IPv6 checksums were verified by the kernel.
pub fn decode(
    m: &[u8],
    version: u8,
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    check_ttl: bool,
) -> Result<Advert, Refused> {
    if m.len() < 8 {
        return Err(Refused::Length);
    }
    if m[0] >> 4 != version {
        return Err(Refused::Version);
    }
    if m[0] & 0x0f != 1 {
        return Err(Refused::Type);
    }
    if check_ttl && ttl != 255 {
        return Err(Refused::Ttl);
    }
    let n = m[3] as usize;
    let alen = if src.is_ipv4() { 4 } else { 16 };
    let want = 8 + n * alen + if version == 2 { 8 } else { 0 };
    if m.len() != want {
        return Err(Refused::Length);
    }
    let ok = match (version, src, dst) {
        (2, ..) => fold(sum(0, m)) == 0,
        (_, IpAddr::V4(s), IpAddr::V4(d)) => fold(sum(pseudo_v4(s, d, m.len()), m)) == 0,
        _ => true,
    };
    if !ok {
        return Err(Refused::Checksum);
    }
    let interval_cs = if version == 2 {
        if m[4] != 0 {
            return Err(Refused::Auth);
        }
        m[5] as u16 * 100
    } else {
        u16::from_be_bytes([m[4], m[5]]) & MAX_INTERVAL_CS
    };
    let addrs = m[8..8 + n * alen]
        .chunks(alen)
        .map(|c| match <[u8; 4]>::try_from(c) {
            Ok(v4) => IpAddr::from(v4),
            Err(_) => IpAddr::from(<[u8; 16]>::try_from(c).unwrap_or([0; 16])),
        })
        .collect();
    Ok(Advert {
        version,
        vrid: m[1],
        priority: m[2],
        interval_cs,
        addrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn adv(version: u8, priority: u8, cs: u16) -> Advert {
        Advert {
            version,
            vrid: 51,
            priority,
            interval_cs: cs,
            addrs: vec![ip("10.0.0.100")],
        }
    }

    /// Vectors from the RFC algorithm (as keepalived computes them): src
    /// 10.0.0.1, VRID 51, VIP 10.0.0.100.
    #[test]
    fn encodes_as_keepalived_does() {
        let (src, group) = (ip("10.0.0.1"), IpAddr::V4(GROUP_V4));
        let hex = |v: Vec<u8>| {
            v.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            hex(encode(&adv(3, 100, 100), src, group)),
            "31 33 64 01 00 64 75 73 0a 00 00 64"
        );
        assert_eq!(
            hex(encode(&adv(3, 100, 100), src, ip("10.0.0.2"))),
            "31 33 64 01 00 64 4b 84 0a 00 00 64",
            "unicast: the peer in the pseudo-header"
        );
        assert_eq!(
            hex(encode(&adv(3, 0, 100), src, group)),
            "31 33 00 01 00 64 d9 73 0a 00 00 64"
        );
        assert_eq!(
            hex(encode(&adv(3, 100, 10), src, group)),
            "31 33 64 01 00 0a 75 cd 0a 00 00 64"
        );
        assert_eq!(
            hex(encode(&adv(2, 100, 100), src, group)),
            "21 33 64 01 00 01 70 66 0a 00 00 64 00 00 00 00 00 00 00 00"
        );
    }

    #[test]
    fn round_trips_and_refuses_what_keepalived_refuses() {
        let (src, group) = (ip("10.0.0.1"), IpAddr::V4(GROUP_V4));
        for v in [2, 3] {
            let a = adv(v, 150, 100);
            let m = encode(&a, src, group);
            assert_eq!(decode(&m, v, src, group, 255, true), Ok(a));
            assert_eq!(
                decode(&m, 5 - v, src, group, 255, true),
                Err(Refused::Version)
            );
            assert_eq!(decode(&m, v, src, group, 64, true), Err(Refused::Ttl));
            assert!(
                decode(&m, v, src, group, 64, false).is_ok(),
                "unicast: no TTL check"
            );
            let mut bad = m.clone();
            bad[2] ^= 1;
            assert_eq!(
                decode(&bad, v, src, group, 255, true),
                Err(Refused::Checksum)
            );
            assert_eq!(
                decode(&m[..m.len() - 1], v, src, group, 255, true),
                Err(Refused::Length)
            );
            let mut more = m.clone();
            more.push(0);
            assert_eq!(
                decode(&more, v, src, group, 255, true),
                Err(Refused::Length)
            );
        }
        // A v3 advert checked against another destination fails.
        let m = encode(&adv(3, 1, 100), src, group);
        assert_eq!(
            decode(&m, 3, src, ip("10.0.0.2"), 255, false),
            Err(Refused::Checksum)
        );
        // IPv6: addresses of 16 bytes, checksum left to the kernel.
        let six = Advert {
            addrs: vec![ip("fe80::100"), ip("2001:db8::100")],
            ..adv(3, 100, 100)
        };
        let m = encode(&six, ip("fe80::1"), IpAddr::V6(GROUP_V6));
        assert_eq!(m.len(), 8 + 32);
        assert_eq!(
            decode(&m, 3, ip("fe80::1"), IpAddr::V6(GROUP_V6), 255, true),
            Ok(six)
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 80) as usize;
            let m: Vec<u8> = (0..len).map(|i| (x >> (i % 8 * 8)) as u8).collect();
            let _ = decode(&m, 3, ip("10.0.0.1"), IpAddr::V4(GROUP_V4), 255, true);
            let _ = decode(&m, 2, ip("10.0.0.1"), IpAddr::V4(GROUP_V4), 255, false);
            let _ = decode(&m, 3, ip("fe80::1"), IpAddr::V6(GROUP_V6), 255, true);
        }
    }
}
