//! Real-server MACs follow the director's neighbour table through the
//! kernel's notifications: a new real server is served from its first ARP
//! reply, a changed MAC is followed at once, and a link flap keeps the
//! last-known MACs so that no new connection is lost when the link is back.

use std::time::{Duration, Instant};

use xtask::lab::wait_for;

use crate::{support::*, tests, Test};

/// The MAC the director lists for real server `addr` of the VIP's service,
/// and whether it is marked stale.
fn listed_mac(lab: &xtask::lab::Lab, addr: &str) -> (Option<String>, bool) {
    let text = lab.lbadm(&["-L", "-n", "-o", "json"]).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    for s in v["services"].as_array().into_iter().flatten() {
        for r in s["reals"].as_array().into_iter().flatten() {
            if r["spec"]["address"].as_str() == Some(addr) {
                return (
                    r["mac"].as_str().map(str::to_string),
                    r["mac_stale"].as_bool().unwrap_or(false),
                );
            }
        }
    }
    (None, false)
}

/// How long until the director lists `want` as the MAC of `addr` (at most
/// 3 s, polled every 10 ms).
fn time_to_mac(lab: &xtask::lab::Lab, addr: &str, want: &str) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        if listed_mac(lab, addr).0.as_deref() == Some(want) {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// A real server added at run time is used from its first ARP reply, and
/// a real server whose MAC changes (a replaced NIC announcing itself with
/// a gratuitous ARP) gets its traffic at the new MAC at once: the periodic
/// dump alone would take up to 10 s.
fn real_server_macs_follow_the_neighbour_table_at_once() {
    let lab = lab();
    let two = RR_CONFIG.replace("      - {address: 192.0.2.13}\n", "");
    let _lbd = Lbd::start(&lab, &two);
    let rs3_mac = lab.mac_of(&lab.rs_ns(3), "eth1").unwrap();
    lab.lbadm(&["-a", "-t", "192.0.2.100:80", "-r", "192.0.2.13", "-g"])
        .unwrap();
    let added = time_to_mac(&lab, "192.0.2.13", &rs3_mac);
    assert!(
        added.is_some_and(|t| t < Duration::from_secs(2)),
        "a new real server's MAC after {added:?}"
    );
    // rs1 changes its MAC and announces it (arp_notify).
    let ns = lab.rs_ns(1);
    lab.exec(&ns, &["sysctl", "-qw", "net.ipv4.conf.eth1.arp_notify=1"])
        .unwrap();
    let new_mac = "02:00:5e:10:00:01";
    lab.exec(&ns, &["ip", "link", "set", "eth1", "address", new_mac])
        .unwrap();
    let followed = time_to_mac(&lab, "192.0.2.11", new_mac);
    eprintln!("new real server MAC listed after {added:?}; changed MAC after {followed:?}");
    // The safety-net dump comes every 30 s once all is resolved: within
    // 2 s (listing by a fresh lbadm included) is the notification's doing.
    assert!(
        followed.is_some_and(|t| t < Duration::from_secs(2)),
        "a changed MAC followed after {followed:?}"
    );
    let answers = tally(&lab, 9);
    assert_eq!(answers.get("rs1"), Some(&3), "{answers:?}");
    assert_eq!(answers.get("rs3"), Some(&3), "{answers:?}");
    // Each change in force is logged once: the edit, rs3's MAC resolved,
    // rs1's MAC changed (old and new).
    let log = std::fs::read_to_string(lab.lbd_log()).unwrap();
    let lines = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    assert_eq!(
        lines("table edited by lbadm: + real 192.0.2.13"),
        1,
        "{log}"
    );
    assert_eq!(
        lines("real server's MAC resolved real=192.0.2.13"),
        1,
        "{log}"
    );
    let changed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("real server's MAC changed"))
        .collect();
    assert_eq!(changed.len(), 1, "{log}");
    assert!(
        changed[0].contains("real=192.0.2.11") && changed[0].contains(new_mac),
        "{log}"
    );
}

/// The director's link goes down for 5 s (longer than a failed ARP
/// resolution takes) under 2,000 new connections per second: the kernel
/// flushes its neighbours, lbd keeps the last-known MACs (listed stale,
/// then confirmed), and once the link is back not one SYN is dropped for
/// want of a real server.
fn a_link_flap_keeps_the_real_servers() {
    let lab = lab();
    let _lbd = Lbd::start(&lab, RR_CONFIG);
    assert_eq!(tally(&lab, 3).len(), 3);
    let before = counters(&lab);
    let load = SynLoad::start(&lab, 60_000); // 30 s at most, stopped on drop
    wait_for(Duration::from_secs(10), || {
        counters(&lab).get("conn_new") > before.get("conn_new")
    })
    .expect("SYNs reach the director");
    let lan = lab.ns("lan");
    lab.exec(&lan, &["ip", "link", "set", "p-dir", "down"])
        .unwrap();
    // The kernel flushed the entries; lbd kept the MACs, marked stale.
    let stale = wait_for(Duration::from_secs(5), || listed_mac(&lab, "192.0.2.11").1);
    let during = listed_mac(&lab, "192.0.2.11");
    std::thread::sleep(Duration::from_secs(5));
    lab.exec(&lan, &["ip", "link", "set", "p-dir", "up"])
        .unwrap();
    // Traffic flows again, and the entries are confirmed.
    let tx_up = counters(&lab)["tx"];
    wait_for(Duration::from_secs(10), || {
        counters(&lab)["tx"] > tx_up + 2_000
    })
    .expect("the load flows again after the link is back");
    let confirmed = wait_for(Duration::from_secs(5), || {
        (1..=3).all(|i| {
            let (mac, stale) = listed_mac(&lab, &format!("192.0.2.1{i}"));
            mac.is_some() && !stale
        })
    });
    drop(load);
    let after = counters(&lab);
    assert!(stale.is_ok(), "the MAC was not marked stale: {during:?}");
    assert!(during.0.is_some(), "the MAC was dropped during the flap");
    assert!(
        confirmed.is_ok(),
        "MACs not confirmed after the link came back"
    );
    for c in ["drop_no_real", "drop_unresolved"] {
        assert_eq!(
            after[c] - before.get(c).copied().unwrap_or(0),
            0,
            "{c} across a link flap: {after:?}"
        );
    }
    assert_eq!(tally(&lab, 3).len(), 3);
}

pub const TESTS: &[Test] = tests![
    real_server_macs_follow_the_neighbour_table_at_once,
    a_link_flap_keeps_the_real_servers,
];
