//! Real servers that register themselves: `lbadm realserver join` and
//! `leave` against lbd's join API, with a token or mutual TLS; refusals
//! logged and never applied; a restart keeps what joined.

use std::{
    collections::BTreeSet,
    process::{Child, Output, Stdio},
    time::{Duration, Instant},
};

use xtask::{
    lab::{wait_for, Lab, VIP},
    paths,
};

use crate::{support::*, tests, Test};

const TOKEN: &str = "lab-join-token-0123456789abcdef";

/// The real servers lbd lists for the VIP's port 80.
fn reals(lab: &Lab) -> BTreeSet<String> {
    let json: serde_json::Value =
        serde_json::from_str(&lab.lbadm(&["-L", "-n", "-o", "json"]).unwrap()).unwrap();
    json["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["spec"]["addr"]["port"] == 80)
        .flat_map(|s| s["reals"].as_array().unwrap().iter())
        .map(|r| r["spec"]["address"].as_str().unwrap().to_string())
        .collect()
}

/// `lbadm realserver ARGS` in real server `i`'s namespace.
fn rs_lbadm(lab: &Lab, i: usize, args: &[&str], env: &[(&str, &str)]) -> Output {
    let state = lab.rs_state_dir();
    lab.cmd(&lab.rs_ns(i), paths().lbadm())
        .arg("realserver")
        .args(args)
        .args(["--state-dir", state.to_str().unwrap()])
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn config(join: &str) -> String {
    format!(
        r#"
join: {join}
services:
  - protocol: tcp
    address: {VIP}
    port: 80
    scheduler: rr
    joinable: true
    health_check: {{type: http, interval: 0.5, timeout: 0.5, rise: 1, fall: 2, expect: "rs"}}
    real_servers:
      - {{address: 192.0.2.11}}
"#
    )
}

fn real_servers_join_leave_and_a_restart_keeps_them() {
    let lab = lab();
    let token_file = std::env::temp_dir().join(format!("{}-join.token", lab.prefix));
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let yaml = config(&format!(
        "{{listen: \"192.0.2.2:9470\", token_file: \"{}\"}}",
        token_file.display()
    ));
    let mut lbd = Lbd::start(&lab, &yaml);
    let join = |i: usize, service: &str, env: &[(&str, &str)]| {
        rs_lbadm(
            &lab,
            i,
            &["join", "--director", "192.0.2.2:9470", "--service", service],
            env,
        )
    };
    let token_env = [("LB_JOIN_TOKEN", TOKEN)];
    let only_rs1: BTreeSet<String> = ["192.0.2.11".to_string()].into();
    assert_eq!(reals(&lab), only_rs1);

    // rs2 starts without the VIP: join sets it up, then registers.
    let down = rs_lbadm(&lab, 2, &["down", "--vip", VIP], &[]);
    assert!(down.status.success(), "{}", text(&down));
    let out = join(2, "tcp:192.0.2.100:80", &token_env);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("joined tcp:192.0.2.100:80 at 192.0.2.2:9470 as 192.0.2.12 (weight 1)"),
        "{}",
        text(&out)
    );
    let both: BTreeSet<String> = ["192.0.2.11".to_string(), "192.0.2.12".to_string()].into();
    assert_eq!(reals(&lab), both);
    lab.wait_lbd_ready(Duration::from_secs(10)).unwrap();
    let seen = tally(&lab, 6);
    assert_eq!(seen.get("rs2"), Some(&3), "{seen:?}");
    // It is checked with the service's check.
    wait_for(Duration::from_secs(5), || {
        health_row(&lab, "192.0.2.12:80").split_whitespace().nth(6) == Some("up")
    })
    .unwrap_or_else(|_| panic!("{}", lab.lbadm(&["-L", "-n", "--health"]).unwrap()));

    // Refused, logged, never applied.
    type Env<'a> = Vec<(&'a str, &'a str)>;
    let refusals: &[(&str, Env, &str)] = &[
        (
            "tcp:192.0.2.100:80",
            vec![("LB_JOIN_TOKEN", "not-the-token-at-all")],
            "wrong or missing token",
        ),
        ("tcp:192.0.2.100:80", vec![], "wrong or missing token"),
        ("tcp:192.0.2.100:8080", token_env.to_vec(), "takes no joins"),
    ];
    for (svc, env, why) in refusals {
        let out = join(3, svc, env);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(text(&out).contains(why), "{why}: {}", text(&out));
    }
    let out = join(1, "tcp:192.0.2.100:80", &token_env);
    assert!(
        text(&out).contains("is a real server of tcp:192.0.2.100:80 in the configuration"),
        "{}",
        text(&out)
    );
    let garbage = lab
        .exec_out(
            &lab.rs_ns(3),
            &[
                "sh",
                "-c",
                "echo 'GET / HTTP/1.0' | socat -t2 - TCP:192.0.2.2:9470",
            ],
        )
        .unwrap();
    assert!(garbage.contains("malformed request"), "{garbage}");
    assert_eq!(reals(&lab), both);
    let log = std::fs::read_to_string(lab.lbd_log()).unwrap();
    let refused = log
        .lines()
        .filter(|l| l.contains("join API: refused") && l.contains("192.0.2.13"))
        .count();
    assert!(refused >= 4, "{refused} refusals logged:\n{log}");
    assert!(log.contains("real server joined"), "{log}");

    // A restart (with --config: the file does not name rs2) keeps it; so
    // does one without (the saved running state does not hold joined
    // servers: the joined file does, so rs2 is still a joined one).
    lbd.restart();
    assert_eq!(reals(&lab), both);
    let seen = tally(&lab, 4);
    assert_eq!(seen.get("rs2"), Some(&2), "{seen:?}");
    let exported = lab.lbadm(&["export"]).unwrap();
    assert!(!exported.contains("192.0.2.12"), "{exported}");
    lbd.restart_without_config();
    assert_eq!(reals(&lab), both);
    lbd.restart();
    assert_eq!(reals(&lab), both);

    // The service deactivated (`active: false`): out of the table, rs2
    // kept meanwhile (an lbadm edit in between does not forget it), and
    // back with the service when it is active again.
    let file = std::env::temp_dir().join(format!("{}-join-apply.yaml", lab.prefix));
    let apply = |text: &str| {
        std::fs::write(&file, text).unwrap();
        lab.lbadm(&["apply", "-f", file.to_str().unwrap()]).unwrap()
    };
    apply(&yaml.replace(
        "    joinable: true\n",
        "    joinable: true\n    active: false\n",
    ));
    assert!(reals(&lab).is_empty());
    lab.lbadm(&["-A", "-t", "192.0.2.100:8081", "-s", "rr"])
        .unwrap();
    apply(&yaml);
    let _ = std::fs::remove_file(&file);
    assert_eq!(reals(&lab), both);

    // Leave under load: rs2 drains (no new connection) and goes once its
    // downloads are done; none of them is cut.
    let downloads: Vec<Child> = (0..4)
        .map(|_| {
            lab.cmd(&lab.ns("client"), "curl")
                .args(["-sS", "--max-time", "20", &format!("http://{VIP}/slow?s=3")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let started = Instant::now();
    let leaving = lab
        .cmd(&lab.rs_ns(2), paths().lbadm())
        .args(["realserver", "leave", "--director", "192.0.2.2:9470"])
        .args(["--service", "tcp:192.0.2.100:80", "--drain", "30"])
        .args(["--state-dir", lab.rs_state_dir().to_str().unwrap()])
        .env("LB_JOIN_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // Draining: new connections go to rs1 only.
    let seen = tally(&lab, 4);
    assert_eq!(seen.get("rs1"), Some(&4), "{seen:?}");
    let out = leaving.wait_with_output().unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains(
            "leaving tcp:192.0.2.100:80 at 192.0.2.2:9470: draining 192.0.2.12 (weight 0)"
        ),
        "{said}"
    );
    assert!(
        said.contains("left tcp:192.0.2.100:80 at 192.0.2.2:9470"),
        "{said}"
    );
    assert!(
        took > Duration::from_secs(1),
        "left before its downloads ended: {took:?}"
    );
    for d in downloads {
        let o = d.wait_with_output().unwrap();
        let body = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && body.trim_end().ends_with("done"),
            "{}",
            text(&o)
        );
    }
    assert_eq!(reals(&lab), only_rs1);
    let lo = lab
        .exec_out(&lab.rs_ns(2), &["ip", "-o", "addr", "show", "dev", "lo"])
        .unwrap();
    assert!(!lo.contains(VIP), "the VIP stays on rs2's lo: {lo}");
    let log = std::fs::read_to_string(lab.lbd_log()).unwrap();
    assert!(log.contains("real server left: drained"), "{log}");
    // Gone for good: a restart does not bring it back.
    lbd.restart();
    assert_eq!(reals(&lab), only_rs1);
    let _ = std::fs::remove_file(&token_file);
}

fn a_join_over_mutual_tls_needs_a_client_certificate_of_the_ca() {
    let lab = lab();
    let pki = Pki::new(&lab);
    let f = |n: &str| pki.path(n);
    let _lbd = Lbd::start(
        &lab,
        &config(&format!(
            "{{listen: \"192.0.2.2:9471\", tls: {{cert: \"{}\", key: \"{}\", client_ca: \"{}\"}}}}",
            f("server.pem"),
            f("server.key"),
            f("ca.pem")
        )),
    );
    let join = |i: usize, extra: &[&str]| {
        let mut args = vec![
            "join",
            "--director",
            "192.0.2.2:9471",
            "--service",
            "tcp:192.0.2.100:80",
            "--weight",
            "2",
        ];
        args.extend_from_slice(extra);
        rs_lbadm(&lab, i, &args, &[])
    };
    let (ca, cert, key) = (f("ca.pem"), f("client.pem"), f("client.key"));
    let (scert, skey) = (f("stranger.pem"), f("stranger.key"));
    // Without a client certificate, with one of another CA, without TLS.
    for extra in [
        vec!["--ca", ca.as_str()],
        vec![
            "--ca",
            ca.as_str(),
            "--cert",
            scert.as_str(),
            "--key",
            skey.as_str(),
        ],
        vec![],
    ] {
        let out = join(3, &extra);
        assert!(!out.status.success(), "{extra:?}: {}", text(&out));
    }
    let only_rs1: BTreeSet<String> = ["192.0.2.11".to_string()].into();
    assert_eq!(reals(&lab), only_rs1);
    let log = std::fs::read_to_string(lab.lbd_log()).unwrap();
    assert!(
        log.lines()
            .filter(|l| l.contains("join API: refused") && l.contains("192.0.2.13"))
            .count()
            >= 3,
        "{log}"
    );
    let out = join(2, &["--ca", &ca, "--cert", &cert, "--key", &key]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("as 192.0.2.12 (weight 2)"),
        "{}",
        text(&out)
    );
    let both: BTreeSet<String> = ["192.0.2.11".to_string(), "192.0.2.12".to_string()].into();
    assert_eq!(reals(&lab), both);
}

pub const TESTS: &[Test] = tests![
    real_servers_join_leave_and_a_restart_keeps_them,
    a_join_over_mutual_tls_needs_a_client_certificate_of_the_ca
];
