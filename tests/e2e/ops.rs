//! Day-two operations: `/metrics` scraped from another host of the lab and
//! validated by promtool.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use xtask::lab::{wait_for, Lab, DIRECTOR_IP};

use crate::{support::*, tests, Test};

const METRICS_PORT: u16 = 9469;

fn metrics_config() -> String {
    format!(
        r#"
metrics: {{listen: "{DIRECTOR_IP}:{METRICS_PORT}"}}
services:
  - protocol: tcp
    address: 192.0.2.100
    port: 80
    scheduler: rr
    health_check: {{type: http, interval: 0.5, timeout: 0.5, rise: 1, fall: 1, expect: "rs"}}
    on_failure: quiesce
    real_servers:
      - {{address: 192.0.2.11}}
      - {{address: 192.0.2.12}}
      - {{address: 192.0.2.13}}
"#
    )
}

/// GET /metrics from the lab's router (another host on the director's LAN:
/// the XDP program passes it to the kernel, it is no VIP).
fn scrape(lab: &Lab) -> String {
    lab.exec_out(
        &lab.ns("router"),
        &[
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "5",
            &format!("http://{DIRECTOR_IP}:{METRICS_PORT}/metrics"),
        ],
    )
    .expect("scrape")
}

/// The value of the one sample of `name` whose labels include `labels`
/// (None if there is none).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let hits: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            series.split('{').next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    assert!(hits.len() <= 1, "{name} {labels:?} is ambiguous:\n{text}");
    hits.first().copied()
}

/// `promtool check metrics` on `text`: its complaints (empty when clean).
fn promtool(text: &str) -> String {
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        String::new()
    } else {
        format!("exit {}: {said}", out.status)
    }
}

fn metrics_follow_traffic_and_health_and_pass_promtool() {
    let lab = lab();
    let _lbd = Lbd::start(&lab, &metrics_config());
    let svc = ("service", "tcp 192.0.2.100:80");
    let reals = ["192.0.2.11:80", "192.0.2.12:80", "192.0.2.13:80"];
    // Every check has reported (up) before traffic.
    wait_for(Duration::from_secs(10), || {
        let t = scrape(&lab);
        reals.iter().all(|r| {
            let address = r.split(':').next().unwrap();
            sample(
                &t,
                "lb_check_probes_total",
                &[svc, ("address", address), ("result", "ok")],
            )
            .is_some()
        })
    })
    .unwrap_or_else(|_| panic!("no check probes in:\n{}", scrape(&lab)));
    let before = scrape(&lab);
    let tx_before = sample(
        &before,
        "lb_dataplane_packets_total",
        &[("verdict", "tx"), ("reason", "forwarded")],
    )
    .unwrap_or(0.0);
    let counts = tally(&lab, 9);
    assert_eq!(counts.len(), 3, "{counts:?}");

    // Scrapes within a second share one snapshot.
    std::thread::sleep(Duration::from_millis(1100));
    let t = scrape(&lab);
    let problems = promtool(&t);
    assert!(
        problems.is_empty(),
        "promtool check metrics: {problems}\n{t}"
    );
    // rr: three connections each, counted by the program as they happen.
    for r in reals {
        let real = ("real", r);
        assert_eq!(
            sample(&t, "lb_real_connections_total", &[svc, real]),
            Some(3.0),
            "{r}:\n{t}"
        );
        assert_eq!(sample(&t, "lb_real_up", &[svc, real]), Some(1.0), "{r}");
        assert_eq!(
            sample(&t, "lb_real_checked", &[svc, real]),
            Some(1.0),
            "{r}"
        );
        assert_eq!(sample(&t, "lb_real_weight", &[svc, real]), Some(1.0), "{r}");
        assert_eq!(
            sample(&t, "lb_real_mac_resolved", &[svc, real]),
            Some(1.0),
            "{r}"
        );
        assert!(
            sample(&t, "lb_real_incoming_packets_total", &[svc, real]).unwrap() >= 3.0 * 4.0,
            "SYN, ACK, request, FIN at least per connection: {r}"
        );
    }
    assert_eq!(
        sample(&t, "lb_service_connections_total", &[svc]),
        Some(9.0)
    );
    assert_eq!(sample(&t, "lb_service_usable_reals", &[svc]), Some(3.0));
    let tx = sample(
        &t,
        "lb_dataplane_packets_total",
        &[("verdict", "tx"), ("reason", "forwarded")],
    )
    .unwrap();
    assert!(tx >= tx_before + 36.0, "tx {tx_before} -> {tx}");
    // The scrapes themselves are TCP to the director, not a VIP: passed.
    assert!(
        sample(
            &t,
            "lb_dataplane_packets_total",
            &[("verdict", "pass"), ("reason", "not_vip_address")]
        )
        .unwrap()
            > 0.0,
        "{t}"
    );
    assert_eq!(
        sample(&t, "lb_xdp_attached", &[("mode", "native")]),
        Some(1.0),
        "{t}"
    );
    assert!(sample(&t, "lb_conntable_capacity", &[]).unwrap() > 0.0);
    assert!(sample(&t, "process_resident_memory_bytes", &[]).unwrap() > 0.0);
    assert!(
        sample(
            &t,
            "lb_check_duration_seconds_count",
            &[svc, ("address", "192.0.2.11")]
        )
        .unwrap()
            >= 1.0
    );
    // The connections show up in the table's fill once a sweep ran
    // (every 2 s).
    wait_for(Duration::from_secs(6), || {
        sample(&scrape(&lab), "lb_conntable_entries", &[]).unwrap_or(0.0) >= 9.0
    })
    .unwrap_or_else(|_| panic!("{}", scrape(&lab)));

    // rs2's web server stops: down in the metrics within a few intervals.
    lab.stop_rs_http(2);
    let down = ("real", "192.0.2.12:80");
    wait_for(Duration::from_secs(6), || {
        let t = scrape(&lab);
        sample(&t, "lb_real_up", &[svc, down]) == Some(0.0)
            && sample(&t, "lb_real_effective_weight", &[svc, down]) == Some(0.0)
            && sample(&t, "lb_service_usable_reals", &[svc]) == Some(2.0)
    })
    .unwrap_or_else(|_| panic!("rs2 not down in:\n{}", scrape(&lab)));
    let t = scrape(&lab);
    assert!(
        sample(
            &t,
            "lb_check_probes_total",
            &[svc, ("address", "192.0.2.12"), ("result", "failed")]
        )
        .unwrap()
            >= 1.0
    );

    // Moving the listener is refused by an apply (it needs a restart), and
    // nothing changes.
    let moved = metrics_config().replace(&METRICS_PORT.to_string(), "9470");
    let file = std::env::temp_dir().join(format!("{}-moved.yaml", lab.prefix));
    std::fs::write(&file, moved).unwrap();
    let out = Command::new(xtask::paths().lbadm())
        .args(["apply", "-f"])
        .arg(&file)
        .env("LB_SOCKET", lab.socket())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("metrics"), "{err}");
    assert!(scrape(&lab).contains("lb_build_info"));
}

/// `--metrics` on the command line, and a port already taken: lbd refuses
/// to start before it touches anything.
fn the_metrics_flag_serves_and_a_taken_port_fails_the_start() {
    let lab = lab();
    let port = "9471";
    let addr = format!("{DIRECTOR_IP}:{port}");
    let holder = lab
        .cmd(&lab.ns("dir"), "socat")
        .args([
            &format!("TCP-LISTEN:{port},bind={DIRECTOR_IP},reuseaddr,fork"),
            "-",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let holder = Reap(holder);
    std::thread::sleep(Duration::from_millis(300));
    let config = std::env::temp_dir().join(format!("{}-lbd.yaml", lab.prefix));
    std::fs::write(&config, RR_CONFIG).unwrap();
    let mut lbd = lab
        .start_lbd(&config, &["--xdp-mode", "native", "--metrics", &addr])
        .unwrap();
    let status = wait_for(Duration::from_secs(10), || {
        matches!(lbd.try_wait(), Ok(Some(_)))
    });
    let log = std::fs::read_to_string(lab.lbd_log()).unwrap_or_default();
    if status.is_err() {
        let _ = lbd.kill();
    }
    let _ = lbd.wait();
    assert!(
        status.is_ok(),
        "lbd started with its metrics port taken:\n{log}"
    );
    assert!(log.contains(&addr), "{log}");
    // Nothing was attached: no program on the NIC.
    let link = lab
        .exec_out(&lab.ns("dir"), &["ip", "-d", "link", "show", "eth1"])
        .unwrap();
    assert!(!link.contains("prog/xdp"), "{link}");
    drop(holder);

    let _lbd = Reap(
        lab.start_lbd(&config, &["--xdp-mode", "native", "--metrics", &addr])
            .unwrap(),
    );
    lab.wait_lbd_ready(Duration::from_secs(20)).unwrap();
    let t = wait_for(Duration::from_secs(5), || {
        lab.exec_out(
            &lab.ns("router"),
            &[
                "curl",
                "-sS",
                "--max-time",
                "3",
                &format!("http://{addr}/metrics"),
            ],
        )
        .is_ok_and(|t| t.contains("lb_real_up"))
    });
    assert!(t.is_ok(), "no /metrics on {addr}");
}

/// `lbadm diagnose ARGS` run in namespace `ns`: (exit code, output).
fn diagnose(lab: &Lab, ns: &str, args: &[&str]) -> (i32, String) {
    let lbadm = xtask::paths().lbadm();
    let out = lab
        .cmd(ns, &lbadm)
        .env("LB_SOCKET", lab.socket())
        .arg("diagnose")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Each thing broken on the director shows up in `lbadm diagnose` as one
/// finding with its fix, and goes away when repaired.
fn diagnose_finds_what_is_broken_on_the_director() {
    let lab = lab();
    let mut lbd = Lbd::start(&lab, RR_CONFIG);
    let dir = lab.ns("dir");
    let (code, out) = diagnose(&lab, &dir, &["-v"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 error(s), 0 warning(s)"), "{out}");
    assert!(out.contains("is attached to eth1 in native mode"), "{out}");
    assert!(
        out.contains("virtual service tcp 192.0.2.100:80: 3 of 3 real server(s) usable"),
        "{out}"
    );
    assert!(out.contains("real server 192.0.2.12: MAC "), "{out}");
    assert!(out.contains("VIP 192.0.2.100 is a local address"), "{out}");

    // VLANs served with rx-vlan-offload on; the VIP taken off the director.
    let vlan_config = format!("vlans: [100]\n{RR_CONFIG}");
    let file = std::env::temp_dir().join(format!("{}-vlan.yaml", lab.prefix));
    std::fs::write(&file, vlan_config).unwrap();
    lab.lbadm(&["apply", "-f", file.to_str().unwrap()]).unwrap();
    let _ = std::fs::remove_file(&file);
    lab.exec(&dir, &["ethtool", "-K", "eth1", "rxvlan", "on"])
        .unwrap();
    lab.ip(&dir, "addr del 192.0.2.100/32 dev eth1").unwrap();
    let (code, out) = diagnose(&lab, &dir, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("WARNING eth1 has rx-vlan-offload on while lbd serves VLANs"),
        "{out}"
    );
    assert!(out.contains("fix: ethtool -K eth1 rxvlan off"), "{out}");
    assert!(
        out.contains("WARNING VIP 192.0.2.100 is on no interface of the director"),
        "{out}"
    );
    assert!(
        out.contains("fix: ip addr add 192.0.2.100/32 dev eth1"),
        "{out}"
    );
    assert!(out.contains("0 error(s), 2 warning(s)"), "{out}");
    lab.exec(&dir, &["ethtool", "-K", "eth1", "rxvlan", "off"])
        .unwrap();
    lab.ip(&dir, "addr add 192.0.2.100/32 dev eth1").unwrap();
    let (code, out) = diagnose(&lab, &dir, &[]);
    assert_eq!(code, 0, "{out}");

    // A real server nobody answers ARP for, one off the LAN, and a service
    // whose only real server is quiesced (its packets are dropped).
    lab.lbadm(&["-a", "-t", "192.0.2.100:80", "-r", "192.0.2.14", "-g"])
        .unwrap();
    lab.lbadm(&["-a", "-t", "192.0.2.100:80", "-r", "198.51.100.9", "-g"])
        .unwrap();
    lab.lbadm(&["-A", "-t", "192.0.2.100:8080", "-s", "rr"])
        .unwrap();
    lab.lbadm(&[
        "-a",
        "-t",
        "192.0.2.100:8080",
        "-r",
        "192.0.2.13",
        "-g",
        "-w",
        "0",
    ])
    .unwrap();
    let _ = lab.exec(
        &lab.ns("client"),
        &["curl", "-s", "--max-time", "1", "http://192.0.2.100:8080/"],
    );
    let found = wait_for(Duration::from_secs(10), || {
        diagnose(&lab, &dir, &[])
            .1
            .contains("real server 192.0.2.14 has no MAC (neighbour table: FAILED)")
    });
    let (code, out) = diagnose(&lab, &dir, &[]);
    assert!(found.is_ok(), "{out}");
    assert_eq!(code, 1, "{out}");
    for want in [
        "ERROR   real server 192.0.2.14 has no MAC",
        "fix: check that it is up and on eth1's LAN: ping -I eth1 192.0.2.14",
        "WARNING real server 198.51.100.9 is not on a subnet of eth1",
        "ERROR   virtual service tcp 192.0.2.100:8080 has no usable real server (192.0.2.13:8080 weight 0)",
        "fix: bring one up (lbadm -Ln --health says why each is out) or add one: lbadm -a -t 192.0.2.100:8080 -r ADDRESS -g",
        "packets to a virtual service with no usable real server were dropped (drop_no_real, in the last ",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // The service with four real servers still has three usable.
    assert!(!out.contains("tcp 192.0.2.100:80 has no usable"), "{out}");

    // Generic mode (after an unload: a pinned link keeps its mode).
    lbd.stop();
    lab.unload_lbd();
    let config = std::env::temp_dir().join(format!("{}-lbd.yaml", lab.prefix));
    let _generic = Reap(lab.start_lbd(&config, &["--xdp-mode", "generic"]).unwrap());
    lab.wait_lbd_ready(Duration::from_secs(20)).unwrap();
    let (code, out) = diagnose(&lab, &dir, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("WARNING lbd's program runs on eth1 in generic (SKB) mode"),
        "{out}"
    );

    // lbd stopped: said so.
    drop(_generic);
    let (code, out) = diagnose(&lab, &dir, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ERROR   lbd does not answer"), "{out}");
}

/// Each thing broken on a real server shows up in `lbadm diagnose
/// --realserver` (and `realserver check --verbose`) with its fix.
fn diagnose_finds_what_is_broken_on_a_real_server() {
    let lab = lab();
    let rs = lab.rs_ns(1);
    let args = ["--realserver", "--vip", "192.0.2.100", "--port", "80"];
    let (code, out) = diagnose(&lab, &rs, &args);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("0 error(s), 0 warning(s), 4 check(s) fine"),
        "{out}"
    );
    let check = |what: &str, fix: &str| {
        let (code, out) = diagnose(&lab, &rs, &args);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(what), "missing {what:?} in:\n{out}");
        assert!(out.contains(fix), "missing {fix:?} in:\n{out}");
        assert!(
            out.contains("1 error(s), 0 warning(s)") || out.contains("0 error(s), 1 warning(s)"),
            "{out}"
        );
    };
    let sh = |cmd: &str| {
        let v: Vec<&str> = cmd.split_whitespace().collect();
        lab.exec(&rs, &v).unwrap();
    };

    sh("ip addr del 192.0.2.100/32 dev lo");
    check(
        "ERROR   VIP 192.0.2.100 is not on lo",
        "fix: lbadm realserver up --vip 192.0.2.100",
    );
    sh("ip addr add 192.0.2.100/32 dev lo");

    sh("sysctl -qw net.ipv4.conf.all.arp_ignore=0 net.ipv4.conf.eth1.arp_ignore=0");
    check(
        "ERROR   ARP is not suppressed on eth1 (arp_ignore 0, arp_announce 2)",
        "sysctl -w net.ipv4.conf.all.arp_ignore=1",
    );
    sh("sysctl -qw net.ipv4.conf.all.arp_ignore=1");

    // A second NIC (a veth pair: the lab's kernels may lack dummy).
    sh("ip link add d0 type veth peer name d1");
    sh("sysctl -qw net.ipv4.conf.d0.rp_filter=1");
    check(
        "WARNING rp_filter is strict on d0 while the default route leaves by eth1",
        "sysctl -w net.ipv4.conf.d0.rp_filter=2",
    );
    sh("ip link del d0");

    lab.stop_rs_http(1);
    check(
        "ERROR   nothing is listening on tcp port 80",
        "fix: start the service, bound to the VIP or to every address",
    );
    lab.start_rs_http(1).unwrap();
    lab.wait_rs_http(1).unwrap();

    sh("ip route del default");
    check(
        "ERROR   no IPv4 default route in the main table",
        "fix: ip route add default via ROUTER",
    );
    sh("ip route add default via 192.0.2.1");

    // realserver check --verbose: the same checks, passed ones listed.
    let lbadm = xtask::paths().lbadm();
    let out = lab
        .cmd(&rs, &lbadm)
        .args([
            "realserver",
            "check",
            "--vip",
            "192.0.2.100",
            "--verbose",
            "--port",
            "80",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("ok      a tcp socket is listening on 192.0.2.100:80"),
        "{text}"
    );
    assert!(text.contains("ok      default route via eth1"), "{text}");
}

pub const TESTS: &[Test] = tests![
    metrics_follow_traffic_and_health_and_pass_promtool,
    the_metrics_flag_serves_and_a_taken_port_fails_the_start,
    diagnose_finds_what_is_broken_on_the_director,
    diagnose_finds_what_is_broken_on_a_real_server
];
