//! Helpers for packet tests: a director over a private pin directory, and a
//! small frame builder (Ethernet, optional 802.1Q, IPv4 with options, IPv6,
//! TCP, UDP). The IPv4 header checksum is valid; L4 checksums are left zero
//! (the XDP program never reads them).
#![allow(dead_code)]

use std::{net::IpAddr, path::PathBuf};

use lb_common::{ConnKey, ConnValue, ServiceKey, ServiceValue};
use lb_userspace::{
    config::{Config, Limits},
    dataplane::{Dataplane, Faulty, Maps, Slot, Value},
    director::Director,
    health::{Verdict, WeightChange},
    model::{ServiceAddr, Table},
};

pub const DIRECTOR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const CLIENT_SIDE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

pub const fn rs_mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x10, n]
}

/// The three lab-style real servers 192.0.2.11-13 with their MACs.
pub const RS3: [(&str, Option<[u8; 6]>); 3] = [
    ("192.0.2.11", Some(rs_mac(11))),
    ("192.0.2.12", Some(rs_mac(12))),
    ("192.0.2.13", Some(rs_mac(13))),
];

/// Whether the tests run as root (BPF needs it).
pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A health verdict as a check task reports it.
pub fn verdict(up: bool, weight: Option<WeightChange>, reason: &str) -> Option<Verdict> {
    Some(Verdict {
        up,
        weight,
        reason: reason.into(),
    })
}

/// Runs the calling thread on CPU 0 only, so per-CPU state (round-robin
/// cursors, counters) is deterministic across test runs.
pub fn pin_to_cpu0() {
    pin_to_cpu(0);
}

/// Runs this thread on CPU `cpu` only (BPF_PROG_TEST_RUN runs the program
/// on the caller's CPU).
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: plain libc calls on a zeroed cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// A bpffs pin directory removed on drop (even when the test panics).
pub struct PinDir(pub PathBuf);

impl PinDir {
    pub fn new(tag: &str) -> PinDir {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        PinDir(PathBuf::from(format!(
            "/sys/fs/bpf/lb-test-{tag}-{}-{n}",
            std::process::id()
        )))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A director on its own pin directory, over the real maps (wrapped so a
/// test can make a write fail). Field order matters: the director (and its
/// map fds) drops before the directory is removed.
pub struct TestDirector {
    pub d: Director<Faulty<Dataplane>>,
    _dir: PinDir,
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl TestDirector {
    pub fn new(table: Table, macs: &[(&str, Option<[u8; 6]>)]) -> TestDirector {
        let limits = Limits {
            max_services: 16,
            max_reals: 64,
            max_conns: 4096,
            max_maglev_slots: lb_common::DEFAULT_MAX_MAGLEV_SLOTS,
        };
        Self::with_limits(table, macs, limits)
    }

    pub fn with_limits(
        table: Table,
        macs: &[(&str, Option<[u8; 6]>)],
        limits: Limits,
    ) -> TestDirector {
        let dir = PinDir::new("pkt");
        let dp = Dataplane::load(&dir.0, &limits).expect("load XDP object");
        let mut d = Director::recover(Faulty::new(dp)).unwrap();
        d.set_director_mac(DIRECTOR_MAC).unwrap();
        let updates: Vec<(IpAddr, Option<[u8; 6]>)> =
            macs.iter().map(|(a, m)| (a.parse().unwrap(), *m)).collect();
        d.set_macs(&updates).unwrap();
        d.set_table(table).unwrap();
        // As lbd's sweep tick: the program takes the counts for kept.
        d.heartbeat();
        TestDirector { d, _dir: dir }
    }

    pub fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.d
            .maps_mut()
            .inner
            .test_run(frame)
            .expect("BPF_PROG_TEST_RUN")
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.d
            .counters()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no counter {name}"))
            .1
    }

    /// The connection entry of `key`, if any.
    pub fn conn(&self, key: &ConnKey) -> Option<ConnValue> {
        self.d
            .maps()
            .conns()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The services-map entry of `key`, if any.
    pub fn service(&self, key: &ServiceKey) -> Option<ServiceValue> {
        match self.d.maps().read(Slot::Service(*key)) {
            Ok(Value::Service(v)) => v,
            _ => None,
        }
    }

    /// Records a health verdict of real server `real` of `svc`.
    pub fn health(&mut self, svc: ServiceAddr, real: IpAddr, up: bool, reason: &str) -> bool {
        self.d
            .set_health(svc, real, verdict(up, None, reason))
            .unwrap()
    }
}

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

#[derive(Clone, Debug)]
pub struct Pkt {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub vlan: Option<u16>,
    /// Extra IPv4 option bytes (multiple of 4).
    pub ip_options: usize,
    /// IPv4 fragment field (flags+offset).
    pub frag: u16,
    /// IPv6 next header override (extension header test).
    pub v6_next: Option<u8>,
    /// IPv6 extension headers before L4, in order: 0, 43, 60 (8 bytes
    /// each), 44 (a fragment header from `v6_frag`).
    pub v6_chain: Vec<u8>,
    /// The IPv6 fragment header's (offset in 8-byte units, more, id).
    pub v6_frag: (u16, bool, u32),
    /// Destination MAC (default: the director's).
    pub dst_mac: [u8; 6],
    pub payload: usize,
}

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;

pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Pkt {
    Pkt {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        proto: 6,
        sport,
        dport,
        tcp_flags: flags,
        vlan: None,
        ip_options: 0,
        frag: 0,
        v6_next: None,
        v6_chain: Vec::new(),
        v6_frag: (0, false, 0),
        dst_mac: DIRECTOR_MAC,
        payload: 10,
    }
}

pub fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Pkt {
    Pkt {
        proto: 17,
        tcp_flags: 0,
        ..tcp(src, sport, dst, dport, 0)
    }
}

impl Pkt {
    pub fn frame(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&self.sport.to_be_bytes());
        l4.extend_from_slice(&self.dport.to_be_bytes());
        if self.proto == 6 {
            l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]); // seq, ack
            l4.push(5 << 4); // data offset
            l4.push(self.tcp_flags);
            l4.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, csum, urg
        } else {
            l4.extend_from_slice(&((8 + self.payload) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        l4.extend(std::iter::repeat_n(0xab, self.payload));

        let mut f = Vec::new();
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&CLIENT_SIDE_MAC);
        if let Some(v) = self.vlan {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&v.to_be_bytes());
        }
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let ihl = 5 + self.ip_options / 4;
                let total = ihl * 4 + l4.len();
                f.push(0x40 | ihl as u8);
                f.push(0);
                f.extend_from_slice(&(total as u16).to_be_bytes());
                f.extend_from_slice(&[0x12, 0x34]);
                f.extend_from_slice(&self.frag.to_be_bytes());
                f.push(64);
                f.push(self.proto);
                f.extend_from_slice(&[0, 0]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                // NOP options
                f.extend(std::iter::repeat_n(1u8, self.ip_options));
                // A valid header checksum, so the kernel's own stack accepts
                // the frame too (the benchmark's Linux-routing baseline).
                let l3 = f.len() - ihl * 4;
                let mut sum: u32 = 0;
                for c in f[l3..].chunks(2) {
                    sum += u16::from_be_bytes([c[0], c[1]]) as u32;
                }
                while sum >> 16 != 0 {
                    sum = (sum & 0xffff) + (sum >> 16);
                }
                let csum = !(sum as u16);
                f[l3 + 10..l3 + 12].copy_from_slice(&csum.to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                let mut chain = self.v6_chain.clone();
                if let Some(n) = self.v6_next {
                    chain.insert(0, n);
                }
                let plen = l4.len() + 8 * chain.len();
                f.extend_from_slice(&(plen as u16).to_be_bytes());
                f.push(chain.first().copied().unwrap_or(self.proto));
                f.push(64);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                for (i, h) in chain.iter().enumerate() {
                    let next = chain.get(i + 1).copied().unwrap_or(self.proto);
                    if *h == 44 {
                        let (off, more, id) = self.v6_frag;
                        let fo = (off << 3) | more as u16;
                        f.extend_from_slice(&[next, 0]);
                        f.extend_from_slice(&fo.to_be_bytes());
                        f.extend_from_slice(&id.to_be_bytes());
                    } else {
                        // 8 bytes: next, length 0, PadN.
                        f.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
                    }
                }
            }
            _ => panic!("mixed families"),
        }
        f.extend_from_slice(&l4);
        f
    }
}

/// The table a YAML configuration declares (valid by construction).
pub fn table(yaml: &str) -> Table {
    Config::parse(yaml, "test.yaml")
        .unwrap()
        .table("test.yaml")
        .unwrap()
}

/// Opens an established connection (SYN, ACK) from 203.0.113.10:`sport`;
/// returns the last byte of the chosen real server's MAC (its number).
pub fn open(t: &mut TestDirector, vip: &str, sport: u16, dport: u16) -> u8 {
    let (a, out) = t.run(&tcp("203.0.113.10", sport, vip, dport, SYN).frame());
    assert_eq!(
        a, XDP_TX,
        "connection {sport} -> {vip}:{dport} not forwarded"
    );
    t.run(&tcp("203.0.113.10", sport, vip, dport, ACK).frame());
    out[5]
}

/// An ICMP (IPv4) or ICMPv6 error of `ty`/`code` from `router` to the VIP
/// about the flow `client:cport -> vip:vport` (quoting the server's reply:
/// from `vip:vport` to `client:cport`).
pub fn icmp_error(
    router: &str,
    vip: &str,
    vport: u16,
    client: &str,
    cport: u16,
    ty: u8,
    code: u8,
) -> Vec<u8> {
    let quoted = tcp(vip, vport, client, cport, SYN | ACK).frame();
    let (router, vip): (IpAddr, IpAddr) = (router.parse().unwrap(), vip.parse().unwrap());
    let v6 = vip.is_ipv6();
    // The quoted IP header and the first 8 bytes of TCP.
    let ip_start = 14;
    let hlen = if v6 { 40 } else { 20 };
    let quote = &quoted[ip_start..ip_start + hlen + 8];
    let mut icmp = vec![ty, code, 0, 0, 0, 0, 0x05, 0xdc]; // (MTU 1500 for frag-needed)
    icmp.extend_from_slice(quote);
    let mut f = Vec::new();
    f.extend_from_slice(&DIRECTOR_MAC);
    f.extend_from_slice(&CLIENT_SIDE_MAC);
    match (router, vip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let total = 20 + icmp.len();
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&(total as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
            f.extend_from_slice(&[58, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed families"),
    }
    f.extend_from_slice(&icmp);
    f
}
