//! Per-packet cost under BPF_PROG_TEST_RUN, hot (one frame repeated) and
//! cold (maps populated at scale, a different flow on every call), side by
//! side with the reference programs of the tools object.

use crate::*;

/// Hot: one frame (or one flow) repeated, caches warm.
pub(crate) fn hot(o: &Opts, rows: &mut Vec<Value>) -> Result<()> {
    let rounds = if o.quick { 3 } else { 7 };
    let repeat = if o.quick { 200_000 } else { 1_000_000 };
    let calls = if o.quick { 3_000 } else { 20_000 };
    let limits = Limits {
        max_services: 64,
        max_reals: 16384,
        max_conns: 1 << 20,
        max_maglev_slots: lb_common::DEFAULT_MAX_MAGLEV_SLOTS,
    };
    let mut b = load("bench-hot", &limits)?;
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
    // The dynamic schedulers scan their servers: the same with 100 and
    // 1,000 of them (IPv6, for enough documentation addresses).
    let many: Vec<IpAddr> = (1..=1000u16)
        .map(|n| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, n)))
        .collect();
    for (port, sched, _) in SCALED_SCHEDS {
        for n in [100usize, 1000] {
            let port = port + if n == 100 { 0 } else { 1 };
            let s = svc(Protocol::Tcp, "2001:db8::200", port, sched);
            t.add_service(s.clone()).unwrap();
            for (i, a) in many.iter().take(n).enumerate() {
                t.add_real(&s.addr, real(*a, port, 1 + (i % 3) as u32))
                    .unwrap();
            }
        }
    }
    // Every real server has the director's own MAC here: BPF_PROG_TEST_RUN
    // with a repeat runs the program again on the frame it rewrote, and
    // the director passes frames addressed to another host (pass_other_mac).
    let own: Vec<_> = reals
        .iter()
        .copied()
        .chain([v6])
        .chain(many.iter().copied())
        .map(|a| (a, Some(DIRECTOR_MAC)))
        .collect();
    b.d.set_macs(&own)?;
    b.d.set_table(t)?;
    {
        let mut m = b.backends()?;
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
    // Establish the flows: a TCP entry is created by a SYN only (an ACK
    // without an entry is passed), and the ACK after it establishes it.
    for f in [
        tcp("203.0.113.10", 40000, "192.0.2.100", 80, SYN).frame(),
        tcp("2001:db8:ffff::10", 40000, "2001:db8::100", 443, SYN).frame(),
        est.clone(),
        est_v6.clone(),
        est_udp.clone(),
    ] {
        b.d.maps_mut().test_run(&f)?;
    }
    // The references with the director's data structures know the flow.
    let mut est_key = lb_common::ConnKey {
        proto: lb_common::PROTO_TCP,
        family: lb_common::AF_INET,
        sport: 40000u16.to_be(),
        dport: 80u16.to_be(),
        ..Default::default()
    };
    est_key.saddr[..4].copy_from_slice(&[203, 0, 113, 10]);
    est_key.daddr[..4].copy_from_slice(&[192, 0, 2, 100]);
    b.reference_conn(est_key)?;
    let mut rep = |name: &str, f: &[u8], want: u32| -> f64 {
        let p = b.prog(name);
        median((0..rounds).map(|_| run_ns(p, f, repeat, want)).collect())
    };
    let floor = rep("bench_floor", &est, XDP_TX);
    let minimal = rep("bench_minimal_lb", &est, XDP_TX);
    let conn_lookup = rep(tools::CONN_LOOKUP, &est, XDP_TX);
    let conn4_lookup = rep(tools::CONN4_LOOKUP, &est, XDP_TX);
    let conn_stats = rep(tools::CONN_STATS, &est, XDP_TX);
    let lb_est = rep("lb", &est, XDP_TX);
    let lb_udp = rep("lb", &est_udp, XDP_TX);
    let lb_v6 = rep("lb", &est_v6, XDP_TX);
    let lb_pass = rep("lb", &non_vip, XDP_PASS);
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
            (
                "reference: minimal LB with the director's 40-byte LRU key and real-server array",
                conn_lookup,
                "what the connection lookup costs",
            ),
            (
                "reference: the same with a 16-byte IPv4 key",
                conn4_lookup,
                "what an IPv4-sized key would save",
            ),
            (
                "reference: the 40-byte key plus two per-CPU statistics updates",
                conn_stats,
                "what the statistics cost",
            ),
            ("established TCP flow", lb_est, "connection entry hit"),
            ("established UDP flow", lb_udp, "connection entry hit"),
            ("established IPv6 TCP flow", lb_v6, "connection entry hit"),
            (
                "non-VIP packet (XDP_PASS)",
                lb_pass,
                "VIP prefilter: one array read, then XDP_PASS",
            ),
        ],
        floor,
        minimal,
        rows,
    );

    // New connections: every call a distinct tuple, repeat = 1.
    let mut one = |name: &str, frames: &mut dyn FnMut(u32) -> Vec<u8>| -> f64 {
        let p = b.prog(name);
        median(
            (0..calls)
                .map(|i| run_ns(p, &frames(i), 1, XDP_TX))
                .collect(),
        )
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
    // What a new entry costs at least: the minimal LB plus an LRU insert
    // under the 40-byte key, a distinct tuple per call.
    let insert = one(tools::CONN_INSERT, &mut |i| {
        let src = format!("198.51.100.{}", (i / 50_000) + 100);
        tcp(&src, 1024 + (i % 50_000) as u16, "192.0.2.100", 80, SYN).frame()
    });
    cases.push((
        "reference: minimal LB plus a new entry (LRU insert, 40-byte key)",
        insert,
        "distinct tuple per call",
    ));
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
    let mut scaled = Vec::new();
    for (b, (port, _, name)) in (40u32..).zip(SCALED_SCHEDS) {
        for (k, n) in [100, 1000].into_iter().enumerate() {
            let ns = one("lb", &mut |i| {
                let src = format!("2001:db8:ffff:{:x}::{:x}", b * 2 + k as u32, i / 50_000 + 1);
                tcp(
                    &src,
                    1024 + (i % 50_000) as u16,
                    "2001:db8::200",
                    port + k as u16,
                    SYN,
                )
                .frame()
            });
            scaled.push((format!("{name}, {n} real servers (IPv6)"), ns));
        }
    }
    for (n, ns) in &scaled {
        cases.push((n, *ns, "distinct tuple per call"));
    }
    rows_for("hot, repeat 1 per call", &cases, floor1, minimal1, rows);
    Ok(())
}

/// Schedulers that scan every real server, measured with 100 and 1,000
/// (ports: the first for 100, the next for 1,000).
const SCALED_SCHEDS: [(u16, Scheduler, &str); 6] = [
    (100, Scheduler::Lc, "new TCP connection (SYN), lc"),
    (102, Scheduler::Wlc, "new TCP connection (SYN), wlc"),
    (104, Scheduler::Sed, "new TCP connection (SYN), sed"),
    (106, Scheduler::Nq, "new TCP connection (SYN), nq"),
    (108, Scheduler::Ovf, "new TCP connection (SYN), ovf"),
    (110, Scheduler::Twos, "new TCP connection (SYN), twos"),
];

/// The other schedulers' new-connection cost (3 real servers each).
pub(crate) const OTHER_SCHEDS: [(u16, Scheduler, &str); 10] = [
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

/// Cold: maps populated at scale (`n_conns` established flows), a
/// different flow on every call; median and 90th percentile.
pub(crate) fn cold(
    o: &Opts,
    n_conns: u32,
    rows: &mut Vec<Value>,
    memory: &mut BTreeMap<String, Value>,
) -> Result<()> {
    let calls = if o.quick { 5_000 } else { 50_000 };
    let limits = Limits {
        max_services: 1024,
        max_reals: 16384,
        max_conns: n_conns.next_power_of_two(),
        max_maglev_slots: lb_common::DEFAULT_MAX_MAGLEV_SLOTS,
    };
    let mut b = load("bench-cold", &limits)?;
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
    b.d.set_macs(&fake_macs(real_addrs.iter().copied()))?;
    b.d.set_table(t)?;
    {
        let mut m = b.backends()?;
        for (vip, port) in vips.iter().take(1000) {
            let a: std::net::Ipv4Addr = vip.parse().unwrap();
            m.insert(bench_key(a.octets(), *port), [2, 0, 0, 0, 1, 1, 0, 0], 0)
                .ok();
        }
    }
    // Flow k: unique for k < 2^20 x 125 (source port and address give k
    // mod 2^20, the VIP k mod 1000).
    let flow = |k: u32| {
        let src = std::net::Ipv4Addr::from(0xcb00_7100u32 + (k >> 12) % 256).to_string();
        let (vip, port) = &vips[(k % 1000) as usize];
        (src, 1024 + (k % 4096) as u16, vip.clone(), *port)
    };
    // Populate through the data plane itself, SYN then ACK (established),
    // from every CPU in turn as RSS spreads flows over queues.
    let online = num_cpus_online();
    let t0 = Instant::now();
    {
        let p = b.prog("lb");
        for k in 0..n_conns {
            if k % 4096 == 0 {
                pin_to_cpu(((k / 4096) as usize) % online);
            }
            let (s, sp, v, dp) = flow(k);
            run_ns(p, &tcp(&s, sp, &v, dp, SYN).frame(), 1, XDP_TX);
            run_ns(p, &tcp(&s, sp, &v, dp, ACK).frame(), 1, XDP_TX);
        }
    }
    pin_to_cpu(0);
    let populate = t0.elapsed();
    let present = b.d.maps().conn_count();
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
        let p = b.prog(name);
        let v: Vec<f64> = frames.iter().map(|f| run_ns(p, f, 1, XDP_TX)).collect();
        (percentile(v.clone(), 0.5), percentile(v, 0.9))
    };
    let (floor, floor90) = measure("bench_floor");
    let (minimal, minimal90) = measure("bench_minimal_lb");
    let (lb, lb90) = measure("lb");
    let label = format!("established TCP flow, {n_conns} entries, random flow per call");
    let p90 = |x: f64| format!("p90 {x} ns");
    rows_for(
        &format!("cold: 1,000 services x 10 real servers, {n_conns} established connections"),
        &[
            ("floor, repeat 1 (per-call overhead)", floor, &p90(floor90)),
            ("minimal LB, 1,000 VIPs, repeat 1", minimal, &p90(minimal90)),
            (&label, lb, &p90(lb90)),
        ],
        floor,
        minimal,
        rows,
    );
    memory.insert(format!("cold_{n_conns}_entries_present"), json!(present));
    memory.insert(
        format!("cold_{n_conns}_populate_syn_ack_via_xdp_s"),
        json!((populate.as_secs_f64() * 100.0).round() / 100.0),
    );
    Ok(())
}
