//! `cargo xtask bench [--quick]`: the director's costs measured side by side
//! with reference programs in one run (these machines are shared and noisy:
//! medians of several rounds, ratios to references from the same run).
//!
//! - per-packet cost of the XDP program under BPF_PROG_TEST_RUN, hot (one
//!   frame repeated) and cold (maps populated at scale, a different flow on
//!   every call), against the "floor" and "minimal LB" reference programs;
//! - control plane: applying 1,000 services x 100 real servers, changing one
//!   weight, Maglev build time and disruption;
//! - memory: connection-table bytes per entry, userspace state.
//!
//! Writes bench/results/<date>.json and docs/benchmarks.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use aya::{
    maps::{HashMap as BpfHashMap, MapData},
    programs::{TestRun, TestRunOptions, Xdp},
};
use common::*;
use lb_userspace::{
    config::Limits,
    dataplane::Dataplane,
    director::Director,
    model::{Forward, Protocol, RealSpec, SchedFlags, Scheduler, ServiceAddr, ServiceSpec, Table},
    sched::{build_ring, Candidate},
};
use serde_json::{json, Value};

struct Opts {
    quick: bool,
    out_dir: PathBuf,
    doc: PathBuf,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// One BPF_PROG_TEST_RUN: kernel-measured ns per run.
fn run_ns(prog: &Xdp, frame: &[u8], repeat: u32) -> f64 {
    let mut out = vec![0u8; frame.len() + 64];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    r.duration.as_nanos() as f64
}

fn prog<'a>(dp: &'a mut Dataplane, name: &str) -> &'a mut Xdp {
    let p: &mut Xdp = dp
        .ebpf_mut()
        .program_mut(name)
        .unwrap_or_else(|| panic!("program {name}"))
        .try_into()
        .unwrap();
    if p.fd().is_err() {
        p.load().unwrap();
    }
    p
}

struct Xorshift(u64);
impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn svc(proto: Protocol, addr: &str, port: u16, sched: Scheduler) -> ServiceSpec {
    ServiceSpec {
        addr: ServiceAddr {
            fwmark: 0,
            protocol: proto,
            address: addr.parse().unwrap(),
            port,
        },
        scheduler: sched,
        flags: SchedFlags::default(),
        persistent: None,
        netmask: None,
        one_packet: false,
    }
}

fn real(addr: IpAddr, port: u16, weight: u32) -> RealSpec {
    RealSpec {
        u_threshold: 0,
        l_threshold: 0,
        address: addr,
        port,
        weight,
        forward: Forward::Route,
    }
}

/// `bench_minimal_lb`'s key: IPv4 destination, port (network order), pad.
fn bench_key(addr: [u8; 4], port: u16) -> [u8; 8] {
    let p = port.to_be_bytes();
    [addr[0], addr[1], addr[2], addr[3], p[0], p[1], 0, 0]
}

fn load(dir: &PinDir, limits: &Limits) -> Director {
    let mut dp = Dataplane::load(&dir.0, limits).expect("load");
    dp.set_director_mac(DIRECTOR_MAC).unwrap();
    Director::recover(dp).unwrap()
}

fn fake_macs(addrs: impl Iterator<Item = IpAddr>) -> Vec<(IpAddr, Option<[u8; 6]>)> {
    addrs
        .enumerate()
        .map(|(i, a)| (a, Some([0x02, 0, 0, 1, (i >> 8) as u8, i as u8])))
        .collect()
}

fn rows_for(
    group: &str,
    cases: &[(&str, f64, &str)],
    floor: f64,
    minimal: f64,
    rows: &mut Vec<Value>,
) {
    for (name, ns, note) in cases {
        rows.push(json!({
            "group": group,
            "case": name,
            "ns_per_packet": (ns * 10.0).round() / 10.0,
            "x_floor": ((ns / floor) * 100.0).round() / 100.0,
            "x_minimal_lb": ((ns / minimal) * 100.0).round() / 100.0,
            "note": note,
        }));
    }
}

/// Hot: one frame (or one flow) repeated, caches warm.
fn hot(o: &Opts, rows: &mut Vec<Value>) -> Result<()> {
    let rounds = if o.quick { 3 } else { 7 };
    let repeat = if o.quick { 200_000 } else { 1_000_000 };
    let calls = if o.quick { 3_000 } else { 20_000 };
    let dir = PinDir::new("bench-hot");
    let limits = Limits {
        max_services: 32,
        max_reals: 64,
        max_conns: 1 << 20,
    };
    let mut d = load(&dir, &limits);
    let mut t = Table::default();
    let reals: Vec<IpAddr> = (11..14)
        .map(|n| format!("192.0.2.{n}").parse().unwrap())
        .collect();
    let v6: IpAddr = "2001:db8::11".parse().unwrap();
    for (port, sched) in [
        (80, Scheduler::Rr),
        (81, Scheduler::Wrr),
        (82, Scheduler::Mh),
        (84, Scheduler::Wlc),
    ]
    .into_iter()
    .chain(OTHER_SCHEDS.iter().map(|(p, s, _)| (*p, *s)))
    {
        let s = svc(Protocol::Tcp, "192.0.2.100", port, sched);
        t.add_service(s.clone()).unwrap();
        for (i, a) in reals.iter().enumerate() {
            t.add_real(&s.addr, real(*a, port, 1 + i as u32)).unwrap();
        }
    }
    let mut ps = svc(Protocol::Tcp, "192.0.2.100", 83, Scheduler::Rr);
    ps.persistent = Some(360);
    t.add_service(ps.clone()).unwrap();
    for a in &reals {
        t.add_real(&ps.addr, real(*a, 83, 1)).unwrap();
    }
    let u = svc(Protocol::Udp, "192.0.2.100", 53, Scheduler::Mh);
    t.add_service(u.clone()).unwrap();
    t.add_real(&u.addr, real(reals[0], 53, 1)).unwrap();
    let s6 = svc(Protocol::Tcp, "2001:db8::100", 443, Scheduler::Rr);
    t.add_service(s6.clone()).unwrap();
    t.add_real(&s6.addr, real(v6, 443, 1)).unwrap();
    d.update_macs(&fake_macs(reals.iter().copied().chain([v6])))?;
    d.apply(t)?;
    {
        let map =
            d.dp.ebpf_mut()
                .map_mut("BENCH_BACKENDS")
                .context("BENCH_BACKENDS")?;
        let mut m: BpfHashMap<&mut MapData, [u8; 8], [u8; 8]> = BpfHashMap::try_from(map)?;
        m.insert(
            bench_key([192, 0, 2, 100], 80),
            [2, 0, 0, 0, 0x10, 11, 0, 0],
            0,
        )?;
    }

    let est = tcp("203.0.113.10", 40000, "192.0.2.100", 80, ACK).frame();
    let est_udp = udp("203.0.113.10", 40000, "192.0.2.100", 53).frame();
    let est_v6 = tcp("2001:db8:ffff::10", 40000, "2001:db8::100", 443, ACK).frame();
    let non_vip = tcp("203.0.113.10", 40000, "192.0.2.2", 22, ACK).frame();
    // Prime the connection entries.
    for f in [&est, &est_udp, &est_v6] {
        d.dp.test_run(f)?;
    }
    let mut rep = |name: &str, f: &[u8]| -> f64 {
        let p = prog(&mut d.dp, name);
        median((0..rounds).map(|_| run_ns(p, f, repeat)).collect())
    };
    let floor = rep("bench_floor", &est);
    let minimal = rep("bench_minimal_lb", &est);
    let lb_est = rep("lb", &est);
    let lb_udp = rep("lb", &est_udp);
    let lb_v6 = rep("lb", &est_v6);
    let lb_pass = rep("lb", &non_vip);
    rows_for(
        "hot, repeat in kernel",
        &[
            (
                "floor (reference)",
                floor,
                "bounds check, swap MACs, XDP_TX",
            ),
            (
                "minimal LB (reference)",
                minimal,
                "floor + one hash lookup by dst addr:port",
            ),
            ("established TCP flow", lb_est, "connection entry hit"),
            ("established UDP flow", lb_udp, "connection entry hit"),
            ("established IPv6 TCP flow", lb_v6, "connection entry hit"),
            (
                "non-VIP packet (XDP_PASS)",
                lb_pass,
                "service miss x2 (port, port 0)",
            ),
        ],
        floor,
        minimal,
        rows,
    );

    // New connections: every call a distinct tuple, repeat = 1.
    let mut one = |name: &str, frames: &mut dyn FnMut(u32) -> Vec<u8>| -> f64 {
        let p = prog(&mut d.dp, name);
        median((0..calls).map(|i| run_ns(p, &frames(i), 1)).collect())
    };
    let floor1 = one("bench_floor", &mut |_| est.clone());
    let minimal1 = one("bench_minimal_lb", &mut |_| est.clone());
    let est1 = one("lb", &mut |_| est.clone());
    let mut cases = vec![
        (
            "floor, repeat 1 (per-call overhead)",
            floor1,
            "kernel timer overhead included",
        ),
        ("minimal LB, repeat 1 (reference)", minimal1, ""),
        ("established TCP flow, repeat 1", est1, ""),
    ];
    let mut new_conn = Vec::new();
    let scheds = [
        (80u16, "new TCP connection (SYN), rr"),
        (81, "new TCP connection (SYN), wrr"),
        (82, "new TCP connection (SYN), mh"),
        (84, "new TCP connection (SYN), wlc (3 real servers)"),
    ]
    .into_iter()
    .chain(OTHER_SCHEDS.iter().map(|(p, _, n)| (*p, *n)));
    for (b, (port, name)) in (1u32..).zip(scheds) {
        let ns = one("lb", &mut |i| {
            let src = format!("198.51.100.{}", (i / 50_000) + b * 3);
            tcp(&src, 1024 + (i % 50_000) as u16, "192.0.2.100", port, SYN).frame()
        });
        new_conn.push((name, ns));
    }
    for (n, ns) in &new_conn {
        cases.push((n, *ns, "distinct tuple per call"));
    }
    // Persistence: one client, a new connection per call, each following
    // the template the first one created.
    let ns = one("lb", &mut |i| {
        tcp(
            "203.0.113.99",
            1024 + (i % 60_000) as u16,
            "192.0.2.100",
            83,
            SYN,
        )
        .frame()
    });
    cases.push((
        "new connection, persistence template hit",
        ns,
        "template lookup + entry insert",
    ));
    rows_for("hot, repeat 1 per call", &cases, floor1, minimal1, rows);
    Ok(())
}

/// The other schedulers' new-connection cost (3 real servers each).
const OTHER_SCHEDS: [(u16, Scheduler, &str); 10] = [
    (85, Scheduler::Lc, "new TCP connection (SYN), lc"),
    (86, Scheduler::Sed, "new TCP connection (SYN), sed"),
    (87, Scheduler::Nq, "new TCP connection (SYN), nq"),
    (88, Scheduler::Fo, "new TCP connection (SYN), fo"),
    (89, Scheduler::Ovf, "new TCP connection (SYN), ovf"),
    (90, Scheduler::Sh, "new TCP connection (SYN), sh"),
    (91, Scheduler::Dh, "new TCP connection (SYN), dh"),
    (92, Scheduler::Twos, "new TCP connection (SYN), twos"),
    (
        93,
        Scheduler::Lblc,
        "new TCP connection (SYN), lblc (two tail calls)",
    ),
    (
        94,
        Scheduler::Lblcr,
        "new TCP connection (SYN), lblcr (two or three tail calls)",
    ),
];

/// Cold: maps populated at scale, a different flow on every call.
fn cold(o: &Opts, rows: &mut Vec<Value>, memory: &mut BTreeMap<String, Value>) -> Result<()> {
    let n_conns: u32 = if o.quick { 100_000 } else { 1_000_000 };
    let calls = if o.quick { 5_000 } else { 50_000 };
    let dir = PinDir::new("bench-cold");
    let limits = Limits {
        max_services: 1024,
        max_reals: 16384,
        max_conns: 1 << 20,
    };
    let mut d = load(&dir, &limits);
    let mut t = Table::default();
    let real_addrs: Vec<IpAddr> = (1..=200)
        .map(|n| format!("192.0.2.{}", n).parse().unwrap())
        .collect();
    let mut vips = Vec::new();
    for i in 0..1000u32 {
        let vip = format!("198.51.100.{}", 1 + i / 4);
        let port = 80 + (i % 4) as u16;
        let sched = [Scheduler::Rr, Scheduler::Wrr, Scheduler::Mh][i as usize % 3];
        let s = svc(Protocol::Tcp, &vip, port, sched);
        t.add_service(s.clone()).unwrap();
        for j in 0..10 {
            let a = real_addrs[((i * 10 + j) % 200) as usize];
            t.add_real(&s.addr, real(a, port, 1 + j)).unwrap();
        }
        vips.push((vip, port));
    }
    d.update_macs(&fake_macs(real_addrs.iter().copied()))?;
    d.apply(t)?;
    {
        let map = d.dp.ebpf_mut().map_mut("BENCH_BACKENDS").context("map")?;
        let mut m: BpfHashMap<&mut MapData, [u8; 8], [u8; 8]> = BpfHashMap::try_from(map)?;
        for (vip, port) in vips.iter().take(1000) {
            let a: std::net::Ipv4Addr = vip.parse().unwrap();
            m.insert(bench_key(a.octets(), *port), [2, 0, 0, 0, 1, 1, 0, 0], 0)
                .ok();
        }
    }
    // Populate the connection table through the data plane itself.
    let flow = |k: u32| {
        let src = format!("203.0.113.{}", k / 4096 % 256);
        let (vip, port) = &vips[(k % 1000) as usize];
        (src, 1024 + (k % 4096) as u16, vip.clone(), *port)
    };
    // Populate from every CPU in turn, as RSS spreads flows over queues (the
    // connection table keeps per-CPU LRU lists).
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let online = num_cpus_online();
    let t0 = Instant::now();
    {
        let p = prog(&mut d.dp, "lb");
        for k in 0..n_conns {
            if k % 4096 == 0 {
                pin_to_cpu(((k / 4096) as usize) % online);
            }
            let (s, sp, v, dp) = flow(k);
            run_ns(p, &tcp(&s, sp, &v, dp, SYN).frame(), 1);
        }
    }
    pin_to_cpu(0);
    let _ = cpus;
    let populate = t0.elapsed();
    let present = d.dp.conns.keys().filter(|k| k.is_ok()).count();
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let picks: Vec<u32> = (0..calls)
        .map(|_| (rng.next() % n_conns as u64) as u32)
        .collect();
    let frames: Vec<Vec<u8>> = picks
        .iter()
        .map(|k| {
            let (s, sp, v, dp) = flow(*k);
            tcp(&s, sp, &v, dp, ACK).frame()
        })
        .collect();
    let mut measure = |name: &str| {
        let p = prog(&mut d.dp, name);
        median(frames.iter().map(|f| run_ns(p, f, 1)).collect())
    };
    let floor = measure("bench_floor");
    let minimal = measure("bench_minimal_lb");
    let lb = measure("lb");
    let label = format!("established TCP flow, {n_conns} entries, random flow per call");
    rows_for(
        &format!("cold: 1,000 services, 10,000 real servers, {n_conns} connections"),
        &[
            ("floor, repeat 1 (per-call overhead)", floor, ""),
            ("minimal LB, 1,000 VIPs, repeat 1", minimal, ""),
            (&label, lb, "target: < 400 ns median at 1M"),
        ],
        floor,
        minimal,
        rows,
    );
    memory.insert("cold_conn_entries_present".into(), json!(present));
    memory.insert(
        "populate_conns_via_xdp_s".into(),
        json!((populate.as_secs_f64() * 100.0).round() / 100.0),
    );
    Ok(())
}

fn num_cpus_online() -> usize {
    // The benchmark pins itself to CPU 0 first, so ask the system, not the mask.
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        1
    }
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: plain libc calls on a zeroed cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// memlock of the map named `name` held by this process (from fdinfo).
fn map_memlock(max_entries: u32, map_type: u32) -> Option<u64> {
    for e in std::fs::read_dir("/proc/self/fdinfo").ok()?.flatten() {
        let s = std::fs::read_to_string(e.path()).unwrap_or_default();
        let field = |k: &str| {
            s.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        };
        if field("map_type:") == Some(map_type as u64)
            && field("max_entries:") == Some(max_entries as u64)
        {
            return field("memlock:");
        }
    }
    None
}

fn memory(o: &Opts, memory: &mut BTreeMap<String, Value>) -> Result<()> {
    const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
    let sizes: &[u32] = if o.quick {
        &[1 << 20]
    } else {
        &[1 << 20, 10_000_000]
    };
    for &n in sizes {
        let dir = PinDir::new("bench-mem");
        let limits = Limits {
            max_services: 16,
            max_reals: 64,
            max_conns: n,
        };
        let d = load(&dir, &limits);
        let bytes = map_memlock(n, BPF_MAP_TYPE_LRU_HASH).context("CONNS memlock")?;
        memory.insert(
            format!("conn_table_{n}_entries"),
            json!({"bytes": bytes, "bytes_per_entry": bytes / n as u64}),
        );
        drop(d);
    }
    Ok(())
}

fn control_plane(o: &Opts, rows: &mut BTreeMap<String, Value>) -> Result<()> {
    let n_svc: u32 = if o.quick { 100 } else { 1000 };
    let dir = PinDir::new("bench-cp");
    let limits = Limits {
        max_services: 1024,
        max_reals: 131_072,
        max_conns: 1024,
    };
    let mut d = load(&dir, &limits);
    let real_addrs: Vec<IpAddr> = (1..=100)
        .map(|n| format!("192.0.2.{n}").parse().unwrap())
        .collect();
    d.update_macs(&fake_macs(real_addrs.iter().copied()))?;
    let mut t = Table::default();
    for i in 0..n_svc {
        let vip = format!("198.51.100.{}", 1 + i / 4);
        let port = 80 + (i % 4) as u16;
        let sched = [Scheduler::Rr, Scheduler::Wrr, Scheduler::Mh][i as usize % 3];
        let s = svc(Protocol::Tcp, &vip, port, sched);
        t.add_service(s.clone()).unwrap();
        for (j, a) in real_addrs.iter().enumerate() {
            t.add_real(&s.addr, real(*a, port, 1 + j as u32 % 5))
                .unwrap();
        }
    }
    let t0 = Instant::now();
    d.apply(t.clone())?;
    let apply = t0.elapsed();
    let first = *t.services.keys().next().unwrap();
    let mut times = Vec::new();
    for w in 0..5u32 {
        let mut t2 = d.table.clone();
        t2.edit_real(&first, real(real_addrs[0], first.port, 10 + w))
            .unwrap();
        let t0 = Instant::now();
        d.apply(t2)?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    rows.insert(
        format!("apply_{n_svc}x100_ms"),
        json!((apply.as_secs_f64() * 1e4).round() / 10.0),
    );
    rows.insert(
        "change_one_weight_ms".into(),
        json!((median(times) * 100.0).round() / 100.0),
    );

    // Maglev build time and disruption.
    for n in [100usize, 1000, 10_000] {
        let c: Vec<Candidate> = (0..n)
            .map(|i| Candidate {
                id: i as u32,
                name: format!("10.{}.{}.{}:80", i >> 16, (i >> 8) & 255, i & 255),
                weight: 1,
            })
            .collect();
        let mut ts = Vec::new();
        let mut ring = Vec::new();
        for _ in 0..if o.quick { 3 } else { 7 } {
            let t0 = Instant::now();
            ring = build_ring(Scheduler::Mh, &c);
            ts.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        let mut fewer = c.clone();
        fewer.remove(n / 2);
        let after = build_ring(Scheduler::Mh, &fewer);
        let moved = ring.iter().zip(&after).filter(|(a, b)| a != b).count();
        rows.insert(
            format!("maglev_{n}_reals"),
            json!({
                "build_ms": (median(ts) * 1000.0).round() / 1000.0,
                "table_size": ring.len(),
                "moved_fraction_on_one_removal": (moved as f64 / ring.len() as f64 * 1e4).round() / 1e4,
                "ideal_fraction": (1.0 / n as f64 * 1e4).round() / 1e4,
            }),
        );
    }
    Ok(())
}

/// Runs `f` with the calling thread in network namespace `ns`.
fn in_netns<T>(ns: &str, f: impl FnOnce() -> T) -> Result<T> {
    use std::os::fd::AsRawFd;
    let orig = std::fs::File::open("/proc/thread-self/ns/net")?;
    let target = std::fs::File::open(format!("/run/netns/{ns}"))?;
    // SAFETY: valid namespace fds.
    if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {ns}: {}", std::io::Error::last_os_error());
    }
    let r = f();
    // SAFETY: as above.
    if unsafe { libc::setns(orig.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns back: {}", std::io::Error::last_os_error());
    }
    Ok(r)
}

fn sh(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Deletes the bench's namespaces on drop.
struct NetnsPair(String, String);
impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.0, &self.1] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
    }
}

fn link_mac(ns: &str, dev: &str) -> Result<[u8; 6]> {
    let s = sh(&["ip", "-n", ns, "-o", "link", "show", dev])?;
    let m = s
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .context("no MAC")?;
    let v: Vec<u8> = m
        .split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    v.try_into().map_err(|_| anyhow::anyhow!("bad MAC {m}"))
}

/// Packets per second through a director namespace over veth, native XDP:
/// the lb program (XDP_TX back to the sender) against plain Linux routing
/// in the same namespace (the no-LB baseline). The generator is
/// BPF_PROG_TEST_RUN in live-frames mode; the sink is an XDP program that
/// counts and drops on the generator's veth.
fn network_pps(o: &Opts, rows: &mut BTreeMap<String, Value>) -> Result<()> {
    let frames: u32 = if o.quick { 300_000 } else { 2_000_000 };
    let rounds = if o.quick { 1 } else { 3 };
    let pid = std::process::id();
    let pair = NetnsPair(format!("lbbench-gen-{pid}"), format!("lbbench-dir-{pid}"));
    let (gen, dir) = (pair.0.clone(), pair.1.clone());
    for ns in [&gen, &dir] {
        sh(&["ip", "netns", "add", ns])?;
    }
    sh(&[
        "ip", "-n", &gen, "link", "add", "gen0", "type", "veth", "peer", "name", "dir0", "netns",
        &dir,
    ])?;
    sh(&[
        "ip",
        "-n",
        &gen,
        "addr",
        "add",
        "198.51.100.1/24",
        "dev",
        "gen0",
    ])?;
    sh(&[
        "ip",
        "-n",
        &dir,
        "addr",
        "add",
        "198.51.100.2/24",
        "dev",
        "dir0",
    ])?;
    for (ns, dev) in [(&gen, "gen0"), (&dir, "dir0")] {
        sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
    }
    let gen_mac = link_mac(&gen, "gen0")?;
    let dir_mac = link_mac(&dir, "dir0")?;

    // The sink and the generator live in the generator's namespace.
    let sink_dir = PinDir::new("bench-sink");
    let small = Limits {
        max_services: 4,
        max_reals: 4,
        max_conns: 1024,
    };
    let mut gen_dp = Dataplane::load(&sink_dir.0, &small)?;
    let gen_ifindex: u32 = in_netns(&gen, || -> Result<u32> {
        let p = prog(&mut gen_dp, "bench_sink");
        p.attach("gen0", aya::programs::XdpMode::Driver)?;
        let c = std::ffi::CString::new("gen0")?;
        // SAFETY: valid C string.
        Ok(unsafe { libc::if_nametoindex(c.as_ptr()) })
    })??;
    // The frame leaves gen0 through bench_gen (which swaps the MACs).
    let mut frame = udp("198.51.100.1", 1234, "192.0.2.100", 9).frame();
    frame[0..6].copy_from_slice(&gen_mac);
    frame[6..12].copy_from_slice(&dir_mac);
    frame.resize(60, 0);
    let sink_count = |dp: &mut Dataplane| -> u64 {
        let m = dp.ebpf_mut().map("BENCH_SINK_COUNT").expect("sink map");
        let a: aya::maps::PerCpuArray<&MapData, u64> = aya::maps::PerCpuArray::try_from(m).unwrap();
        a.get(&0, 0).map(|v| v.iter().sum()).unwrap_or(0)
    };
    let run = |gen_dp: &mut Dataplane| -> Result<(f64, f64)> {
        let mut sent = Vec::new();
        let mut got = Vec::new();
        for _ in 0..rounds {
            let before = sink_count(gen_dp);
            let t0 = Instant::now();
            in_netns(&gen, || -> Result<()> {
                let p = prog(gen_dp, "bench_gen");
                let mut ctx = [0u8; 24];
                ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
                ctx[12..16].copy_from_slice(&gen_ifindex.to_ne_bytes());
                p.test_run(TestRunOptions {
                    data_in: Some(&frame),
                    ctx_in: Some(&ctx),
                    repeat: frames,
                    attrs: aya::programs::TestRunAttrs::new().xdp_live_frames(64),
                    ..Default::default()
                })?;
                Ok(())
            })??;
            std::thread::sleep(Duration::from_millis(200));
            let secs = t0.elapsed().as_secs_f64() - 0.2;
            let n = sink_count(gen_dp) - before;
            sent.push(frames as f64 / secs);
            got.push(n as f64 / secs);
        }
        Ok((median(sent), median(got)))
    };

    // 1. The director: lb on dir0, one UDP service whose real server is gen0.
    let lb_dir = PinDir::new("bench-pps");
    let (lb_sent, lb_got, delivered_lb) = {
        let mut d = load(&lb_dir, &small);
        d.dp.set_director_mac(dir_mac)?;
        let mut t = Table::default();
        let s = svc(Protocol::Udp, "192.0.2.100", 9, Scheduler::Mh);
        t.add_service(s.clone()).unwrap();
        t.add_real(&s.addr, real("198.51.100.1".parse().unwrap(), 9, 1))
            .unwrap();
        d.update_macs(&[("198.51.100.1".parse().unwrap(), Some(gen_mac))])?;
        d.apply(t)?;
        in_netns(&dir, || {
            d.dp.attach("dir0", lb_userspace::config::XdpModeCfg::Native)
        })??;
        let (sent, got) = run(&mut gen_dp)?;
        let fwd = Dataplane::sum_stats(&d.dp.svc_stats, 0).packets;
        drop(d);
        let _ = std::fs::remove_dir_all(&lb_dir.0);
        (sent, got, fwd)
    };
    // 2. The no-LB baseline: Linux forwarding in the same namespace (an
    // XDP_PASS program on dir0, which a veth needs to receive XDP_TX frames).
    in_netns(&dir, || -> Result<()> {
        lb_userspace::dataplane::attach_pass("dir0", &lb_dir.0.join("pass_link"))?;
        Ok(())
    })??;
    sh(&[
        "ip",
        "netns",
        "exec",
        &dir,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ])?;
    sh(&[
        "ip",
        "netns",
        "exec",
        &dir,
        "sysctl",
        "-qw",
        "net.ipv4.conf.all.send_redirects=0",
    ])?;
    sh(&[
        "ip",
        "netns",
        "exec",
        &dir,
        "sysctl",
        "-qw",
        "net.ipv4.conf.dir0.send_redirects=0",
    ])?;
    sh(&[
        "ip",
        "-n",
        &dir,
        "route",
        "add",
        "192.0.2.100/32",
        "via",
        "198.51.100.1",
        "dev",
        "dir0",
    ])?;
    let gm = gen_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    sh(&[
        "ip",
        "-n",
        &dir,
        "neigh",
        "replace",
        "198.51.100.1",
        "lladdr",
        &gm,
        "dev",
        "dir0",
        "nud",
        "permanent",
    ])?;
    let (base_sent, base_got) = run(&mut gen_dp)?;
    if std::env::var_os("LB_BENCH_DEBUG").is_some() {
        eprintln!("{}", sh(&["ip", "-n", &dir, "-s", "link", "show", "dir0"])?);
        eprintln!("{}", sh(&["ip", "-n", &gen, "-s", "link", "show", "gen0"])?);
        eprintln!("{}", sh(&["ip", "netns", "exec", &dir, "nstat", "-az"])?);
        eprintln!(
            "{}",
            sh(&["ip", "netns", "exec", &dir, "ethtool", "-S", "dir0"])?
        );
    }
    rows.insert(
        "network_pps_veth_native_xdp".into(),
        json!({
            "frame_bytes": frame.len(),
            "flow": "one UDP flow (established path)",
            "generator": "BPF_PROG_TEST_RUN live frames, batch 64",
            "director_lb_pps": lb_got.round(),
            "director_lb_offered_pps": lb_sent.round(),
            "director_lb_forwarded_by_xdp": delivered_lb,
            "linux_routing_pps": base_got.round(),
            "linux_routing_offered_pps": base_sent.round(),
            "ratio_lb_to_linux_routing": ((lb_got / base_got) * 100.0).round() / 100.0,
            "xdp_mode": "native (veth)",
        }),
    );
    drop(gen_dp);
    drop(pair);
    Ok(())
}

/// CPU time of this process (user + system), in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// 5,000 TCP checks at 1 s interval against loopback listeners, on one
/// tokio runtime: CPU used per second of wall time.
fn health_checker_cpu(o: &Opts, rows: &mut BTreeMap<String, Value>) -> Result<()> {
    use lb_userspace::health::{self, CheckKind, CheckSpec};
    let checks = if o.quick { 1000 } else { 5000 };
    let seconds = if o.quick { 3.0 } else { 10.0 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (ok, total, cpu) = rt.block_on(async {
        // 50 listeners on 127.0.0.1, each accepting and dropping connections.
        let mut ports = Vec::new();
        for _ in 0..50 {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            ports.push(l.local_addr().unwrap().port());
            tokio::spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    drop(s);
                }
            });
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(checks);
        let mut spec = CheckSpec::new(CheckKind::Tcp);
        spec.interval = 1.0;
        spec.fall = 1;
        let mut handles = Vec::new();
        for i in 0..checks {
            let mut sp = spec.clone();
            sp.port = Some(ports[i % ports.len()]);
            let svc = ServiceAddr {
                fwmark: 0,
                protocol: Protocol::Tcp,
                address: "192.0.2.100".parse().unwrap(),
                port: (i % 60000) as u16 + 1,
            };
            handles.push(health::spawn(
                sp,
                svc,
                "127.0.0.1".parse().unwrap(),
                i as f64 / checks as f64,
                tx.clone(),
            ));
        }
        // Warm-up (the first interval spreads the checks), then measure.
        tokio::time::sleep(Duration::from_secs_f64(1.2)).await;
        let c0 = cpu_seconds();
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        let cpu = cpu_seconds() - c0;
        let mut downs = 0;
        while let Ok(ev) = rx.try_recv() {
            if !ev.up {
                downs += 1;
            }
        }
        for h in handles {
            h.abort();
        }
        (checks - downs, checks, cpu)
    });
    rows.insert(
        format!("health_checker_{total}_tcp_checks_1s"),
        json!({
            "cpu_cores_used": ((cpu / seconds) * 1000.0).round() / 1000.0,
            "checks_healthy": ok,
            "measured_seconds": seconds,
        }),
    );
    Ok(())
}

fn markdown(result: &Value) -> String {
    let mut s = String::new();
    s.push_str("# Benchmarks\n\nGenerated by `cargo xtask bench");
    if result["quick"].as_bool() == Some(true) {
        s.push_str(" --quick");
    }
    s.push_str(&format!(
        "` on {} (kernel {}, {} CPUs). Raw data: `bench/results/{}.json`.\n\n",
        result["date"].as_str().unwrap_or(""),
        result["kernel"].as_str().unwrap_or(""),
        result["cpus"],
        result["date"].as_str().unwrap_or("")
    ));
    s.push_str("Per-packet costs come from BPF_PROG_TEST_RUN (kernel-measured, median of rounds or calls), side by side with two reference programs in the same run: the *floor* (bounds check, swap MACs, XDP_TX) and the *minimal LB* (floor + one hash lookup by destination address and port + MAC rewrite). Ratios are to the reference measured the same way (repeat in kernel, or one packet per call).\n\n");
    s.push_str("| group | case | ns/packet | x floor | x minimal LB | note |\n|---|---|---:|---:|---:|---|\n");
    for r in result["per_packet"].as_array().unwrap() {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r["group"].as_str().unwrap_or(""),
            r["case"].as_str().unwrap_or(""),
            r["ns_per_packet"],
            r["x_floor"],
            r["x_minimal_lb"],
            r["note"].as_str().unwrap_or("")
        ));
    }
    s.push_str("\n## Through the lab\n\nA real client (wrk, iperf3) in the lab through the XDP director, against HAProxy in TCP mode on the same director namespace balancing the same nginx real servers, in the same run. Everything (client, router, bridge, director, real servers) shares the machine's 2 CPUs, so these are relative figures.\n\n```json\n");
    s.push_str(&serde_json::to_string_pretty(&result["through_the_lab"]).unwrap());
    s.push_str("\n```\n\n## Control plane and memory\n\n```json\n");
    s.push_str(
        &serde_json::to_string_pretty(&json!({
            "control_plane": result["control_plane"],
            "memory": result["memory"],
        }))
        .unwrap(),
    );
    s.push_str("\n```\n\n## Not measured here\n\n");
    for n in result["not_measured"].as_array().unwrap() {
        s.push_str(&format!("- {}\n", n.as_str().unwrap_or("")));
    }
    s
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out_dir = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("bench/results"));
    let o = Opts {
        quick,
        out_dir,
        doc: root.join("docs/benchmarks.md"),
    };
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark needs root (BPF)");
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    // One CPU for the whole run: steadier figures, deterministic cursors.
    pin_to_cpu0();
    let started = Instant::now();
    let mut per_packet = Vec::new();
    let mut mem = BTreeMap::new();
    let mut cp = BTreeMap::new();
    eprintln!("bench: hot per-packet cases");
    hot(&o, &mut per_packet)?;
    eprintln!("bench: cold per-packet cases (populating the connection table)");
    cold(&o, &mut per_packet, &mut mem)?;
    eprintln!("bench: memory");
    memory(&o, &mut mem)?;
    eprintln!("bench: control plane");
    control_plane(&o, &mut cp)?;
    eprintln!("bench: packets per second over veth");
    network_pps(&o, &mut cp)?;
    eprintln!("bench: health checker");
    health_checker_cpu(&o, &mut cp)?;
    let date = String::from_utf8(
        std::process::Command::new("date")
            .arg("+%Y-%m-%d")
            .output()?
            .stdout,
    )?
    .trim()
    .to_string();
    let kernel = String::from_utf8(
        std::process::Command::new("uname")
            .arg("-r")
            .output()?
            .stdout,
    )?
    .trim()
    .to_string();
    let result = json!({
        "date": date,
        "quick": quick,
        "kernel": kernel,
        "cpus": cpus,
        "seconds": started.elapsed().as_secs(),
        "per_packet": per_packet,
        "control_plane": cp,
        "memory": mem,
        "through_the_lab": std::env::var_os("LB_BENCH_LAB_RESULTS")
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .unwrap_or(Value::Null),
        "not_measured": [
            "IPVS side by side: this kernel has no IPVS (CONFIG_IP_VS is not set), so there is no IPVS figure.",
        ],
    });
    std::fs::create_dir_all(&o.out_dir)?;
    let file = o
        .out_dir
        .join(format!("{date}{}.json", if quick { "-quick" } else { "" }));
    std::fs::write(&file, serde_json::to_string_pretty(&result)? + "\n")?;
    if !quick || !o.doc.exists() {
        std::fs::write(&o.doc, markdown(&result))?;
    }
    println!("{}", markdown(&result));
    eprintln!("bench: wrote {} in {:?}", file.display(), started.elapsed());
    Ok(())
}
