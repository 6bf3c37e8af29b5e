//! Schedulers and persistence with real clients.

use std::{collections::BTreeMap, process::Child, time::Duration};

use xtask::lab::{self, wait_for};

use crate::{support::*, tests, Test};

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
    let active = conn_counts(&lab).0;
    let mut curls: Vec<Child> = (0..6)
        .map(|i| {
            let c = lab
                .cmd(&lab.ns("client"), "curl")
                .args(["-sS", "--max-time", "30", "-o", "/dev/null"])
                .arg(format!("http://{}:8081/slow?s=4", lab::VIP))
                .spawn()
                .unwrap();
            // lc sees each one before the next arrives.
            wait_for(Duration::from_secs(10), || conn_counts(&lab).0 > active + i)
                .expect("download established");
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

pub const TESTS: &[Test] = tests![
    wrr_splits_by_weight_and_persistence_pins_a_client,
    a_port_group_pins_a_client_across_ports_and_lc_spreads_long_connections,
];
