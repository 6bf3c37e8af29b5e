//! lbd restarting, failing to start, or started twice: the pinned data
//! plane keeps forwarding, new connections included.

use std::time::Duration;

use xtask::lab::wait_for;

use crate::{support::*, tests, Test};

/// Ten restarts (SIGTERM, start, ready) while the client opens 2,000 new
/// connections per second: not one SYN is dropped.
fn restarts_under_load_drop_no_new_connection() {
    let lab = lab();
    let mut lbd = Lbd::start(&lab, RR_CONFIG);
    let before = counters(&lab);
    let load = SynLoad::start(&lab, 100_000);
    // The load is flowing before the first restart.
    wait_for(Duration::from_secs(10), || {
        counters(&lab).get("conn_new") > before.get("conn_new")
    })
    .expect("SYNs reach the director");
    for _ in 0..10 {
        lbd.stop();
        lbd.restart();
    }
    let tx_before_stop = counters(&lab)["tx"];
    drop(load);
    let after = counters(&lab);
    for c in ["drop_no_real", "drop_unresolved", "drop_malformed"] {
        assert_eq!(
            after[c] - before.get(c).copied().unwrap_or(0),
            0,
            "{c} across 10 restarts under load: {after:?}"
        );
    }
    assert!(
        tx_before_stop - before["tx"] > 5_000,
        "the load went through the director: {after:?}"
    );
}

/// Without `--config` a restart serves what ran before: the running state
/// it saved (ipvsadm-style changes and timeouts included), or, with no
/// saved state, the table the pinned maps serve.
fn a_restart_without_config_serves_what_ran_before() {
    let lab = lab();
    let mut lbd = Lbd::start(&lab, RR_CONFIG);
    lab.lbadm(&["-e", "-t", "192.0.2.100:80", "-r", "192.0.2.12", "-g", "-w", "0"])
        .unwrap();
    lab.lbadm(&["--set", "3600", "0", "0"]).unwrap();
    let rules = lab.lbadm(&["-S", "-n"]).unwrap();
    let timeouts = lab.lbadm(&["-L", "--timeout"]).unwrap();
    assert!(rules.contains("-r 192.0.2.12:80 -g -w 0"), "{rules}");
    lbd.kill();
    lbd.restart_without_config();
    assert_eq!(lab.lbadm(&["-S", "-n"]).unwrap(), rules);
    assert_eq!(lab.lbadm(&["-L", "--timeout"]).unwrap(), timeouts);
    let seen = tally(&lab, 8);
    assert_eq!(seen.get("rs2"), None, "the quiesced server got new connections: {seen:?}");
    assert_eq!(seen.values().sum::<u32>(), 8);
    // No saved state: the pinned maps' table (weights in force).
    lbd.kill();
    std::fs::remove_file(lab.state_file()).unwrap();
    lbd.restart_without_config();
    assert_eq!(lab.lbadm(&["-S", "-n"]).unwrap(), rules);
    let log = std::fs::read_to_string(lab.lbd_log()).unwrap();
    assert!(log.contains("read back from the pinned maps"), "{log}");
    assert_eq!(tally(&lab, 4).get("rs2"), None);
}

pub const TESTS: &[Test] = tests![
    restarts_under_load_drop_no_new_connection,
    a_restart_without_config_serves_what_ran_before,
];
