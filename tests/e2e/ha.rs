//! A pair of directors under VRRP: one master holds the VIP and forwards,
//! the backup stands by; failures, restarts and hand-overs move the VIP as
//! they should, and a real keepalived elects with lbd as with itself.

use std::time::{Duration, Instant};

use xtask::{
    halab::HaLab,
    lab::{wait_for, VIP},
    paths,
};

use crate::{support::*, tests, Test};

/// The pair's configuration: director `prio`, adverts every 100 ms.
fn pair_config(prio: u8) -> String {
    format!(
        "vrrp:\n  - {{name: web, virtual_router_id: 51, priority: {prio}, advert_int: 10, garp_master_delay: 1, virtual_addresses: [{VIP}]}}\n{RR_CONFIG}"
    )
}

fn ha_lab() -> HaLab {
    let prefix = format!(
        "lbe2e{}{}",
        std::process::id() % 1000,
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    HaLab::up(&prefix, paths()).expect("HA lab up")
}

/// Exactly one director holds the VIP: which (None while none or both do).
fn holder(h: &HaLab) -> Option<usize> {
    match (h.holds_vip(0), h.holds_vip(1)) {
        (true, false) => Some(0),
        (false, true) => Some(1),
        _ => None,
    }
}

fn wait_holder(h: &HaLab, i: usize, within: Duration) -> Duration {
    let t0 = Instant::now();
    wait_for(within, || holder(h) == Some(i)).unwrap_or_else(|_| {
        panic!(
            "director {i} did not become the only VIP holder within {within:?}: {:?} / {:?}",
            h.lbadm(0, &["vrrp"]),
            h.lbadm(1, &["vrrp"])
        )
    });
    t0.elapsed()
}

struct Killed(Vec<std::process::Child>);
impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The higher priority becomes master and forwards; its NIC failing hands
/// the VIP to the backup within the master-down interval, and new
/// connections work through it.
fn the_pair_elects_one_master_and_fails_over() {
    let h = ha_lab();
    let lbds = Killed(vec![
        h.start_lbd(0, &pair_config(150)).unwrap(),
        h.start_lbd(1, &pair_config(100)).unwrap(),
    ]);
    h.wait_ready(0).unwrap();
    h.wait_ready(1).unwrap();
    wait_holder(&h, 0, Duration::from_secs(10));
    assert_eq!(
        (h.state(0).as_str(), h.state(1).as_str()),
        ("master", "backup")
    );
    assert_eq!(
        tally(&h.lab, 6).len(),
        3,
        "the master forwards to every real server"
    );
    // The master's link goes down: the backup takes over.
    let lan = h.lab.ns("lan");
    h.lab
        .exec(&lan, &["ip", "link", "set", "p-dir", "down"])
        .unwrap();
    let took = wait_holder(&h, 1, Duration::from_secs(5));
    eprintln!("takeover after {took:?}");
    wait_for(Duration::from_secs(5), || h.lab.curl_vip("/", 1).is_ok())
        .expect("new connections through the new master");
    assert_eq!(tally(&h.lab, 6).len(), 3);
    // The old master comes back and (preempting) takes the VIP back.
    h.lab
        .exec(&lan, &["ip", "link", "set", "p-dir", "up"])
        .unwrap();
    wait_holder(&h, 0, Duration::from_secs(10));
    assert_eq!(tally(&h.lab, 3).len(), 3);
    drop(lbds);
}

pub const TESTS: &[Test] = tests![the_pair_elects_one_master_and_fails_over];
