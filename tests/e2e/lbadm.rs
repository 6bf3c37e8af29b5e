//! lbadm on a live director: ipvsadm-style edits, -R rules, apply and export.

use std::{process::Child, time::Duration};

use xtask::{
    lab::{self, wait_for},
    paths, root,
};

use crate::{support::*, tests, Test};

fn lbadm_changes_take_effect_on_live_traffic() {
    let lab = lab();
    let _lbd = Lbd::start(&lab, RR_CONFIG);
    let tally = |n: u32| tally(&lab, n);
    // Quiesce rs2 (weight 0): it gets no new connection.
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
    let m = tally(12);
    assert_eq!(m.get("rs2"), None, "{m:?}");
    assert_eq!(m.values().sum::<u32>(), 12);
    // Delete rs1: only rs3 remains.
    lab.lbadm(&["-d", "-t", "192.0.2.100:80", "-r", "192.0.2.11"])
        .unwrap();
    let m = tally(6);
    assert_eq!(m.get("rs3"), Some(&6), "{m:?}");
    // Errors are ipvsadm's and change nothing.
    let e = std::process::Command::new(paths().lbadm())
        .args(["-d", "-t", "192.0.2.100:80", "-r", "192.0.2.99"])
        .env("LB_SOCKET", lab.socket())
        .output()
        .unwrap();
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("No such destination"));
    // A new service added at run time, on the port-0 "all ports" form.
    lab.lbadm(&["-A", "-t", "192.0.2.100:0", "-s", "rr", "-p", "60"])
        .unwrap();
    lab.lbadm(&["-a", "-t", "192.0.2.100:0", "-r", "192.0.2.11", "-g"])
        .unwrap();
    wait_for(Duration::from_secs(10), || {
        lab.lbadm(&["-L", "-n", "-o", "json"])
            .map(|s| !s.contains("\"mac\": null"))
            .unwrap_or(false)
    })
    .unwrap();
    // Timeouts, as ipvsadm --set / --timeout print them.
    assert_eq!(
        lab.lbadm(&["-L", "--timeout"]).unwrap(),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
    lab.lbadm(&["--set", "3600", "0", "60"]).unwrap();
    assert_eq!(
        lab.lbadm(&["-L", "--timeout"]).unwrap(),
        "Timeout (tcp tcpfin udp): 3600 120 60\n"
    );
    // port 80 still has its own service; the rest of the table is listed.
    let list = lab.lbadm(&["-L", "-n"]).unwrap();
    assert!(
        list.contains("TCP  192.0.2.100:0 rr persistent 60"),
        "{list}"
    );
    let _ = root();
}

fn rules_restored_from_ipvsadm_save_forward_and_apply_keeps_live_connections() {
    let lab = lab();
    // lbd starts empty; the table comes from an ipvsadm-save file.
    let _lbd = Lbd::start(&lab, "services: []\n");
    let save = "\
-A -t 192.0.2.100:80 -s rr
-a -t 192.0.2.100:80 -r 192.0.2.11:80 -g -w 1
-a -t 192.0.2.100:80 -r 192.0.2.12:80 -g -w 1
-a -t 192.0.2.100:80 -r 192.0.2.13:80 -g -w 1
";
    let mut child = std::process::Command::new(paths().lbadm())
        .args(["-R", "--socket"])
        .arg(lab.socket())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(save.as_bytes())
            .unwrap();
    }
    assert!(child.wait().unwrap().success(), "lbadm -R failed");
    // -Sn gives the same rules back, and they forward real traffic.
    assert_eq!(lab.lbadm(&["-S", "-n"]).unwrap(), save);
    wait_for(Duration::from_secs(10), || {
        lab.curl_vip("/", 2).is_ok_and(|b| b.starts_with("rs"))
    })
    .expect("the restored service forwards");
    let m = tally(&lab, 30);
    assert_eq!(m.len(), 3, "every real server answers: {m:?}");
    // A download in flight on each real server (rr over 3 connections).
    let outs: Vec<std::path::PathBuf> = (0..3)
        .map(|i| std::env::temp_dir().join(format!("{}-apply{i}.out", lab.prefix)))
        .collect();
    let mut curls: Vec<Child> = outs
        .iter()
        .map(|o| {
            lab.cmd(&lab.ns("client"), "curl")
                .args(["-sS", "--max-time", "30", "-o"])
                .arg(o)
                .arg(format!("http://{}/slow?s=4", lab::VIP))
                .spawn()
                .unwrap()
        })
        .collect();
    wait_for(Duration::from_secs(10), || conn_counts(&lab).0 >= 3).expect("downloads established");
    // lbadm apply: new weights (one server quiesced) and a new scheduler.
    let cfg = std::env::temp_dir().join(format!("{}-apply.yaml", lab.prefix));
    std::fs::write(
        &cfg,
        "services:\n  - protocol: tcp\n    address: 192.0.2.100\n    port: 80\n    scheduler: wrr\n    real_servers:\n      - {address: 192.0.2.11, weight: 3}\n      - {address: 192.0.2.12, weight: 1}\n      - {address: 192.0.2.13, weight: 0}\n",
    )
    .unwrap();
    let dry = lab
        .lbadm(&["apply", "-f", cfg.to_str().unwrap(), "--dry-run"])
        .unwrap();
    assert!(
        dry.contains("~ real 192.0.2.13 of tcp 192.0.2.100:80: weight 1 -> 0"),
        "{dry}"
    );
    assert!(
        lab.lbadm(&["-S", "-n"]).unwrap().contains("-s rr"),
        "dry run changed nothing"
    );
    let applied = lab.lbadm(&["apply", "-f", cfg.to_str().unwrap()]).unwrap();
    assert!(applied.contains("scheduler rr -> wrr"), "{applied}");
    // Logged once, with what changed; the dry run is not logged.
    let log = std::fs::read_to_string(lab.lbd_log()).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("configuration {} applied", cfg.display())))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("scheduler rr -> wrr") && lines[0].contains("weight 1 -> 0"),
        "{}",
        lines[0]
    );
    // Every established download finishes on its real server.
    for (c, o) in curls.iter_mut().zip(&outs) {
        assert!(c.wait().unwrap().success(), "a transfer broke during apply");
        let got = std::fs::read_to_string(o).unwrap();
        let _ = std::fs::remove_file(o);
        assert_eq!(
            got.len(),
            40 * 1024 + "rsN done\n".len(),
            "truncated transfer"
        );
    }
    let _ = std::fs::remove_file(&cfg);
    // New connections follow the new weights: never the quiesced server.
    let m = tally(&lab, 20);
    assert!(!m.contains_key("rs3"), "{m:?}");
    // export reproduces the applied state.
    let exported = lab.lbadm(&["export"]).unwrap();
    assert!(exported.contains("scheduler: wrr"), "{exported}");
    assert!(exported.contains("weight: 3"), "{exported}");
}

/// `lbadm apply` shows a timeouts change in `--dry-run` and applies it;
/// an interface or XDP mode change is refused (it needs a restart) in
/// `--dry-run` too; a configuration nested absurdly deep is refused at once
/// and the daemon keeps serving.
fn apply_shows_timeouts_and_refuses_what_needs_a_restart() {
    let lab = lab();
    let _lbd = Lbd::start(&lab, RR_CONFIG);
    let cfg = std::env::temp_dir().join(format!("{}-apply.yaml", lab.prefix));
    let f = cfg.to_str().unwrap();
    let apply = |yaml: &str, dry: bool| {
        std::fs::write(&cfg, yaml).unwrap();
        let mut a = vec!["apply", "-f", f];
        if dry {
            a.push("--dry-run");
        }
        lab.lbadm(&a)
    };
    let timeouts = format!("timeouts: {{tcp: 3600}}\n{RR_CONFIG}");
    let dry = apply(&timeouts, true).unwrap();
    assert!(
        dry.contains("~ timeouts (tcp tcpfin udp) 900 120 300 -> 3600 120 300"),
        "{dry}"
    );
    let shown = || lab.lbadm(&["-L", "--timeout"]).unwrap();
    assert!(shown().contains("900 120 300"), "{}", shown());
    apply(&timeouts, false).unwrap();
    assert!(shown().contains("3600 120 300"), "{}", shown());
    // The file is the truth: without `timeouts` they are the defaults again.
    apply(RR_CONFIG, false).unwrap();
    assert!(shown().contains("900 120 300"), "{}", shown());
    for (yaml, needs) in [
        (format!("interface: eth9\n{RR_CONFIG}"), "interface: eth9"),
        (
            format!("xdp_mode: generic\n{RR_CONFIG}"),
            "xdp_mode: generic, but lbd runs in native mode",
        ),
    ] {
        for dry in [true, false] {
            let e = apply(&yaml, dry).unwrap_err().to_string();
            assert!(e.contains(needs) && e.contains("needs a restart"), "{e}");
        }
    }
    // --socket before a subcommand (no LB_SOCKET): counters and apply.
    std::fs::write(&cfg, RR_CONFIG).unwrap();
    for args in [
        vec!["counters"],
        vec!["apply", "-f", f, "--dry-run"],
        vec!["export"],
    ] {
        let out = std::process::Command::new(lab.paths.lbadm())
            .arg("--socket")
            .arg(lab.socket())
            .args(&args)
            .env_remove("LB_SOCKET")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "--socket P {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let deep = format!("services: {}{}", "[".repeat(200_000), "]".repeat(200_000));
    let e = apply(&deep, false).unwrap_err().to_string();
    assert!(e.contains("nested deeper than 64 levels"), "{e}");
    assert!(lab.lbadm(&["-L", "-n"]).unwrap().contains("192.0.2.100:80"));
    let _ = std::fs::remove_file(&cfg);
}

/// `lbadm realserver down` puts the ARP sysctls back as `up` found them
/// (an operator's own stricter value included), and only once no VIP it set
/// up remains.
fn realserver_down_puts_back_what_up_found() {
    let lab = lab();
    let ns = lab.rs_ns(1);
    let state = lab.rs_state_dir();
    let lbadm = lab.paths.lbadm();
    let rs = |action: &str, vip: &str| {
        lab.exec_out(
            &ns,
            &[
                lbadm.to_str().unwrap(),
                "realserver",
                action,
                "--vip",
                vip,
                "--nic",
                "eth1",
                "--state-dir",
                state.to_str().unwrap(),
            ],
        )
        .unwrap()
    };
    let get = |name: &str| {
        lab.exec_out(&ns, &["sysctl", "-n", &format!("net.ipv4.conf.{name}")])
            .unwrap()
            .trim()
            .to_string()
    };
    let all = || {
        [
            "all.arp_ignore",
            "all.arp_announce",
            "eth1.arp_ignore",
            "eth1.arp_announce",
        ]
        .map(get)
        .join(" ")
    };
    // The lab set the VIP up from the kernel's defaults: down restores them.
    rs("down", "192.0.2.100");
    assert_eq!(all(), "0 0 0 0");
    // The operator's own stricter all.arp_ignore=2, then two VIPs.
    lab.exec(&ns, &["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=2"])
        .unwrap();
    rs("up", "192.0.2.100");
    rs("up", "192.0.2.101");
    assert_eq!(all(), "2 2 1 2");
    let out = rs("down", "192.0.2.100");
    assert!(out.contains("still set up"), "{out}");
    assert_eq!(
        all(),
        "2 2 1 2",
        "ARP suppression must stay while a VIP remains"
    );
    rs("down", "192.0.2.101");
    assert_eq!(all(), "2 0 0 0", "not as found before `up`");
}

/// The sync daemon in ipvsadm's words: started and stopped at run time,
/// listed as ipvsadm lists it, and the kernel's errors for a second start
/// or a stop of nothing.
fn sync_daemons_start_stop_and_list_as_ipvsadm() {
    let lab = lab();
    let _lbd = Lbd::start(&lab, RR_CONFIG);
    assert_eq!(lab.lbadm(&["-L", "--daemon"]).unwrap(), "");
    lab.lbadm(&[
        "--start-daemon",
        "backup",
        "--mcast-interface",
        "eth1",
        "--syncid",
        "3",
    ])
    .unwrap();
    lab.lbadm(&[
        "--start-daemon",
        "master",
        "--syncid",
        "3",
        "--mcast-ttl",
        "2",
    ])
    .unwrap();
    assert_eq!(
        lab.lbadm(&["-L", "--daemon"]).unwrap(),
        "master sync daemon (mcast=eth1, syncid=3, maxlen=1472, group=224.0.0.81, port=8848, ttl=2)\n\
         backup sync daemon (mcast=eth1, syncid=3, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
    );
    let e = lab
        .lbadm(&["--start-daemon", "master"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("Daemon has already run"), "{e}");
    lab.lbadm(&["--stop-daemon", "master"]).unwrap();
    let e = lab
        .lbadm(&["--stop-daemon", "master"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("No daemon is running"), "{e}");
    let e = lab
        .lbadm(&["--start-daemon", "mister"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("illegal start-daemon parameter specified"),
        "{e}"
    );
    let e = lab
        .lbadm(&["--start-daemon", "backup", "--mcast-group", "10.0.0.1"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid mcast-group `10.0.0.1'"), "{e}");
    assert!(lab
        .lbadm(&["-L", "--daemon"])
        .unwrap()
        .starts_with("backup sync daemon"));
}

pub const TESTS: &[Test] = tests![
    sync_daemons_start_stop_and_list_as_ipvsadm,
    realserver_down_puts_back_what_up_found,
    apply_shows_timeouts_and_refuses_what_needs_a_restart,
    lbadm_changes_take_effect_on_live_traffic,
    rules_restored_from_ipvsadm_save_forward_and_apply_keeps_live_connections,
];
