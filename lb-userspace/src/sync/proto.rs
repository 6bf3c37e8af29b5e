//! The IPVS connection-sync protocol, version 1 (net/netfilter/ipvs/
//! ip_vs_sync.c), as the kernel and Wireshark's "ipvs" dissector read it.
//!
//! ```text
//! message: reserved(0) syncid size(u16) nr_conns version(1) spare(0)   8 bytes
//! record:  type(bit0 IPv6) protocol ver_size(u16: ver<<12 | len) flags(u32)
//!          state(u16) cport vport dport fwmark(u32) timeout(u32, s)
//!          caddr vaddr daddr (4 or 16 bytes each): 36 or 72 bytes
//! ```
//! Big-endian throughout; records start on 32-bit boundaries; options
//! (sequence data, persistence-engine data) are skipped on receive and never
//! sent (direct routing has no use for them, and Wireshark's dissector does
//! not skip them).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The default multicast group and port.
pub const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
pub const PORT: u16 = 8848;
/// The master's default message size: 1500 - IPv4 - UDP headers.
pub const MAXLEN: usize = 1472;

/// IP_VS_CONN_F_* bits lbd sends and reads.
pub mod flags {
    pub const DROUTE: u32 = 0x0003;
    pub const FWD_MASK: u32 = 0x0007;
    pub const SYNC: u32 = 0x0020;
    pub const INACTIVE: u32 = 0x0100;
    pub const TEMPLATE: u32 = 0x1000;
    /// What a backup accepts (IP_VS_CONN_F_BACKUP_MASK).
    pub const BACKUP_MASK: u32 = 0x1f87;
}

/// One connection (or persistence template).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub protocol: u8,
    pub flags: u32,
    pub state: u16,
    pub cport: u16,
    pub vport: u16,
    pub dport: u16,
    pub fwmark: u32,
    /// The entry's timeout in its state, seconds.
    pub timeout: u32,
    pub caddr: IpAddr,
    pub vaddr: IpAddr,
    pub daddr: IpAddr,
}

impl Record {
    fn v6(&self) -> bool {
        self.caddr.is_ipv6()
    }
    fn len(&self) -> usize {
        if self.v6() {
            72
        } else {
            36
        }
    }
}

/// Why a datagram (or the rest of it) was refused, as the kernel would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("message shorter than its header")]
    Short,
    #[error("size field does not match the datagram")]
    Size,
    #[error("version 0 message (not supported)")]
    Version0,
    #[error("record runs past the message or is too short")]
    Record,
    #[error("record of an unknown version")]
    RecordVersion,
    #[error("record type without the IPv6 bit")]
    Type,
}

fn put_addr(m: &mut Vec<u8>, a: &IpAddr) {
    match a {
        IpAddr::V4(v) => m.extend_from_slice(&v.octets()),
        IpAddr::V6(v) => m.extend_from_slice(&v.octets()),
    }
}

/// The messages (each at most `maxlen` bytes, at most 255 records) that
/// carry `records` for `syncid`. An empty `records` gives one empty
/// message (lbd's resync request).
pub fn encode(syncid: u8, records: &[Record], maxlen: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut m: Vec<u8> = Vec::new();
    let mut n = 0u8;
    let finish = |m: &mut Vec<u8>, n: u8, out: &mut Vec<Vec<u8>>| {
        let size = m.len() as u16;
        m[2..4].copy_from_slice(&size.to_be_bytes());
        m[4] = n;
        out.push(std::mem::take(m));
    };
    let header = |m: &mut Vec<u8>| m.extend_from_slice(&[0, syncid, 0, 0, 0, 1, 0, 0]);
    header(&mut m);
    for r in records {
        if n == 255 || (n > 0 && m.len() + r.len() > maxlen) {
            finish(&mut m, n, &mut out);
            header(&mut m);
            n = 0;
        }
        m.push(r.v6() as u8);
        m.push(r.protocol);
        m.extend_from_slice(&(r.len() as u16 & 0x0fff).to_be_bytes());
        m.extend_from_slice(&r.flags.to_be_bytes());
        m.extend_from_slice(&r.state.to_be_bytes());
        m.extend_from_slice(&r.cport.to_be_bytes());
        m.extend_from_slice(&r.vport.to_be_bytes());
        m.extend_from_slice(&r.dport.to_be_bytes());
        m.extend_from_slice(&r.fwmark.to_be_bytes());
        m.extend_from_slice(&r.timeout.to_be_bytes());
        put_addr(&mut m, &r.caddr);
        put_addr(&mut m, &r.vaddr);
        put_addr(&mut m, &r.daddr);
        n += 1;
    }
    finish(&mut m, n, &mut out);
    out
}

/// A decoded message: its syncid, the records read, and how many records
/// were skipped (unknown mandatory option, unknown protocol...). A record
/// error that the kernel treats as fatal ends the message: the records
/// before it are kept and `rest` says why.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    pub syncid: u8,
    pub records: Vec<Record>,
    pub skipped: usize,
    pub rest: Option<Refused>,
}

fn be16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}
fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// Reads one datagram.
pub fn decode(m: &[u8]) -> Result<Decoded, Refused> {
    if m.len() < 8 {
        return Err(Refused::Short);
    }
    if be16(m, 2) as usize != m.len() {
        return Err(Refused::Size);
    }
    if !(m[0] == 0 && m[5] == 1 && be16(m, 6) == 0) {
        return Err(Refused::Version0);
    }
    let mut d = Decoded {
        syncid: m[1],
        ..Default::default()
    };
    let n = m[4] as usize;
    let mut p = 8usize;
    for _ in 0..n {
        if p + 36 > m.len() {
            d.rest = Some(Refused::Record);
            break;
        }
        let ty = m[p];
        let vs = be16(m, p + 2);
        let len = (vs & 0x0fff) as usize;
        if vs >> 12 != 0 {
            d.rest = Some(Refused::RecordVersion);
            break;
        }
        if ty != 0 && ty & 1 == 0 {
            d.rest = Some(Refused::Type);
            break;
        }
        let v6 = ty & 1 != 0;
        let fixed = if v6 { 72 } else { 36 };
        if len < fixed || p + len > m.len() {
            d.rest = Some(Refused::Record);
            break;
        }
        let r = &m[p..p + len];
        let addr = |o: usize| -> IpAddr {
            if v6 {
                let mut a = [0u8; 16];
                a.copy_from_slice(&r[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(a))
            } else {
                IpAddr::V4(Ipv4Addr::new(r[o], r[o + 1], r[o + 2], r[o + 3]))
            }
        };
        let w = if v6 { 16 } else { 4 };
        // Options (sequence data, persistence-engine data) are of no use
        // to direct routing: a record carrying a mandatory one we do not
        // know is skipped, as the kernel does.
        let mut opts_ok = true;
        let mut o = fixed;
        while o < len {
            if o + 2 > len {
                opts_ok = false;
                break;
            }
            let (t, l) = (r[o], r[o + 1] as usize);
            if l == 0 || o + 2 + l > len {
                opts_ok = false;
                break;
            }
            if !matches!(t & !0x40, 1..=3) && t & 0x40 == 0 {
                d.skipped += 1;
            }
            o += 2 + l;
        }
        if !opts_ok {
            d.rest = Some(Refused::Record);
            break;
        }
        d.records.push(Record {
            protocol: r[1],
            flags: be32(r, 4),
            state: be16(r, 8),
            cport: be16(r, 10),
            vport: be16(r, 12),
            dport: be16(r, 14),
            fwmark: be32(r, 16),
            timeout: be32(r, 20),
            caddr: addr(24),
            vaddr: addr(24 + w),
            daddr: addr(24 + 2 * w),
        });
        p += (len + 3) & !3;
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn conn() -> Record {
        Record {
            protocol: 6,
            flags: flags::DROUTE,
            state: 1,
            cport: 40000,
            vport: 80,
            dport: 80,
            fwmark: 0,
            timeout: 900,
            caddr: ip("10.0.0.1"),
            vaddr: ip("192.0.2.10"),
            daddr: ip("10.1.0.5"),
        }
    }

    /// The kernel's worked example: TCP/DR ESTABLISHED, syncid 1.
    #[test]
    fn encodes_what_the_kernel_sends() {
        let m = encode(1, &[conn()], MAXLEN);
        let hex: Vec<String> = m[0].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex.join(" "),
            "00 01 00 2c 01 01 00 00 \
             00 06 00 24 00 00 00 03 00 01 9c 40 00 50 00 50 00 00 00 00 00 00 03 84 \
             0a 00 00 01 c0 00 02 0a 0a 01 00 05"
        );
        assert_eq!(decode(&m[0]).unwrap().records, vec![conn()]);
    }

    #[test]
    fn splits_at_maxlen_and_255_records_and_reads_ipv6() {
        let many = vec![conn(); 600];
        let msgs = encode(7, &many, MAXLEN);
        assert!(msgs.iter().all(|m| m.len() <= MAXLEN));
        let back: Vec<Record> = msgs
            .iter()
            .flat_map(|m| decode(m).unwrap().records)
            .collect();
        assert_eq!(back.len(), 600);
        assert_eq!(encode(7, &many, 65000).len(), 3, "255 records at most");
        let six = Record {
            caddr: ip("2001:db8::1"),
            vaddr: ip("2001:db8::100"),
            daddr: ip("2001:db8::11"),
            ..conn()
        };
        let m = encode(1, &[six, six], MAXLEN);
        assert_eq!(m[0].len(), 8 + 2 * 72);
        assert_eq!(decode(&m[0]).unwrap().records, vec![six, six]);
        assert_eq!(
            decode(&encode(3, &[], MAXLEN)[0]).unwrap().syncid,
            3,
            "empty: a resync request"
        );
    }

    #[test]
    fn refuses_what_the_kernel_refuses() {
        let m = encode(1, &[conn(), conn()], MAXLEN).remove(0);
        assert_eq!(decode(&m[..7]), Err(Refused::Short));
        assert_eq!(decode(&m[..m.len() - 1]), Err(Refused::Size));
        let mut v0 = m.clone();
        v0[5] = 0;
        assert_eq!(decode(&v0), Err(Refused::Version0));
        // A record claiming more than the message has: the rest goes.
        let mut bad = m.clone();
        bad[8 + 36 + 3] = 200;
        let d = decode(&bad).unwrap();
        assert_eq!((d.records.len(), d.rest), (1, Some(Refused::Record)));
        // Options after the addresses are skipped (a PE name here).
        let mut opt = encode(1, &[conn()], MAXLEN).remove(0);
        opt[8 + 3] = 36 + 5;
        opt.extend_from_slice(&[3, 3, b's', b'i', b'p']);
        let size = opt.len() as u16;
        opt[2..4].copy_from_slice(&size.to_be_bytes());
        assert_eq!(decode(&opt).unwrap().records, vec![conn()]);
    }

    #[test]
    fn random_and_mutated_messages_never_panic() {
        let base = encode(1, &[conn(); 3], MAXLEN).remove(0);
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..200_000 {
            let mut m = if i % 4 == 0 {
                (0..next() % 200).map(|_| next() as u8).collect()
            } else {
                base.clone()
            };
            for _ in 0..1 + next() % 4 {
                if m.is_empty() {
                    break;
                }
                let at = (next() % m.len() as u64) as usize;
                m[at] = next() as u8;
            }
            if next() % 2 == 0 && m.len() >= 4 {
                let size = m.len() as u16;
                m[2..4].copy_from_slice(&size.to_be_bytes());
            }
            let _ = decode(&m);
        }
    }
}
