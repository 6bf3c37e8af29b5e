//! Packets per second over a veth pair: live frames from a generator
//! program through the director to a sink.

use crate::*;

/// Runs `f` with the calling thread in network namespace `ns`.
pub(crate) fn in_netns<T>(ns: &str, f: impl FnOnce() -> T) -> Result<T> {
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

pub(crate) fn sh(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Deletes the bench's namespaces on drop.
pub(crate) struct NetnsPair(String, String);
impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.0, &self.1] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
    }
}

pub(crate) fn link_mac(ns: &str, dev: &str) -> Result<[u8; 6]> {
    let s = sh(&["ip", "-n", ns, "-o", "link", "show", dev])?;
    let m = s
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .context("no MAC")?;
    lb_userspace::director::codec::parse_mac(m).ok_or_else(|| anyhow::anyhow!("bad MAC {m}"))
}

/// Packets per second through a director namespace over veth, native XDP:
/// the lb program (XDP_TX back to the sender) against the floor program
/// (swap the MACs, XDP_TX: the physical limit here) and plain Linux routing
/// in the same namespace (the no-LB baseline). The generator is
/// BPF_PROG_TEST_RUN in live-frames mode; the sink is an XDP program that
/// counts and drops on the generator's veth.
pub(crate) fn network_pps(o: &Opts, rows: &mut BTreeMap<String, Value>) -> Result<()> {
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
    let small = Limits {
        max_services: 4,
        max_reals: 4,
        max_conns: 1024,
        max_maglev_slots: lb_common::DEFAULT_MAX_MAGLEV_SLOTS,
    };
    let mut gen_tools = tools()?;
    let gen_ifindex: u32 = in_netns(&gen, || -> Result<u32> {
        let p = tools_prog(&mut gen_tools, tools::SINK);
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
    let sink_count = |ebpf: &mut Ebpf| -> u64 {
        let m = ebpf.map(tools::MAP_SINK_COUNT).expect("sink map");
        let a: aya::maps::PerCpuArray<&MapData, u64> = aya::maps::PerCpuArray::try_from(m).unwrap();
        a.get(&0, 0).map(|v| v.iter().sum()).unwrap_or(0)
    };
    let run = |gen_dp: &mut Ebpf| -> Result<(f64, f64)> {
        let mut sent = Vec::new();
        let mut got = Vec::new();
        for _ in 0..rounds {
            let before = sink_count(gen_dp);
            let t0 = Instant::now();
            in_netns(&gen, || -> Result<()> {
                let p = tools_prog(gen_dp, tools::GEN);
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
    let (lb_sent, lb_got, delivered_lb) = {
        let mut b = load("bench-pps", &small)?;
        b.d.set_director_mac(dir_mac)?;
        let mut t = Table::default();
        let s = svc(Protocol::Udp, "192.0.2.100", 9, Scheduler::Mh);
        t.add_service(s.clone()).unwrap();
        t.add_real(&s.addr, real("198.51.100.1".parse().unwrap(), 9, 1))
            .unwrap();
        b.d.set_macs(&[("198.51.100.1".parse().unwrap(), Some(gen_mac))])?;
        b.d.set_table(t)?;
        in_netns(&dir, || {
            b.d.maps_mut()
                .attach("dir0", lb_userspace::dataplane::AttachMode::Native)
        })??;
        let (sent, got) = run(&mut gen_tools)?;
        let fwd = b.d.stats(false, 0).packets;
        (sent, got, fwd)
    };
    // 2. The floor: swap the MACs and XDP_TX, nothing else (the most this
    // veth pair and CPU can forward).
    let (floor_sent, floor_got) = {
        let mut floor_tools = tools()?;
        in_netns(&dir, || -> Result<()> {
            tools_prog(&mut floor_tools, "bench_floor")
                .attach("dir0", aya::programs::XdpMode::Driver)?;
            Ok(())
        })??;
        run(&mut gen_tools)?
    };
    // 3. The no-LB baseline: Linux forwarding in the same namespace (an
    // XDP_PASS program on dir0, which a veth needs to receive XDP_TX frames).
    let pass_pins = PinDir::new("bench-pass");
    in_netns(&dir, || -> Result<()> {
        lb_userspace::dataplane::attach_pass("dir0", &pass_pins.0.join("pass_link"))?;
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
    let (base_sent, base_got) = run(&mut gen_tools)?;
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
            "floor_pps": floor_got.round(),
            "floor_offered_pps": floor_sent.round(),
            "ratio_lb_to_floor": ((lb_got / floor_got) * 100.0).round() / 100.0,
            "xdp_mode": "native (veth)",
        }),
    );
    drop(gen_tools);
    drop(pair);
    Ok(())
}
