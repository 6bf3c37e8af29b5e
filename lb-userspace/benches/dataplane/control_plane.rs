//! The control plane: applying 1,000 services x 100 real servers, one
//! weight change, Maglev build time and disruption; the health checker's CPU.

use crate::*;

pub(crate) fn control_plane(o: &Opts, rows: &mut BTreeMap<String, Value>) -> Result<()> {
    let n_svc: u32 = if o.quick { 100 } else { 1000 };
    let limits = Limits {
        max_services: 1024,
        max_reals: 131_072,
        max_conns: 1024,
        max_maglev_slots: lb_common::DEFAULT_MAX_MAGLEV_SLOTS,
    };
    let mut b = load("bench-cp", &limits)?;
    let real_addrs: Vec<IpAddr> = (1..=100)
        .map(|n| format!("192.0.2.{n}").parse().unwrap())
        .collect();
    b.d.set_macs(&fake_macs(real_addrs.iter().copied()))?;
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
    let rss0 = rss_kib();
    let (t0, c0) = (Instant::now(), cpu_seconds());
    b.d.set_table(t.clone())?;
    let (apply, apply_cpu) = (t0.elapsed(), cpu_seconds() - c0);
    let rss_apply = rss_kib().saturating_sub(rss0);
    let first = *t.services.keys().next().unwrap();
    let mut times = Vec::new();
    for w in 0..5u32 {
        let mut t2 = b.d.table().clone();
        t2.edit_real(&first, real(real_addrs[0], first.port, 10 + w))
            .unwrap();
        let t0 = Instant::now();
        b.d.set_table(t2)?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    rows.insert(
        format!("apply_{n_svc}x100_ms"),
        json!((apply.as_secs_f64() * 1e4).round() / 10.0),
    );
    rows.insert(
        format!("apply_{n_svc}x100_cpu_ms"),
        json!((apply_cpu * 1e4).round() / 10.0),
    );
    rows.insert(
        format!("apply_{n_svc}x100_rss_growth_kib"),
        json!(rss_apply),
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
            // (sized by the configured servers, as the planner does)
            ts.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        let mut fewer = c.clone();
        fewer.remove(n / 2);
        let after = build_ring_sized(Scheduler::Mh, &fewer, ring.len());
        let moved = ring.iter().zip(&after).filter(|(a, b)| a != b).count();
        // Imbalance: the most slots any server has over the mean, minus 1
        // (servers with no slot at all counted too).
        let mut slots = vec![0u32; n];
        for id in &ring {
            slots[*id as usize] += 1;
        }
        let mean = ring.len() as f64 / n as f64;
        let max = *slots.iter().max().unwrap_or(&0) as f64;
        let empty = slots.iter().filter(|&&k| k == 0).count();
        rows.insert(
            format!("maglev_{n}_reals"),
            json!({
                "build_ms": (median(ts) * 1000.0).round() / 1000.0,
                "table_size": ring.len(),
                "imbalance_max_over_mean_minus_1": ((max / mean - 1.0) * 1e4).round() / 1e4,
                "servers_without_a_slot": empty,
                "moved_fraction_on_one_removal": (moved as f64 / ring.len() as f64 * 1e4).round() / 1e4,
                "ideal_fraction": (1.0 / n as f64 * 1e4).round() / 1e4,
            }),
        );
    }
    Ok(())
}

/// CPU time of this process (user + system), in seconds.
pub(crate) fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Resident set size of this process, in KiB.
pub(crate) fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// 10,000 TCP checks at 1 s interval against loopback listeners, on one
/// tokio runtime: CPU used per second of wall time, and the memory the
/// checks hold.
pub(crate) fn health_checker_cpu(o: &Opts, rows: &mut BTreeMap<String, Value>) -> Result<()> {
    use lb_userspace::health::{self, CheckKind, CheckSpec};
    let checks = if o.quick { 1000 } else { 10_000 };
    let seconds = if o.quick { 3.0 } else { 10.0 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (ok, total, cpu, rss) = rt.block_on(async {
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
        // As lbd runs them: every probe timed into the shared histogram.
        let metrics = health::CheckMetrics::default();
        let rss0 = rss_kib();
        for i in 0..checks {
            let mut sp = spec.clone();
            sp.port = Some(ports[i % ports.len()]);
            let svc = ServiceAddr {
                fwmark: 0,
                protocol: Protocol::Tcp,
                address: "192.0.2.100".parse().unwrap(),
                port: (i % 60000) as u16 + 1,
            };
            let series = metrics.start(&svc, &"127.0.0.1".parse().unwrap());
            handles.push(health::spawn(
                i as u64,
                sp,
                svc,
                "127.0.0.1".parse().unwrap(),
                i as f64 / checks as f64,
                tx.clone(),
                series,
            ));
        }
        // Warm-up (the first interval spreads the checks), then measure.
        tokio::time::sleep(Duration::from_secs_f64(1.2)).await;
        let c0 = cpu_seconds();
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        let cpu = cpu_seconds() - c0;
        let rss = rss_kib().saturating_sub(rss0);
        let mut downs = 0;
        while let Ok(ev) = rx.try_recv() {
            if !ev.up {
                downs += 1;
            }
        }
        for h in handles {
            h.abort();
        }
        (checks - downs, checks, cpu, rss)
    });
    rows.insert(
        format!("health_checker_{total}_tcp_checks_1s"),
        json!({
            "cpu_cores_used": ((cpu / seconds) * 1000.0).round() / 1000.0,
            "checks_healthy": ok,
            "measured_seconds": seconds,
            "rss_growth_kib": rss,
        }),
    );
    Ok(())
}

/// Reading the connection table at `n` entries (made by the program from
/// SYNs spread over every CPU): by key (two system calls per entry) against
/// in batches (BPF_MAP_LOOKUP_BATCH), and the sweep (which reads in
/// batches), wall time and CPU each, side by side in one run.
pub(crate) fn conn_table_reads(n: u32, rows: &mut BTreeMap<String, Value>) -> Result<()> {
    let limits = Limits {
        max_services: 16,
        max_reals: 64,
        max_conns: n.next_power_of_two(),
        max_maglev_slots: lb_common::DEFAULT_MAX_MAGLEV_SLOTS,
    };
    let mut b = load("bench-ct", &limits)?;
    let reals: Vec<IpAddr> = (1..=10)
        .map(|k| format!("192.0.2.{k}").parse().unwrap())
        .collect();
    b.d.set_macs(&fake_macs(reals.iter().copied()))?;
    let mut t = Table::default();
    let s = svc(Protocol::Tcp, "198.51.100.1", 80, Scheduler::Rr);
    t.add_service(s.clone()).unwrap();
    for a in &reals {
        t.add_real(&s.addr, real(*a, 80, 1)).unwrap();
    }
    b.d.set_table(t)?;
    let online = num_cpus_online();
    {
        let p = b.prog("lb");
        for k in 0..n {
            if k % 65536 == 0 {
                pin_to_cpu((k as usize / 65536) % online);
            }
            let src = std::net::Ipv4Addr::from(0xcb00_7100u32 + (k >> 16)).to_string();
            let frame = tcp(&src, (k & 0xffff) as u16, "198.51.100.1", 80, SYN).frame();
            run_ns(p, &frame, 1, XDP_TX);
        }
    }
    pin_to_cpu(0);
    let measure = |f: &mut dyn FnMut() -> usize| {
        let (c0, t0) = (cpu_seconds(), Instant::now());
        let seen = f();
        let wall = t0.elapsed().as_secs_f64();
        (
            seen,
            (wall * 1e3).round(),
            ((cpu_seconds() - c0) * 1e3).round(),
        )
    };
    let (by_key, key_ms, key_cpu) = measure(&mut || b.d.maps().conns_by_key().len());
    let (batch, batch_ms, batch_cpu) =
        measure(&mut || b.d.maps().conns_batch().map(|v| v.len()).unwrap_or(0));
    let (_, sweep_ms, sweep_cpu) = measure(&mut || b.d.sweep(true).len());
    rows.insert(
        format!("conn_table_read_{n}_entries"),
        json!({
            "entries_seen": {"by_key": by_key, "batch": batch},
            "by_key_ms": key_ms, "by_key_cpu_ms": key_cpu,
            "batch_ms": batch_ms, "batch_cpu_ms": batch_cpu,
            "sweep_ms": sweep_ms, "sweep_cpu_ms": sweep_cpu,
            "batch_speedup": if batch_ms > 0.0 { (key_ms / batch_ms * 10.0).round() / 10.0 } else { 0.0 },
        }),
    );
    Ok(())
}
