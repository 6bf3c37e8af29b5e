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
    lab.lbadm(&["--set", "3600", "0", "0"]).unwrap();
    let rules = lab.lbadm(&["-S", "-n"]).unwrap();
    let timeouts = lab.lbadm(&["-L", "--timeout"]).unwrap();
    assert!(rules.contains("-r 192.0.2.12:80 -g -w 0"), "{rules}");
    lbd.kill();
    lbd.restart_without_config();
    assert_eq!(lab.lbadm(&["-S", "-n"]).unwrap(), rules);
    assert_eq!(lab.lbadm(&["-L", "--timeout"]).unwrap(), timeouts);
    let seen = tally(&lab, 8);
    assert_eq!(
        seen.get("rs2"),
        None,
        "the quiesced server got new connections: {seen:?}"
    );
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

/// lbd run to its end in the director's namespace with `args` (after the
/// lab's --interface/--instance/--socket unless `args` gives its own):
/// (success, what it printed).
fn run_lbd(lab: &xtask::lab::Lab, args: &[&str]) -> (bool, String) {
    let mut c = lab.cmd(&lab.ns("dir"), lab.paths.lbd());
    c.args(["--instance", &lab.instance()]);
    if !args.contains(&"--socket") {
        c.arg("--socket")
            .arg(std::env::temp_dir().join(format!("{}-second.sock", lab.prefix)));
    }
    let out = c.args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every real server still gets new connections, nothing is dropped.
fn still_forwarding(lab: &xtask::lab::Lab, what: &str) {
    let seen = tally(lab, 6);
    assert_eq!(seen.len(), 3, "after {what}: {seen:?}");
}

/// A second lbd on a running instance, and starts that fail (other limits,
/// bad limits, more real servers than the pinned maps hold, a missing
/// interface), leave the data plane exactly as it was: the pinned program
/// keeps forwarding to every real server, and the next good start finds the
/// same table.
fn failed_starts_leave_the_data_plane_as_it_was() {
    let lab = lab();
    let small = "limits: {max_services: 4, max_reals: 4, max_conns: 4096}\n";
    let mut lbd = Lbd::start(&lab, &format!("{small}{RR_CONFIG}"));
    let rules = lab.lbadm(&["-S", "-n"]).unwrap();
    // A second daemon on the running instance.
    let cfg = std::env::temp_dir().join(format!("{}-bad.yaml", lab.prefix));
    std::fs::write(&cfg, format!("{small}{RR_CONFIG}")).unwrap();
    let (ok, out) = run_lbd(
        &lab,
        &["--interface", "eth1", "--config", cfg.to_str().unwrap()],
    );
    assert!(!ok && out.contains("in use by another lbd"), "{out}");
    assert_eq!(
        lab.lbadm(&["-S", "-n"]).unwrap(),
        rules,
        "the first lbd lost its table"
    );
    still_forwarding(&lab, "a second lbd");
    lbd.kill();
    let five = RR_CONFIG.replace(
        "      - {address: 192.0.2.13}\n",
        "      - {address: 192.0.2.13}\n      - {address: 192.0.2.14}\n      - {address: 192.0.2.15}\n",
    );
    for (what, yaml, iface, needs) in [
        ("other limits", RR_CONFIG.to_string(), "eth1", "max_entries"),
        (
            "bad limits",
            format!("limits: {{max_services: 0}}\n{RR_CONFIG}"),
            "eth1",
            "limits must be greater than 0",
        ),
        (
            "more real servers than the pins hold",
            format!("{small}{five}"),
            "eth1",
            "too many real servers",
        ),
        (
            "a missing interface",
            format!("{small}{RR_CONFIG}"),
            "nosuch0",
            "nosuch0",
        ),
    ] {
        std::fs::write(&cfg, yaml).unwrap();
        let (ok, out) = run_lbd(
            &lab,
            &["--interface", iface, "--config", cfg.to_str().unwrap()],
        );
        assert!(!ok && out.contains(needs), "{what}: {out}");
        still_forwarding(&lab, what);
    }
    lbd.restart();
    assert_eq!(lab.lbadm(&["-S", "-n"]).unwrap(), rules);
    // The counters live in the pinned maps: nothing was dropped meanwhile.
    let drops = counters(&lab);
    assert_eq!(drops.get("drop_no_real"), Some(&0), "{drops:?}");
    let _ = std::fs::remove_file(cfg);
}

/// What lbd is given on its command line is checked before anything is
/// touched: names that would leave the instance's directory, a `--socket`
/// that is not a socket, and a /sys/fs/bpf hidden by `ip netns exec`; a
/// start that fails after binding its socket removes it.
fn bad_startup_input_is_refused_before_anything_is_touched() {
    let lab = lab();
    let cfg = std::env::temp_dir().join(format!("{}-startup.yaml", lab.prefix));
    std::fs::write(&cfg, RR_CONFIG).unwrap();
    let c = cfg.to_str().unwrap();
    for (args, needs) in [
        (
            vec!["--interface", "eth1", "--instance", "../x"],
            "instance \"../x\"",
        ),
        (vec!["--interface", "a/b"], "interface \"a/b\""),
    ] {
        let out = lab
            .cmd(&lab.ns("dir"), lab.paths.lbd())
            .args(&args)
            .args(["--config", c])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && text.contains(needs),
            "{args:?}: {text}"
        );
    }
    // `lb/../x` would have been /sys/fs/bpf/x.
    assert!(!std::path::Path::new("/sys/fs/bpf/x").exists());
    // A --socket that is a regular file is refused and left alone.
    let precious = std::env::temp_dir().join(format!("{}-precious", lab.prefix));
    std::fs::write(&precious, "keep").unwrap();
    let (ok, out) = run_lbd(
        &lab,
        &[
            "--interface",
            "eth1",
            "--config",
            c,
            "--socket",
            precious.to_str().unwrap(),
        ],
    );
    assert!(!ok && out.contains("not a socket"), "{out}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep");
    // A start failing after the socket was bound removes it.
    let sock = std::env::temp_dir().join(format!("{}-failed.sock", lab.prefix));
    let (ok, out) = run_lbd(
        &lab,
        &[
            "--interface",
            "nosuch0",
            "--config",
            c,
            "--socket",
            sock.to_str().unwrap(),
        ],
    );
    assert!(!ok && out.contains("nosuch0"), "{out}");
    assert!(!sock.exists(), "the failed start left its socket");
    // Under `ip netns exec` /sys is the namespace's own: lbd says so.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.ns("dir")])
        .arg(lab.paths.lbd())
        .args([
            "--interface",
            "eth1",
            "--instance",
            &lab.instance(),
            "--config",
            c,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("is not a bpffs") && text.contains("nsenter"),
        "{text}"
    );
    let _ = std::fs::remove_file(precious);
    let _ = std::fs::remove_file(cfg);
}

pub const TESTS: &[Test] = tests![
    bad_startup_input_is_refused_before_anything_is_touched,
    failed_starts_leave_the_data_plane_as_it_was,
    restarts_under_load_drop_no_new_connection,
    a_restart_without_config_serves_what_ran_before,
];
