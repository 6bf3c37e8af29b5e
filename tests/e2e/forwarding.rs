//! Traffic through the director: replies bypass it, ARP suppression holds, and an established connection survives lbd being killed and restarted.

use std::time::Duration;

use xtask::{
    lab::{self, wait_for},
    paths,
};

use crate::{support::*, tests, Test};

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
    // Every reply went past the router; whatever reached the director did
    // too by then.
    router_cap.wait_lines(30);
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
    wait_for(Duration::from_secs(10), || file_len(&out_file) > 0).expect("the download started");
    lbd.kill();
    let at_kill = file_len(&out_file);
    // While lbd is down the pinned program keeps forwarding, new connections too.
    let body = lab
        .curl_vip("/", 5)
        .expect("new connection while lbd is down");
    assert!(body.starts_with("rs"), "{body}");
    // The transfer goes on while lbd is down.
    wait_for(Duration::from_secs(10), || file_len(&out_file) > at_kill)
        .expect("the download stalled while lbd was down");
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

/// Path MTU discovery through the director: the router's link to the
/// client carries 1,000 bytes, so the real servers' full-size segments make
/// it send "fragmentation needed" to the VIP; the director hands that to
/// the flow's real server, which sends smaller segments. Without it the
/// downloads stall (a black hole).
fn path_mtu_discovery_works_through_the_director() {
    let lab = lab();
    let _lbd = Lbd::start(&lab, RR_CONFIG);
    lab.exec(
        &lab.ns("router"),
        &["ip", "link", "set", "eth0", "mtu", "1000"],
    )
    .unwrap();
    for _ in 0..3 {
        let body = lab
            .curl_vip("/big?kb=200", 10)
            .expect("a download through a smaller MTU");
        assert_eq!(body.len(), 200 * 1024 + "rsN done\n".len());
    }
    let c = counters(&lab);
    assert!(c["icmp_forwarded"] > 0, "{c:?}");
}

pub const TESTS: &[Test] = tests![
    path_mtu_discovery_works_through_the_director,
    requests_reach_every_real_server_and_replies_bypass_the_director,
    an_established_connection_survives_killing_and_restarting_lbd,
];
