//! Helpers shared by the benchmark's parts.

use crate::*;

pub(crate) fn median(v: Vec<f64>) -> f64 {
    percentile(v, 0.5)
}

/// The value below which fraction `q` of `v` lies (nearest rank).
pub(crate) fn percentile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

/// One BPF_PROG_TEST_RUN: kernel-measured ns per run. The verdict must be
/// `want`: a case that silently takes another path (a flow that was never
/// established, a packet passed instead of forwarded) would measure the
/// wrong thing, so the benchmark stops instead.
pub(crate) fn run_ns(prog: &Xdp, frame: &[u8], repeat: u32, want: u32) -> f64 {
    let mut out = vec![0u8; frame.len() + 64];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    assert_eq!(
        r.return_value,
        want,
        "verdict {} where {want} was measured (program {:?}, repeat {repeat})",
        r.return_value,
        prog.info()
            .ok()
            .and_then(|i| i.name_as_str().map(String::from))
    );
    r.duration.as_nanos() as f64
}

/// The tools object (reference programs), loaded once per part.
pub(crate) fn tools() -> Result<Ebpf> {
    Ok(EbpfLoader::new().load(TOOLS_OBJECT)?)
}

/// Program `name` of `ebpf`, loaded on first use.
pub(crate) fn tools_prog<'a>(ebpf: &'a mut Ebpf, name: &str) -> &'a mut Xdp {
    let p: &mut Xdp = ebpf
        .program_mut(name)
        .unwrap_or_else(|| panic!("program {name}"))
        .try_into()
        .unwrap();
    if p.fd().is_err() {
        p.load().unwrap();
    }
    p
}

/// The director under test and the reference programs, side by side.
/// Field order matters: the director's map fds close before its pin
/// directory is removed.
pub(crate) struct Bench {
    pub(crate) d: Director<Dataplane>,
    pub(crate) tools: Ebpf,
    _dir: PinDir,
}

impl Bench {
    /// `lb` (the director's program) or a reference program.
    pub(crate) fn prog(&mut self, name: &str) -> &mut Xdp {
        if name == prog::LB {
            return self.d.maps_mut().program().expect("program lb");
        }
        tools_prog(&mut self.tools, name)
    }

    /// The minimal LB's table.
    pub(crate) fn backends(&mut self) -> Result<BpfHashMap<&mut MapData, [u8; 8], [u8; 8]>> {
        let map = self
            .tools
            .map_mut(tools::MAP_BACKENDS)
            .context(tools::MAP_BACKENDS)?;
        Ok(BpfHashMap::try_from(map)?)
    }
}

impl Bench {
    /// The `bench_conn_*` references' connection entry for `key`: real
    /// server 2 (svc 1), whose MAC they write.
    pub(crate) fn reference_conn(&mut self, key: lb_common::ConnKey) -> Result<()> {
        let m = self
            .tools
            .map_mut(tools::MAP_CONNS)
            .context(tools::MAP_CONNS)?;
        // (aya's HashMap also opens LRU hash maps.)
        let mut conns: BpfHashMap<&mut MapData, lb_common::ConnKey, lb_common::ConnValue> =
            BpfHashMap::try_from(m)?;
        conns.insert(
            key,
            lb_common::ConnValue {
                real_id: 2,
                svc_id: 1,
                ..Default::default()
            },
            0,
        )?;
        // The same flow under a 16-byte IPv4 key (addresses, ports, protocol).
        let mut k4 = [0u8; 16];
        k4[..4].copy_from_slice(&key.saddr[..4]);
        k4[4..8].copy_from_slice(&key.daddr[..4]);
        k4[8..10].copy_from_slice(&key.sport.to_ne_bytes());
        k4[10..12].copy_from_slice(&key.dport.to_ne_bytes());
        k4[12] = key.proto;
        let m = self
            .tools
            .map_mut(tools::MAP_CONNS4)
            .context(tools::MAP_CONNS4)?;
        let mut conns4: BpfHashMap<&mut MapData, [u8; 16], lb_common::ConnValue> =
            BpfHashMap::try_from(m)?;
        conns4.insert(
            k4,
            lb_common::ConnValue {
                real_id: 2,
                svc_id: 1,
                ..Default::default()
            },
            0,
        )?;
        let m = self
            .tools
            .map_mut(tools::MAP_REALS)
            .context(tools::MAP_REALS)?;
        let mut reals: aya::maps::Array<&mut MapData, [u8; 8]> = aya::maps::Array::try_from(m)?;
        reals.set(2, [2, 0, 0, 0, 0x10, 11, 0, 0], 0)?;
        Ok(())
    }
}

pub(crate) struct Xorshift(pub(crate) u64);
impl Xorshift {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

pub(crate) fn svc(proto: Protocol, addr: &str, port: u16, sched: Scheduler) -> ServiceSpec {
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

pub(crate) fn real(addr: IpAddr, port: u16, weight: u32) -> RealSpec {
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
pub(crate) fn bench_key(addr: [u8; 4], port: u16) -> [u8; 8] {
    let p = port.to_be_bytes();
    [addr[0], addr[1], addr[2], addr[3], p[0], p[1], 0, 0]
}

pub(crate) fn load(tag: &str, limits: &Limits) -> Result<Bench> {
    let dir = PinDir::new(tag);
    let dp = Dataplane::load(&dir.0, limits)?;
    let mut d = Director::recover(dp)?;
    d.set_director_mac(DIRECTOR_MAC)?;
    d.heartbeat();
    Ok(Bench {
        d,
        tools: tools()?,
        _dir: dir,
    })
}

pub(crate) fn fake_macs(addrs: impl Iterator<Item = IpAddr>) -> Vec<(IpAddr, Option<[u8; 6]>)> {
    addrs
        .enumerate()
        .map(|(i, a)| (a, Some([0x02, 0, 0, 1, (i >> 8) as u8, i as u8])))
        .collect()
}

pub(crate) fn rows_for(
    group: &str,
    cases: &[(&str, f64, &str)],
    floor: f64,
    minimal: f64,
    rows: &mut Vec<Value>,
) {
    for (name, ns, note) in cases {
        let x_minimal = ((ns / minimal) * 100.0).round() / 100.0;
        let mut row = json!({
            "group": group,
            "case": name,
            "ns_per_packet": (ns * 10.0).round() / 10.0,
            "x_floor": ((ns / floor) * 100.0).round() / 100.0,
            "x_minimal_lb": x_minimal,
            "note": note,
        });
        if let Some((target, met)) = target(name, *ns, x_minimal) {
            row["target"] = json!(target);
            row["target_met"] = json!(met);
        }
        rows.push(row);
    }
}

/// The performance issue's per-packet target for a case, and whether the
/// measurement meets it.
fn target(case: &str, ns: f64, x_minimal: f64) -> Option<(String, bool)> {
    const CHEAP: [&str; 5] = ["rr", "wrr", "mh", "sh", "dh"];
    const SCANS: [&str; 6] = ["lc", "wlc (3 real servers)", "sed", "nq", "ovf", "twos"];
    let ratio = |limit: f64| Some((format!("<= {limit}x minimal LB"), x_minimal <= limit));
    if case.starts_with("established") && case.contains("entries, random flow") {
        if case.contains(" 1000000 entries") {
            return Some(("<= 500 ns median".into(), ns <= 500.0));
        }
        return None;
    }
    if case.starts_with("established") {
        return ratio(1.3);
    }
    if case.starts_with("non-VIP") {
        return ratio(1.2);
    }
    let sched = case.strip_prefix("new TCP connection (SYN), ")?;
    if CHEAP.contains(&sched) {
        return ratio(2.5);
    }
    if SCANS.contains(&sched) {
        return ratio(3.0);
    }
    None
}

pub(crate) fn num_cpus_online() -> usize {
    // The benchmark pins itself to CPU 0 first, so ask the system, not the mask.
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        1
    }
}
