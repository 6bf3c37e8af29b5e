//! A pair of directors under VRRP: one master holds the VIP and forwards,
//! the backup stands by; failures, restarts and hand-overs move the VIP as
//! they should, and a real keepalived elects with lbd as with itself.

use std::time::{Duration, Instant};

use xtask::{
    halab::HaLab,
    lab::{wait_for, Downloads, VIP},
    paths,
};

use crate::{support::*, tests, Test};

/// The pair's configuration: director `prio`, adverts every 200 ms (a
/// takeover after ~0.7 s: room for a loaded machine's stalls).
fn pair_config(prio: u8) -> String {
    format!(
        "vrrp:\n  - {{name: web, virtual_router_id: 51, priority: {prio}, advert_int: 20, garp_master_delay: 1, virtual_addresses: [{VIP}]}}\n{RR_CONFIG}"
    )
}

/// `pair_config` with the web console's monitor (read-only, no users) on
/// director `i`'s address.
fn pair_config_with_console(prio: u8, i: usize) -> String {
    let ip = xtask::halab::DIRECTOR_IPS[i];
    format!(
        "metrics: {{listen: \"{ip}:9469\"}}\nconsole: {{}}\n{}",
        pair_config(prio)
    )
}

/// The VRRP state director `i`'s console shows (from the lab's router).
fn console_vrrp_state(h: &HaLab, i: usize) -> String {
    let ip = xtask::halab::DIRECTOR_IPS[i];
    let out = h
        .lab
        .exec_out(
            &h.lab.ns("router"),
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                &format!("http://{ip}:9469/api/state"),
            ],
        )
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    v["vrrp"][0]["state"].as_str().unwrap_or("").to_string()
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
impl Killed {
    /// SIGTERM, as systemd stops a service, and wait.
    fn term(mut self) {
        for c in &mut self.0 {
            let _ = std::process::Command::new("kill")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }
}
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
        h.start_lbd(0, &pair_config_with_console(150, 0)).unwrap(),
        h.start_lbd(1, &pair_config_with_console(100, 1)).unwrap(),
    ]);
    h.wait_ready(0).unwrap();
    h.wait_ready(1).unwrap();
    wait_holder(&h, 0, Duration::from_secs(10));
    assert_eq!(
        (h.state(0).as_str(), h.state(1).as_str()),
        ("master", "backup")
    );
    // Each director's console shows its side (polled: a second's reuse).
    wait_for(Duration::from_secs(5), || {
        console_vrrp_state(&h, 0) == "master" && console_vrrp_state(&h, 1) == "backup"
    })
    .unwrap_or_else(|_| {
        panic!(
            "consoles say {:?} / {:?}",
            console_vrrp_state(&h, 0),
            console_vrrp_state(&h, 1)
        )
    });
    // The page shows the router: state, heartbeat, when a backup assumes
    // the master dead (3 adverts and the skew of priority 150).
    let mut b = crate::browser::Browser::start(&h.lab, &h.lab.ns("router"));
    b.goto("http://192.0.2.2:9469/console");
    b.wait(
        "document.querySelector('tr[data-vrrp=web]')?.innerText.includes('master')",
        "the VRRP row",
    );
    let row = b.text("tr[data-vrrp=web]");
    assert!(
        row.contains("0.2 s") && row.contains("0.68 s") && row.contains(VIP),
        "{row}"
    );
    let errors = b.errors();
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");
    drop(b);
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
    wait_for(Duration::from_secs(5), || {
        console_vrrp_state(&h, 1) == "master"
    })
    .expect("the new master's console says master");
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

/// A planned restart of the master's lbd (SIGTERM, start) does not move
/// the VIP, however long it was master: the last advert tells the backup
/// (VRRPv3 adopts the interval) to wait, the new lbd resumes as master from
/// the record the stopping one wrote, and new connections keep working.
fn a_planned_restart_of_the_master_keeps_mastership() {
    let h = ha_lab();
    let mut lbds = Killed(vec![
        h.start_lbd(0, &pair_config(150)).unwrap(),
        h.start_lbd(1, &pair_config(100)).unwrap(),
    ]);
    h.wait_ready(0).unwrap();
    h.wait_ready(1).unwrap();
    wait_holder(&h, 0, Duration::from_secs(10));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen_on_backup = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut seen = false;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                seen |= h.holds_vip(1);
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
        });
        let record = format!("/run/lbd/{}.vrrp.json", h.dirs[0].instance);
        for _ in 0..3 {
            // Master for long before the restart: the record's time of the
            // last transition is old (the stopping lbd records the hold).
            std::fs::write(&record, r#"{"web":["master",0]}"#).unwrap();
            let mut c = lbds.0.remove(0);
            let _ = std::process::Command::new("kill")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
            lbds.0.insert(0, h.start_lbd(0, &pair_config(150)).unwrap());
            h.wait_ready(0).unwrap();
            assert!(
                h.lab.curl_vip("/", 2).is_ok(),
                "a new connection after the restart"
            );
        }
        // Some adverts at the normal interval again.
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        watcher.join().unwrap()
    });
    assert!(
        !seen_on_backup,
        "the backup took the VIP during a planned restart"
    );
    assert_eq!(holder(&h), Some(0));
    assert_eq!(
        (h.state(0).as_str(), h.state(1).as_str()),
        ("master", "backup")
    );
}

/// `lbadm vrrp release` hands over at once (the backup waits only its
/// skew), the released director stays backup, and `resume` lets it
/// preempt again.
fn release_hands_over_at_once_and_resume_takes_back() {
    let h = ha_lab();
    let _lbds = Killed(vec![
        h.start_lbd(0, &pair_config(150)).unwrap(),
        h.start_lbd(1, &pair_config(100)).unwrap(),
    ]);
    h.wait_ready(0).unwrap();
    h.wait_ready(1).unwrap();
    wait_holder(&h, 0, Duration::from_secs(10));
    let out = h.lbadm(0, &["vrrp", "release"]).unwrap();
    assert!(out.contains("RELEASED") || out.contains("BACKUP"), "{out}");
    let took = wait_holder(&h, 1, Duration::from_secs(2));
    eprintln!("hand-over after {took:?}");
    assert!(h.lab.curl_vip("/", 2).is_ok());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        holder(&h),
        Some(1),
        "the released director must not preempt"
    );
    h.lbadm(0, &["vrrp", "resume"]).unwrap();
    wait_holder(&h, 0, Duration::from_secs(3));
    assert!(h.lab.curl_vip("/", 2).is_ok());
}

/// A real keepalived (VRRPv3, its VRRP part only) and lbd elect by
/// priority in both directions and neither flaps.
fn lbd_and_keepalived_elect_the_same_master() {
    let h = ha_lab();
    let dir = std::env::temp_dir().join(format!("{}-ka", h.lab.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    let ka_conf = |prio: u8| {
        format!(
            "global_defs {{\n  router_id ka\n  vrrp_version 3\n}}\nvrrp_instance web {{\n  state BACKUP\n  interface eth1\n  virtual_router_id 51\n  priority {prio}\n  advert_int 0.1\n  garp_master_delay 1\n  virtual_ipaddress {{\n    {VIP}/32\n  }}\n}}\n"
        )
    };
    let start_ka = |prio: u8| {
        let conf = dir.join("keepalived.conf");
        std::fs::write(&conf, ka_conf(prio)).unwrap();
        h.lab
            .cmd(&h.dirs[1].ns, "keepalived")
            .args(["-P", "-n", "-l", "-D", "-f"])
            .arg(&conf)
            .arg("-p")
            .arg(dir.join("keepalived.pid"))
            .arg("-r")
            .arg(dir.join("vrrp.pid"))
            .env("TMPDIR", &dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("keepalived")
    };
    let stable = |i: usize| {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(2) {
            assert_eq!(holder(&h), Some(i), "flapped after {:?}", t0.elapsed());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // lbd 150, keepalived 100: lbd is master.
    let lbd = Killed(vec![h.start_lbd(0, &pair_config(150)).unwrap()]);
    h.wait_ready(0).unwrap();
    let ka = Killed(vec![start_ka(100)]);
    wait_holder(&h, 0, Duration::from_secs(10));
    stable(0);
    assert_eq!(h.state(0), "master");
    // lbd hands over: keepalived takes the VIP, lbd follows it.
    h.lbadm(0, &["vrrp", "release"]).unwrap();
    wait_holder(&h, 1, Duration::from_secs(3));
    stable(1);
    let v: serde_json::Value =
        serde_json::from_str(&h.lbadm(0, &["vrrp", "--json"]).unwrap()).unwrap();
    assert_eq!(v[0]["master"], serde_json::json!("192.0.2.3"), "{v}");
    assert!(
        v[0]["refused"].as_object().is_none_or(|o| o.is_empty()),
        "{v}"
    );
    // Both stop cleanly (lbd released, so it holds nothing; keepalived
    // hands over with priority 0 and removes the VIP).
    lbd.term();
    ka.term();
    wait_for(Duration::from_secs(3), || {
        !h.holds_vip(0) && !h.holds_vip(1)
    })
    .unwrap();
    // keepalived 200, lbd 150: keepalived is master, lbd backup.
    let ka = Killed(vec![start_ka(200)]);
    wait_holder(&h, 1, Duration::from_secs(10));
    let lbd = Killed(vec![h.start_lbd(0, &pair_config(150)).unwrap()]);
    h.wait_ready(0).unwrap();
    stable(1);
    assert_eq!(h.state(0), "backup");
    // keepalived stops (priority 0 on its way out): lbd takes over.
    ka.term();
    wait_holder(&h, 0, Duration::from_secs(3));
    stable(0);
    drop(lbd);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The backup stats of director `i`'s sync daemon (applied records).
fn sync_applied(h: &HaLab, i: usize) -> u64 {
    let text = h.lbadm(i, &["-L", "-n", "-o", "json"]).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    v["sync"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["role"] == "backup")
        .map(|d| d["stats"]["applied"].as_u64().unwrap_or(0))
        .sum()
}

/// 100 downloads of 5 s through the master; its NIC fails 1.5 s in: the
/// backup, which the sync daemon told of every connection, takes over and
/// every download completes byte-exact through it.
fn a_failover_loses_no_established_flow() {
    let h = ha_lab();
    let cfg = |p| format!("sync: {{syncid: 7}}\n{}", pair_config(p));
    let _lbds = Killed(vec![
        h.start_lbd(0, &cfg(150)).unwrap(),
        h.start_lbd(1, &cfg(100)).unwrap(),
    ]);
    h.wait_ready(0).unwrap();
    h.wait_ready(1).unwrap();
    wait_holder(&h, 0, Duration::from_secs(10));
    let d = Downloads::start(&h.lab, "ha", 100, 5);
    // Every connection is known to the backup.
    wait_for(Duration::from_secs(10), || sync_applied(&h, 1) >= 100)
        .unwrap_or_else(|_| panic!("the backup learned {} connections", sync_applied(&h, 1)));
    std::thread::sleep(Duration::from_millis(1500));
    let lan = h.lab.ns("lan");
    h.lab
        .exec(&lan, &["ip", "link", "set", "p-dir", "down"])
        .unwrap();
    let took = wait_holder(&h, 1, Duration::from_secs(5));
    let (lost, _) = d.finish();
    eprintln!(
        "takeover after {took:?}; {} of 100 transfers lost",
        lost.len()
    );
    assert!(lost.is_empty(), "{lost:?}");
    assert!(
        h.lab.curl_vip("/", 2).is_ok(),
        "new connections through the new master"
    );
}

/// Priority follows health: a tracked check failing on the master lowers
/// its priority below the backup's, which takes over; the check passing
/// again gives the master its priority back and it preempts.
fn a_failing_tracked_check_hands_the_vip_over_and_back() {
    let h = ha_lab();
    let flag = std::env::temp_dir().join(format!("{}-fail", h.lab.prefix));
    let _ = std::fs::remove_file(&flag);
    let tracked = pair_config(150).replace(
        "garp_master_delay: 1,",
        &format!(
            "garp_master_delay: 1, track: {{checks: [{{command: [sh, -c, \"test ! -e {}\"], interval: 0.2, weight: -100}}]}},",
            flag.display()
        ),
    );
    let _lbds = Killed(vec![
        h.start_lbd(0, &tracked).unwrap(),
        h.start_lbd(1, &pair_config(100)).unwrap(),
    ]);
    h.wait_ready(0).unwrap();
    h.wait_ready(1).unwrap();
    wait_holder(&h, 0, Duration::from_secs(10));
    std::fs::write(&flag, "").unwrap();
    wait_holder(&h, 1, Duration::from_secs(5));
    let v: serde_json::Value =
        serde_json::from_str(&h.lbadm(0, &["vrrp", "--json"]).unwrap()).unwrap();
    assert_eq!(v[0]["effective_priority"], serde_json::json!(50), "{v}");
    std::fs::remove_file(&flag).unwrap();
    wait_holder(&h, 0, Duration::from_secs(5));
    assert!(h.lab.curl_vip("/", 2).is_ok());
}

pub const TESTS: &[Test] = tests![
    a_failing_tracked_check_hands_the_vip_over_and_back,
    a_failover_loses_no_established_flow,
    the_pair_elects_one_master_and_fails_over,
    a_planned_restart_of_the_master_keeps_mastership,
    release_hands_over_at_once_and_resume_takes_back,
    lbd_and_keepalived_elect_the_same_master,
];
