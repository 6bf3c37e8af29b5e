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

pub const TESTS: &[Test] = tests![restarts_under_load_drop_no_new_connection];
