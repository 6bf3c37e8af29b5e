//! Several active directors behind the router's ECMP route, each announcing
//! the VIP by BGP through its own BIRD: announcements follow what a
//! director can serve and the operator's drain; a director failing or
//! joining moves flows between directors without losing one (mh by its
//! ring, identical on every director; wlc by many-to-many connection sync).

use std::time::{Duration, Instant};

use xtask::{
    ecmplab::EcmpLab,
    halab::DIRECTOR_IPS,
    lab::{wait_for, Downloads, VIP},
    paths,
};

use crate::{support::*, tests, Test};

fn ecmp_lab(n: usize) -> EcmpLab {
    let prefix = format!(
        "lbe2e{}{}",
        std::process::id() % 1000,
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    EcmpLab::up(&prefix, paths(), n).expect("ECMP lab up")
}

/// The three real servers under `sched` (mh: by client address and port,
/// so that the flows of the one lab client spread over them).
fn services(sched: &str) -> String {
    let s = if sched == "mh" {
        "mh\n    flags: [mh-port]".to_string()
    } else {
        sched.to_string()
    };
    RR_CONFIG.replace("scheduler: rr", &format!("scheduler: {s}"))
}

/// lbd processes, SIGKILLed on drop.
struct Lbds(Vec<(usize, std::process::Child)>);
impl Lbds {
    /// SIGTERM to director `i`'s lbd (as systemd stops it), and wait.
    fn term(&mut self, i: usize) {
        if let Some(p) = self.0.iter().position(|(d, _)| *d == i) {
            let (_, mut c) = self.0.remove(p);
            let _ = std::process::Command::new("kill")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }
}
impl Drop for Lbds {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Director `i` with its BIRD and lbd serving `yaml` (after its bgp:).
fn start(e: &EcmpLab, lbds: &mut Lbds, i: usize, yaml: &str, bird: bool) {
    if bird {
        e.start_director_bird(i).unwrap();
    }
    let cfg = format!("{}{yaml}", e.bgp_yaml(i));
    lbds.0.push((i, e.h.start_lbd(i, &cfg).unwrap()));
    e.h.wait_ready(i).unwrap();
}

fn bgp_json(e: &EcmpLab, i: usize, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["bgp", "--json"];
    a.extend_from_slice(args);
    let text = e.h.lbadm(i, &a).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{err}: {text}"))
}

/// The router's route to the VIP through director `who` (BIRD's "since"
/// time tells whether it was withdrawn and announced again).
fn route_line(e: &EcmpLab, who: &str) -> String {
    let out = std::process::Command::new("birdc")
        .arg("-s")
        .arg(e.bird_socket("router"))
        .args(["show", "route", "for", VIP])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains(&format!("[{who} ")))
        .unwrap_or_default()
        .to_string()
}

/// Announced while the director can serve: drained and resumed by lbadm
/// (the drain kept across a restart), withdrawn when its service loses its
/// quorum, kept (not even re-announced) across a planned restart, and
/// withdrawn at stop with `on_stop: withdraw`.
fn announcements_follow_what_the_director_can_serve() {
    let e = ecmp_lab(2);
    let mut lbds = Lbds(Vec::new());
    let yaml = services("mh");
    start(&e, &mut lbds, 0, &yaml, true);
    start(&e, &mut lbds, 1, &yaml, true);
    let t = e.wait_next_hops(&[0, 1], Duration::from_secs(20)).unwrap();
    eprintln!("both directors in the route {t:?} after their lbd answered");
    let v = bgp_json(&e, 0, &[]);
    assert_eq!(v["vips"][0]["announced"], true, "{v}");
    assert_eq!(v["in_effect"], true, "{v}");
    wait_for(Duration::from_secs(10), || {
        bgp_json(&e, 0, &[])["sessions"][0]["info"] == "Established"
    })
    .unwrap_or_else(|_| panic!("{}", bgp_json(&e, 0, &[])));
    let out = std::process::Command::new("birdc")
        .arg("-s")
        .arg(e.bird_socket("router"))
        .args(["show", "route", "all", "for", VIP])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(routes.contains("(65000,100)"), "community: {routes}");
    for _ in 0..6 {
        e.h.lab.curl_vip("/", 2).expect("through the ECMP route");
    }

    // Drain: out of the route when lbadm answers; the other serves, and
    // downloads running through the drained director all complete.
    let d = Downloads::start(&e.h.lab, "drain", 20, 3);
    let tx = e.counter(0, "tx");
    std::thread::sleep(Duration::from_millis(1000));
    assert!(e.counter(0, "tx") > tx, "downloads go through director 1");
    let v = bgp_json(&e, 0, &["drain"]);
    assert_eq!(v["in_effect"], true, "{v}");
    assert_eq!(v["vips"][0]["announced"], false, "{v}");
    assert!(
        v["vips"][0]["reason"].as_str().unwrap().contains("drain"),
        "{v}"
    );
    e.wait_next_hops(&[1], Duration::from_secs(3)).unwrap();
    let (lost, _) = d.finish();
    assert!(lost.is_empty(), "a drain cut flows: {lost:?}");
    e.h.lab
        .curl_vip("/", 2)
        .expect("through the other director");
    // Kept across a restart, until resume: once the new lbd's first
    // reload is in effect the route still has director 2 only.
    lbds.term(0);
    start(&e, &mut lbds, 0, &yaml, false);
    wait_for(Duration::from_secs(10), || {
        let v = bgp_json(&e, 0, &[]);
        v["in_effect"] == true && v["reloads"].as_u64() >= Some(1)
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(e.next_hops(), [DIRECTOR_IPS[1]]);
    assert_eq!(bgp_json(&e, 0, &[])["drained"], true);
    bgp_json(&e, 0, &["resume"]);
    e.wait_next_hops(&[0, 1], Duration::from_secs(3)).unwrap();

    // Quorum: every real server of director 1 at weight 0.
    for rs in ["192.0.2.11", "192.0.2.12", "192.0.2.13"] {
        e.h.lbadm(1, &["-e", "-t", &format!("{VIP}:80"), "-r", rs, "-w", "0"])
            .unwrap();
    }
    e.wait_next_hops(&[0], Duration::from_secs(3)).unwrap();
    let v = bgp_json(&e, 1, &[]);
    assert!(
        v["vips"][0]["reason"].as_str().unwrap().contains("quorum"),
        "{v}"
    );
    for rs in ["192.0.2.11", "192.0.2.12", "192.0.2.13"] {
        e.h.lbadm(1, &["-e", "-t", &format!("{VIP}:80"), "-r", rs, "-w", "1"])
            .unwrap();
    }
    e.wait_next_hops(&[0, 1], Duration::from_secs(3)).unwrap();

    // A planned restart keeps the route (same since-time at the router).
    std::thread::sleep(Duration::from_millis(1100));
    let before = route_line(&e, "d2");
    assert!(!before.is_empty());
    lbds.term(1);
    assert_eq!(e.next_hops().len(), 2, "kept while lbd is down");
    start(&e, &mut lbds, 1, &yaml, false);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(route_line(&e, "d2"), before, "announced throughout");

    // on_stop: withdraw (applied live), then a stop.
    let file = std::env::temp_dir().join(format!("{}-withdraw.yaml", e.h.lab.prefix));
    let cfg = format!("{}  on_stop: withdraw\n{yaml}", e.bgp_yaml(1));
    std::fs::write(&file, cfg).unwrap();
    let out = e.h.lbadm(1, &["apply", "--file", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    assert!(out.as_ref().unwrap().contains("bgp"), "{out:?}");
    lbds.term(1);
    // lbd waited for its BIRD; the router follows within milliseconds.
    e.wait_next_hops(&[0], Duration::from_secs(1)).unwrap();

    // lbd --unload (the saved state's bgp: section) withdraws before the
    // program goes.
    lbds.term(0);
    assert_eq!(e.next_hops(), [DIRECTOR_IPS[0]], "kept while lbd is down");
    let d = &e.h.dirs[0];
    let out =
        e.h.lab
            .cmd(&d.ns, e.h.lab.paths.lbd())
            .args(["--interface", "eth1", "--instance", &d.instance, "--unload"])
            .output()
            .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    e.wait_next_hops(&[], Duration::from_secs(1)).unwrap();
}

/// Three directors; 100 downloads spread over them; director 1 fails
/// (its link, or its lbd and BIRD killed); every download completes; the
/// route converges without it; new connections work; a fourth director
/// joins under 60 more downloads and none is disturbed.
fn failure_and_join(sched: &str, extra: &str, fail_link: bool) {
    let e = ecmp_lab(4);
    let mut lbds = Lbds(Vec::new());
    let yaml = format!("{extra}{}", services(sched));
    for i in 0..3 {
        start(&e, &mut lbds, i, &yaml, true);
    }
    e.wait_next_hops(&[0, 1, 2], Duration::from_secs(20))
        .unwrap();
    let d = Downloads::start(&e.h.lab, "ecmp", 100, 5);
    std::thread::sleep(Duration::from_millis(1500));
    let spread: Vec<u64> = (0..3).map(|i| e.counter(i, "tx")).collect();
    assert!(
        spread.iter().all(|&f| f > 0),
        "flows over every director: {spread:?}"
    );
    let t0 = Instant::now();
    if fail_link {
        e.h.lab
            .exec(&e.h.lab.ns("lan"), &["ip", "link", "set", "p-dir2", "down"])
            .unwrap();
    } else {
        lbds.0.retain_mut(|(i, c)| {
            if *i == 1 {
                let _ = c.kill();
                let _ = c.wait();
            }
            *i != 1
        });
        e.kill_director_bird(1);
    }
    e.wait_next_hops(&[0, 2], Duration::from_secs(10)).unwrap();
    let converged = t0.elapsed();
    let (lost, by) = d.finish();
    eprintln!(
        "{sched}: route converged {converged:?} after director 2 failed; {} of 100 transfers lost; packets forwarded before: {spread:?}; completed per real server: {by:?}",
        lost.len()
    );
    assert!(lost.is_empty(), "{lost:?}");
    assert_eq!(
        by.len(),
        3,
        "the flows spread over every real server: {by:?}"
    );
    if fail_link {
        // The bridge floods frames still sent to the failed director's MAC
        // to the others: they pass them, never forward them.
        let other: Vec<u64> = [0, 2]
            .iter()
            .map(|&i| e.counter(i, "pass_other_mac"))
            .collect();
        eprintln!("{sched}: frames for the failed director's MAC passed by the others: {other:?}");
        assert!(other.iter().any(|&n| n > 0), "{other:?}");
    }
    for _ in 0..20 {
        e.h.lab
            .curl_vip("/", 3)
            .expect("new connections after the failure");
    }
    // A fourth director joins while 60 downloads run.
    let d = Downloads::start(&e.h.lab, "join", 60, 8);
    std::thread::sleep(Duration::from_millis(1000));
    start(&e, &mut lbds, 3, &yaml, true);
    let joined = e
        .wait_next_hops(&[0, 2, 3], Duration::from_secs(20))
        .unwrap();
    let (lost, _) = d.finish();
    eprintln!(
        "{sched}: director 4 in the route {joined:?} after its lbd answered; {} of 60 transfers lost; it forwarded {} packets",
        lost.len(),
        e.counter(3, "tx")
    );
    assert!(lost.is_empty(), "{lost:?}");
    assert!(e.counter(3, "tx") > 0, "the new director takes traffic");
}

fn mh_keeps_every_flow_through_a_director_failure_and_a_join() {
    failure_and_join("mh", "", true);
}

fn wlc_with_sync_keeps_every_flow_through_a_director_failure_and_a_join() {
    failure_and_join("wlc", "sync: {syncid: 5}\n", false);
}

pub const TESTS: &[Test] = tests![
    announcements_follow_what_the_director_can_serve,
    mh_keeps_every_flow_through_a_director_failure_and_a_join,
    wlc_with_sync_keeps_every_flow_through_a_director_failure_and_a_join,
];
