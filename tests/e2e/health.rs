//! Health checks against real servers that fail, recover and drain.

use std::{
    collections::BTreeMap,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use xtask::{
    lab::{self, wait_for, Lab},
    paths,
};

use crate::{support::*, tests, Test};

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
        // A checked server is listed up from its first passing probe (an
        // unchecked one shows `-`): never having failed is not "unknown".
        wait_for(Duration::from_secs(5), || {
            (1..=3).all(|i| {
                let row = health_row(&lab, &format!("192.0.2.1{i}:80"));
                row.split_whitespace().nth(6) == Some("up")
            })
        })
        .unwrap_or_else(|_| panic!("{}", lbadm(&["-L", "-n", "--health"])));
        let json: serde_json::Value =
            serde_json::from_str(&lbadm(&["-L", "-n", "-o", "json"])).unwrap();
        let h = &json["services"][0]["reals"][0]["health"];
        assert_eq!(h["up"], serde_json::Value::Bool(true), "{json}");

        // Stop rs2's HTTP server; within fall x interval (+ one timeout and
        // one interval of phase) no new connection reaches it.
        lab.stop_rs_http(2);
        let killed = Instant::now();
        // fall x interval + one timeout = 1.5 s.
        wait_for(Duration::from_secs(10), || {
            health_row(&lab, "192.0.2.12:80").contains("down")
        })
        .unwrap_or_else(|_| panic!("rs2 not taken out: {}", lbadm(&["-L", "-n", "--health"])));
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
        .enumerate()
        .map(|(i, o)| {
            let c = lab
                .cmd(&lab.ns("client"), "curl")
                .args(["-sS", "--max-time", "30", "-o"])
                .arg(o)
                .arg(format!("http://{}/slow?s=5", lab::VIP))
                .spawn()
                .unwrap();
            // Each one established before the next starts.
            wait_for(Duration::from_secs(10), || conn_counts(&lab).0 > i as u64)
                .expect("download established");
            c
        })
        .collect();
    // rs2's agent says drain.
    std::fs::write(state(2), "drain\n").unwrap();
    wait_for(Duration::from_secs(10), || {
        health_row(&lab, "192.0.2.12:80").contains("Route   0 ")
    })
    .unwrap_or_else(|_| panic!("rs2 not drained: {}", health_row(&lab, "192.0.2.12:80")));
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

/// lbd's log, as text and as JSON lines: a health transition is logged
/// once, with the real server and the check's reason; no terminal colour
/// codes in a file.
fn a_health_transition_is_logged_once_with_its_reason_as_text_or_json() {
    let lab = lab();
    let config = std::env::temp_dir().join(format!("{}-lbd-logs.yaml", lab.prefix));
    std::fs::write(&config, CHECKED_CONFIG).unwrap();
    for format in ["text", "json"] {
        let mut lbd = lab
            .start_lbd(&config, &["--xdp-mode", "native", "--log-format", format])
            .unwrap();
        lab.wait_lbd_ready(Duration::from_secs(20)).unwrap();
        wait_for(Duration::from_secs(5), || {
            health_row(&lab, "192.0.2.12:80").split_whitespace().nth(6) == Some("up")
        })
        .unwrap_or_else(|_| panic!("{format}: rs2 never up"));
        lab.stop_rs_http(2);
        let log = || std::fs::read_to_string(lab.lbd_log()).unwrap_or_default();
        let downs = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.contains("real server DOWN") && l.contains("192.0.2.12"))
                .map(String::from)
                .collect()
        };
        let seen = wait_for(Duration::from_secs(10), || !downs(&log()).is_empty());
        // Two more check intervals: still one line for one transition.
        std::thread::sleep(Duration::from_secs(1));
        let _ = lbd.kill();
        let _ = lbd.wait();
        lab.start_rs_http(2).unwrap();
        let text = log();
        seen.unwrap_or_else(|_| panic!("{format}: no DOWN line in\n{text}"));
        assert!(
            !text.contains('\x1b'),
            "{format}: colour codes in a file:\n{text}"
        );
        let lines = downs(&text);
        assert_eq!(lines.len(), 1, "{format}: {lines:?}");
        assert!(
            lines[0].contains("connection refused"),
            "{format}: {}",
            lines[0]
        );
        if format == "json" {
            for l in text.lines().filter(|l| !l.trim().is_empty()) {
                let v: serde_json::Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
                assert!(v["level"].is_string() && v["message"].is_string(), "{l}");
            }
            let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
            assert_eq!(v["real"], "192.0.2.12", "{v}");
            assert_eq!(v["service"], "tcp 192.0.2.100:80", "{v}");
        }
    }
    lab.unload_lbd();
}

pub const TESTS: &[Test] = tests![
    a_health_transition_is_logged_once_with_its_reason_as_text_or_json,
    a_failed_real_server_leaves_and_rejoins_by_itself,
    a_draining_agent_gets_no_new_connections_while_established_ones_finish,
];
