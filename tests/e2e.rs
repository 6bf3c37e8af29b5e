//! Namespace end-to-end tests: real namespaces, veth, native XDP, the real
//! lbd and lbadm, python HTTP servers, curl and tcpdump. Run as root through
//! `cargo xtask test` (they are #[ignore]d for a plain `cargo test`).

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Child, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread::sleep,
    time::{Duration, Instant},
};

use xtask::{
    lab::{self, wait_for, Lab},
    paths, root,
};

static N: AtomicU32 = AtomicU32::new(0);

fn lab() -> Lab {
    let prefix = format!(
        "lbe2e{}{}",
        std::process::id() % 1000,
        N.fetch_add(1, Ordering::SeqCst)
    );
    Lab::up(&prefix, 3, paths()).expect("lab up")
}

/// `n` HTTP requests from the client to the VIP: answers per real server
/// (each request must succeed).
fn tally(lab: &Lab, n: u32) -> BTreeMap<String, u32> {
    let mut m = BTreeMap::new();
    for _ in 0..n {
        let body = lab.curl_vip("/", 5).expect("request through the director");
        *m.entry(body.trim().to_string()).or_default() += 1;
    }
    m
}

/// lbd running with `config` (YAML text), killed on drop.
struct Lbd<'a> {
    lab: &'a Lab,
    child: Option<Child>,
    config: std::path::PathBuf,
}

impl<'a> Lbd<'a> {
    fn start(lab: &'a Lab, yaml: &str) -> Lbd<'a> {
        let config = std::env::temp_dir().join(format!("{}-lbd.yaml", lab.prefix));
        std::fs::write(&config, yaml).unwrap();
        let mut l = Lbd {
            lab,
            child: None,
            config,
        };
        l.restart();
        l
    }
    fn restart(&mut self) {
        self.child = Some(
            self.lab
                .start_lbd(&self.config, &["--xdp-mode", "native"])
                .unwrap(),
        );
        self.lab.wait_lbd_ready(Duration::from_secs(20)).unwrap();
    }
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL: no chance to clean up anything
            let _ = c.wait();
        }
    }
}

impl Drop for Lbd<'_> {
    fn drop(&mut self) {
        self.kill();
    }
}

const RR_CONFIG: &str = r#"
services:
  - protocol: tcp
    address: 192.0.2.100
    port: 80
    scheduler: rr
    real_servers:
      - {address: 192.0.2.11}
      - {address: 192.0.2.12}
      - {address: 192.0.2.13}
"#;

/// tcpdump in a namespace; stopped (and its lines returned) by `finish`.
struct Capture {
    child: Child,
}

impl Capture {
    fn start(lab: &Lab, ns: &str, dev: &str, filter: &str) -> Capture {
        let mut child = lab
            .cmd(ns, "tcpdump")
            .args(["-n", "-e", "-l", "-i", dev, filter])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        // Wait for "listening on" so no packet is missed.
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            line.clear();
            if err.read_line(&mut line).unwrap_or(0) == 0 || line.contains("listening on") {
                break;
            }
        }
        assert!(
            line.contains("listening on"),
            "tcpdump did not start: {line}"
        );
        Capture { child }
    }
    fn finish(self) -> Vec<String> {
        sleep(Duration::from_millis(300));
        // SIGTERM: tcpdump flushes and exits.
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let out = self.child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }
}

#[test]
#[ignore = "needs root and namespaces: run with `cargo xtask test`"]
fn requests_reach_every_real_server_and_replies_bypass_the_director() {
    let lab = lab();
    let _lbd = Lbd::start(&lab, RR_CONFIG);
    let router_cap = Capture::start(
        &lab,
        &lab.ns("router"),
        "eth1",
        "src host 192.0.2.100 and tcp src port 80",
    );
    let dir_cap = Capture::start(
        &lab,
        &lab.ns("dir"),
        "eth1",
        "src host 192.0.2.100 and tcp src port 80",
    );
    let answers = tally(&lab, 30);
    let router_lines = router_cap.finish();
    let dir_lines = dir_cap.finish();

    assert_eq!(answers.values().sum::<u32>(), 30);
    for i in 1..=3 {
        assert!(
            answers.get(&format!("rs{i}")).copied().unwrap_or(0) >= 5,
            "rr should spread 30 requests over 3 real servers: {answers:?}"
        );
    }
    // Replies come straight from the real servers: the router sees them from
    // the real servers' MACs, the director sees none.
    let rs_macs: Vec<String> = (1..=3)
        .map(|i| lab.mac_of(&lab.rs_ns(i), "eth1").unwrap())
        .collect();
    assert!(
        router_lines.len() >= 30,
        "router saw {} replies",
        router_lines.len()
    );
    for l in &router_lines {
        let src = l.split_whitespace().nth(1).unwrap_or("");
        assert!(
            rs_macs.iter().any(|m| m == src),
            "reply from {src}, not a real server: {l}"
        );
    }
    assert!(
        dir_lines.is_empty(),
        "the director saw server-to-client packets: {dir_lines:?}"
    );
    // The router's neighbour entry for the VIP is the director's MAC (ARP
    // suppression on the real servers works).
    let neigh = lab
        .exec_out(&lab.ns("router"), &["ip", "neigh", "show", lab::VIP])
        .unwrap();
    let dir_mac = lab.mac_of(&lab.ns("dir"), "eth1").unwrap();
    assert!(
        neigh.contains(&dir_mac),
        "router's entry for the VIP: {neigh} (director {dir_mac})"
    );
    for i in 1..=3 {
        assert!(!neigh.contains(&rs_macs[i - 1]));
    }
    // The listing shows the service, the three real servers and their traffic.
    let list = lab.lbadm(&["-L", "-n"]).unwrap();
    assert!(list.contains("TCP  192.0.2.100:80 rr"), "{list}");
    for i in 1..=3 {
        assert!(list.contains(&format!("  -> 192.0.2.1{i}:80")), "{list}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&lab.lbadm(&["-L", "-n", "-o", "json"]).unwrap()).unwrap();
    let conns: u64 = json["services"][0]["reals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["stats"]["conns"].as_u64().unwrap())
        .sum();
    assert_eq!(conns, 30, "per-real-server connection counters");
    // The real-server helper reports a complete set-up.
    let check = lab
        .exec_out(
            &lab.rs_ns(1),
            &[
                paths().lbadm().to_str().unwrap(),
                "realserver",
                "check",
                "--vip",
                lab::VIP,
                "--nic",
                "eth1",
            ],
        )
        .unwrap();
    assert!(check.starts_with("ok:"), "{check}");
}

#[test]
#[ignore = "needs root and namespaces: run with `cargo xtask test`"]
fn an_established_connection_survives_killing_and_restarting_lbd() {
    let lab = lab();
    let mut lbd = Lbd::start(&lab, RR_CONFIG);
    // A 6-second download through the director.
    let out_file = std::env::temp_dir().join(format!("{}-slow.out", lab.prefix));
    let mut curl = lab
        .cmd(&lab.ns("client"), "curl")
        .args(["-sS", "--max-time", "30", "-o"])
        .arg(&out_file)
        .arg(format!("http://{}/slow?s=6", lab::VIP))
        .spawn()
        .unwrap();
    sleep(Duration::from_millis(1500));
    lbd.kill();
    // While lbd is down the pinned program keeps forwarding, new connections too.
    let body = lab
        .curl_vip("/", 5)
        .expect("new connection while lbd is down");
    assert!(body.starts_with("rs"), "{body}");
    sleep(Duration::from_millis(1000));
    lbd.restart();
    let status = curl.wait().unwrap();
    assert!(status.success(), "the transfer broke: {status}");
    let got = std::fs::read_to_string(&out_file).unwrap();
    let _ = std::fs::remove_file(&out_file);
    assert_eq!(
        got.len(),
        60 * 1024 + "rsN done\n".len(),
        "truncated transfer"
    );
    assert!(got.ends_with(" done\n"));
    // And the director still serves after the restart.
    assert!(lab.curl_vip("/", 5).unwrap().starts_with("rs"));
}

#[test]
#[ignore = "needs root and namespaces: run with `cargo xtask test`"]
fn lbadm_changes_take_effect_on_live_traffic() {
    let lab = lab();
    let _lbd = Lbd::start(&lab, RR_CONFIG);
    let tally = |n: u32| tally(&lab, n);
    // Quiesce rs2 (weight 0): it gets no new connection.
    lab.lbadm(&[
        "-e",
        "-t",
        "192.0.2.100:80",
        "-r",
        "192.0.2.12",
        "-g",
        "-w",
        "0",
    ])
    .unwrap();
    let m = tally(12);
    assert_eq!(m.get("rs2"), None, "{m:?}");
    assert_eq!(m.values().sum::<u32>(), 12);
    // Delete rs1: only rs3 remains.
    lab.lbadm(&["-d", "-t", "192.0.2.100:80", "-r", "192.0.2.11"])
        .unwrap();
    let m = tally(6);
    assert_eq!(m.get("rs3"), Some(&6), "{m:?}");
    // Errors are ipvsadm's and change nothing.
    let e = std::process::Command::new(paths().lbadm())
        .args(["-d", "-t", "192.0.2.100:80", "-r", "192.0.2.99"])
        .env("LB_SOCKET", lab.socket())
        .output()
        .unwrap();
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("No such destination"));
    // A new service added at run time, on the port-0 "all ports" form.
    lab.lbadm(&["-A", "-t", "192.0.2.100:0", "-s", "rr", "-p", "60"])
        .unwrap();
    lab.lbadm(&["-a", "-t", "192.0.2.100:0", "-r", "192.0.2.11", "-g"])
        .unwrap();
    wait_for(Duration::from_secs(10), || {
        lab.lbadm(&["-L", "-n", "-o", "json"])
            .map(|s| !s.contains("\"mac\": null"))
            .unwrap_or(false)
    })
    .unwrap();
    // Timeouts, as ipvsadm --set / --timeout print them.
    assert_eq!(
        lab.lbadm(&["-L", "--timeout"]).unwrap(),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
    lab.lbadm(&["--set", "3600", "0", "60"]).unwrap();
    assert_eq!(
        lab.lbadm(&["-L", "--timeout"]).unwrap(),
        "Timeout (tcp tcpfin udp): 3600 120 60\n"
    );
    // port 80 still has its own service; the rest of the table is listed.
    let list = lab.lbadm(&["-L", "-n"]).unwrap();
    assert!(
        list.contains("TCP  192.0.2.100:0 rr persistent 60"),
        "{list}"
    );
    let _ = root();
}

const CHECKED_CONFIG: &str = r#"
services:
  - protocol: tcp
    address: 192.0.2.100
    port: 80
    scheduler: rr
    health_check: {type: http, interval: 0.5, timeout: 0.5, rise: 2, fall: 2, expect: "rs"}
    on_failure: quiesce
    real_servers:
      - {address: 192.0.2.11}
      - {address: 192.0.2.12}
      - {address: 192.0.2.13}
"#;

#[test]
#[ignore = "needs root and namespaces: run with `cargo xtask test`"]
fn a_failed_real_server_leaves_and_rejoins_by_itself() {
    let lab = lab();
    let socket = lab.socket();
    let lbadm = |args: &[&str]| -> String {
        let out = std::process::Command::new(paths().lbadm())
            .args(args)
            .env("LB_SOCKET", &socket)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let curl = |lab: &Lab| lab.curl_vip("/", 2).ok().map(|b| b.trim().to_string());
    {
        let _lbd = Lbd::start(&lab, CHECKED_CONFIG);
        let mut seen = BTreeMap::new();
        for _ in 0..9 {
            *seen.entry(curl(&lab).expect("request")).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 3, "{seen:?}");

        // Stop rs2's HTTP server; within fall x interval (+ one timeout and
        // one interval of phase) no new connection reaches it.
        lab.stop_rs_http(2);
        let killed = Instant::now();
        // fall x interval + one timeout = 1.5 s, plus a little slack.
        sleep(Duration::from_millis(1800));
        let mut after = BTreeMap::new();
        for _ in 0..12 {
            let who = curl(&lab).expect("a request failed after the check took rs2 out");
            *after.entry(who).or_insert(0) += 1;
        }
        assert_eq!(after.get("rs2"), None, "{after:?}");
        assert_eq!(after.values().sum::<i32>(), 12);
        let listing = lbadm(&["-L", "-n", "--health"]);
        let row = listing
            .lines()
            .find(|l| l.contains("192.0.2.12:80"))
            .unwrap_or_else(|| panic!("{listing}"));
        assert!(
            row.contains("Route   0 ")
                && row.contains("down")
                && row.contains("connection refused"),
            "{row}"
        );
        assert!(killed.elapsed() < Duration::from_secs(10));

        // Start it again: it rejoins after rise x interval.
        lab.start_rs_http(2).unwrap();
        let back = wait_for(Duration::from_secs(10), || {
            (0..3).any(|_| curl(&lab).as_deref() == Some("rs2"))
        });
        assert!(
            back.is_ok(),
            "rs2 did not rejoin: {}",
            lbadm(&["-L", "-n", "--health"])
        );
        let listing = lbadm(&["-L", "-n", "--health"]);
        let row = listing
            .lines()
            .find(|l| l.contains("192.0.2.12:80"))
            .unwrap();
        assert!(row.contains(" up "), "{row}");
    }
}

const AGENT_CONFIG: &str = r#"
services:
  - protocol: tcp
    address: 192.0.2.100
    port: 80
    scheduler: rr
    health_check: {type: agent, port: 10000, interval: 0.5, timeout: 0.5, rise: 1, fall: 1}
    real_servers:
      - {address: 192.0.2.11}
      - {address: 192.0.2.12}
      - {address: 192.0.2.13}
"#;

#[test]
#[ignore = "needs root and namespaces: run with `cargo xtask test`"]
fn a_draining_agent_gets_no_new_connections_while_established_ones_finish() {
    let lab = lab();
    let state = |i: usize| std::env::temp_dir().join(format!("{}-agent-rs{i}", lab.prefix));
    let mut agents = Vec::new();
    for i in 1..=3 {
        std::fs::write(state(i), "up\n").unwrap();
        // The agents run in the real servers' namespaces (also killed at teardown).
        let agent = lab
            .cmd(&lab.rs_ns(i), "python3")
            .arg(lab.paths.root.join("tests/lab/agent.py"))
            .arg("10000")
            .arg(state(i))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        agents.push(agent);
    }
    let _lbd = Lbd::start(&lab, AGENT_CONFIG);
    // Three long downloads: rr puts one on each real server.
    let outs: Vec<_> = (0..3)
        .map(|n| std::env::temp_dir().join(format!("{}-dl{n}", lab.prefix)))
        .collect();
    let downloads: Vec<Child> = outs
        .iter()
        .map(|o| {
            let c = lab
                .cmd(&lab.ns("client"), "curl")
                .args(["-sS", "--max-time", "30", "-o"])
                .arg(o)
                .arg(format!("http://{}/slow?s=5", lab::VIP))
                .spawn()
                .unwrap();
            sleep(Duration::from_millis(200));
            c
        })
        .collect();
    // rs2's agent says drain.
    std::fs::write(state(2), "drain\n").unwrap();
    sleep(Duration::from_millis(1500));
    let seen = tally(&lab, 9);
    assert_eq!(
        seen.get("rs2"),
        None,
        "a draining server got new connections: {seen:?}"
    );
    let list = lab.lbadm(&["-L", "-n", "--health"]).unwrap();
    let row = list
        .lines()
        .find(|l| l.contains("192.0.2.12:80"))
        .unwrap()
        .to_string();
    assert!(
        row.contains("Route   0 ") && row.contains("agent: drain"),
        "{row}"
    );
    // ...while its established download finishes.
    let mut finished = BTreeMap::new();
    for (mut c, o) in downloads.into_iter().zip(&outs) {
        assert!(c.wait().unwrap().success());
        let body = std::fs::read_to_string(o).unwrap();
        let _ = std::fs::remove_file(o);
        let who = body
            .lines()
            .last()
            .unwrap_or("")
            .trim_end_matches(" done")
            .to_string();
        *finished.entry(who).or_insert(0) += 1;
    }
    assert_eq!(finished.get("rs2"), Some(&1), "{finished:?}");
    // Back to up: rs2 receives new connections again.
    std::fs::write(state(2), "up\n").unwrap();
    wait_for(Duration::from_secs(10), || {
        (0..3).any(|_| {
            lab.curl_vip("/", 3)
                .map(|b| b.trim() == "rs2")
                .unwrap_or(false)
        })
    })
    .expect("rs2 back after its agent said up");
    for i in 1..=3 {
        let _ = std::fs::remove_file(state(i));
    }
    for mut a in agents {
        let _ = a.kill();
        let _ = a.wait();
    }
}

const WRR_CONFIG: &str = r#"
services:
  - protocol: tcp
    address: 192.0.2.100
    port: 80
    scheduler: wrr
    real_servers:
      - {address: 192.0.2.11, weight: 3}
      - {address: 192.0.2.12, weight: 1}
      - {address: 192.0.2.13, weight: 0}
"#;

#[test]
#[ignore = "needs root and namespaces: run with `cargo xtask test`"]
fn wrr_splits_by_weight_and_persistence_pins_a_client() {
    let lab = lab();
    let _lbd = Lbd::start(&lab, WRR_CONFIG);
    let tally = |n: u32| tally(&lab, n);
    // 3:1:0 — about 3:1, never the weight-0 server.
    let m = tally(40);
    assert_eq!(m.get("rs3"), None, "{m:?}");
    let (a, b) = (
        m.get("rs1").copied().unwrap_or(0),
        m.get("rs2").copied().unwrap_or(0),
    );
    assert_eq!(a + b, 40);
    assert!((26..=34).contains(&a), "expected about 30:10, got {m:?}");
    // Made persistent (rr, -p 60): every connection of the client now goes
    // to one real server, although rr alone would rotate.
    lab.lbadm(&["-E", "-t", "192.0.2.100:80", "-s", "rr", "-p", "60"])
        .unwrap();
    lab.lbadm(&[
        "-e",
        "-t",
        "192.0.2.100:80",
        "-r",
        "192.0.2.13",
        "-g",
        "-w",
        "1",
    ])
    .unwrap();
    let m = tally(15);
    assert_eq!(m.len(), 1, "a persistent client moved: {m:?}");
    let conns = lab.lbadm(&["-L", "-n", "-c"]).unwrap();
    assert!(
        conns
            .lines()
            .any(|l| l.contains("203.0.113.10:0 ") && l.contains(" NONE ")),
        "no template in -Lnc:\n{conns}"
    );
    let list = lab.lbadm(&["-L", "-n"]).unwrap();
    assert!(
        list.contains("TCP  192.0.2.100:80 rr persistent 60"),
        "{list}"
    );
}

#[test]
#[ignore = "needs root and namespaces: run with `cargo xtask test`"]
fn rules_restored_from_ipvsadm_save_forward_and_apply_keeps_live_connections() {
    let lab = lab();
    // lbd starts empty; the table comes from an ipvsadm-save file.
    let _lbd = Lbd::start(&lab, "services: []\n");
    let save = "\
-A -t 192.0.2.100:80 -s rr
-a -t 192.0.2.100:80 -r 192.0.2.11:80 -g -w 1
-a -t 192.0.2.100:80 -r 192.0.2.12:80 -g -w 1
-a -t 192.0.2.100:80 -r 192.0.2.13:80 -g -w 1
";
    let mut child = std::process::Command::new(paths().lbadm())
        .args(["-R", "--socket"])
        .arg(lab.socket())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(save.as_bytes())
            .unwrap();
    }
    assert!(child.wait().unwrap().success(), "lbadm -R failed");
    // -Sn gives the same rules back, and they forward real traffic.
    assert_eq!(lab.lbadm(&["-S", "-n"]).unwrap(), save);
    wait_for(Duration::from_secs(10), || {
        lab.curl_vip("/", 2).is_ok_and(|b| b.starts_with("rs"))
    })
    .expect("the restored service forwards");
    let m = tally(&lab, 30);
    assert_eq!(m.len(), 3, "every real server answers: {m:?}");
    // A download in flight on each real server (rr over 3 connections).
    let outs: Vec<std::path::PathBuf> = (0..3)
        .map(|i| std::env::temp_dir().join(format!("{}-apply{i}.out", lab.prefix)))
        .collect();
    let mut curls: Vec<Child> = outs
        .iter()
        .map(|o| {
            lab.cmd(&lab.ns("client"), "curl")
                .args(["-sS", "--max-time", "30", "-o"])
                .arg(o)
                .arg(format!("http://{}/slow?s=4", lab::VIP))
                .spawn()
                .unwrap()
        })
        .collect();
    sleep(Duration::from_millis(1000));
    // lbadm apply: new weights (one server quiesced) and a new scheduler.
    let cfg = std::env::temp_dir().join(format!("{}-apply.yaml", lab.prefix));
    std::fs::write(
        &cfg,
        "services:\n  - protocol: tcp\n    address: 192.0.2.100\n    port: 80\n    scheduler: wrr\n    real_servers:\n      - {address: 192.0.2.11, weight: 3}\n      - {address: 192.0.2.12, weight: 1}\n      - {address: 192.0.2.13, weight: 0}\n",
    )
    .unwrap();
    let dry = lab
        .lbadm(&["apply", "-f", cfg.to_str().unwrap(), "--dry-run"])
        .unwrap();
    assert!(
        dry.contains("~ real 192.0.2.13 of tcp 192.0.2.100:80: weight 1 -> 0"),
        "{dry}"
    );
    assert!(
        lab.lbadm(&["-S", "-n"]).unwrap().contains("-s rr"),
        "dry run changed nothing"
    );
    let applied = lab.lbadm(&["apply", "-f", cfg.to_str().unwrap()]).unwrap();
    assert!(applied.contains("scheduler rr -> wrr"), "{applied}");
    // Every established download finishes on its real server.
    for (c, o) in curls.iter_mut().zip(&outs) {
        assert!(c.wait().unwrap().success(), "a transfer broke during apply");
        let got = std::fs::read_to_string(o).unwrap();
        let _ = std::fs::remove_file(o);
        assert_eq!(
            got.len(),
            40 * 1024 + "rsN done\n".len(),
            "truncated transfer"
        );
    }
    let _ = std::fs::remove_file(&cfg);
    // New connections follow the new weights: never the quiesced server.
    let m = tally(&lab, 20);
    assert!(!m.contains_key("rs3"), "{m:?}");
    // export reproduces the applied state.
    let exported = lab.lbadm(&["export"]).unwrap();
    assert!(exported.contains("scheduler: wrr"), "{exported}");
    assert!(exported.contains("weight: 3"), "{exported}");
}

/// Extra rs_server.py instances (a port of every real server), killed on drop.
struct ExtraServers(Vec<Child>);

impl ExtraServers {
    fn start(lab: &Lab, port: u16) -> ExtraServers {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        ExtraServers(
            (1..=3)
                .map(|i| {
                    lab.cmd(&lab.rs_ns(i), "python3")
                        .arg(root.join("tests/lab/rs_server.py"))
                        .arg(format!("rs{i}"))
                        .arg(port.to_string())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}

impl Drop for ExtraServers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
#[ignore = "needs root and namespaces: run with `cargo xtask test`"]
fn a_port_group_pins_a_client_across_ports_and_lc_spreads_long_connections() {
    let lab = lab();
    let _s8080 = ExtraServers::start(&lab, 8080);
    let _s8081 = ExtraServers::start(&lab, 8081);
    let _lbd = Lbd::start(
        &lab,
        r#"
port_groups:
  - name: web
    fwmark: 7
    members:
      - {protocol: tcp, address: 192.0.2.100, port: 80}
      - {protocol: tcp, address: 192.0.2.100, port: 8080}
services:
  - port_group: web
    scheduler: rr
    persistent: 300
    real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]
  - protocol: tcp
    address: 192.0.2.100
    port: 8081
    scheduler: lc
    real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}, {address: 192.0.2.13}]
"#,
    );
    let get = |port: u16, path: &str, max: u32| {
        lab.exec_out(
            &lab.ns("client"),
            &[
                "curl",
                "-sS",
                "--max-time",
                &max.to_string(),
                &format!("http://{}:{port}{path}", lab::VIP),
            ],
        )
    };
    wait_for(Duration::from_secs(10), || get(8080, "/", 2).is_ok()).expect("port 8080 answers");
    // Every connection of the client, on either port of the group, reaches
    // the real server its template names (rr alone would rotate).
    let mut seen = BTreeMap::<String, u32>::new();
    for i in 0..12 {
        let port = if i % 2 == 0 { 80 } else { 8080 };
        let body = get(port, "/", 5).expect("request through the group");
        *seen.entry(body.trim().to_string()).or_default() += 1;
    }
    assert_eq!(
        seen.len(),
        1,
        "one real server for the client on both ports: {seen:?}"
    );
    let conns = lab.lbadm(&["-L", "-n", "-c"]).unwrap();
    assert!(
        conns.contains("IP  ") && conns.contains("0.0.0.7:0"),
        "the group's template:\n{conns}"
    );
    // lc: six long downloads started one after another spread 2/2/2.
    let mut curls: Vec<Child> = (0..6)
        .map(|_| {
            let c = lab
                .cmd(&lab.ns("client"), "curl")
                .args(["-sS", "--max-time", "30", "-o", "/dev/null"])
                .arg(format!("http://{}:8081/slow?s=4", lab::VIP))
                .spawn()
                .unwrap();
            sleep(Duration::from_millis(250));
            c
        })
        .collect();
    let listing: serde_json::Value =
        serde_json::from_str(&lab.lbadm(&["-L", "-n", "-o", "json"]).unwrap()).unwrap();
    let svc = listing["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["spec"]["addr"]["port"] == 8081)
        .unwrap();
    let live: Vec<u64> = svc["reals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["active_conns"].as_u64().unwrap() + r["inactive_conns"].as_u64().unwrap())
        .collect();
    assert_eq!(
        live,
        vec![2, 2, 2],
        "lc spreads long-lived connections evenly"
    );
    for c in &mut curls {
        assert!(c.wait().unwrap().success());
    }
}
