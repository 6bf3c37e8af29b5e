//! Parsing, validation and error positions.

use std::path::Path;

use super::*;
use crate::model::Scheduler;

const GOOD: &str = r#"
interface: eth0
services:
  - protocol: tcp
    address: 192.0.2.100
    port: 80
    scheduler: wrr
    health_check: {type: http, interval: 1, rise: 2, fall: 3}
    on_failure: quiesce
    real_servers:
      - address: 192.0.2.11
        weight: 3
      - address: 192.0.2.12
        health_check: {type: http, path: /health}
  - protocol: udp
    address: 2001:db8::100
    port: 53
    scheduler: mh
    flags: [mh-port]
    real_servers:
      - address: 2001:db8::11
"#;

#[test]
fn parses_the_example() {
    let c = Config::parse(GOOD, "t.yaml").unwrap();
    let t = c.table("t.yaml").unwrap();
    assert_eq!(t.services.len(), 2);
    let web = t.services.values().next().unwrap();
    assert_eq!(web.spec.scheduler, Scheduler::Wrr);
    let weights: Vec<u32> = web.reals.values().map(|r| r.weight).collect();
    assert_eq!(weights, vec![3, 1]);
    let checks = c.checks();
    assert_eq!(checks.len(), 2, "service check for both real servers");
    assert_eq!(checks[0].2.kind, crate::health::CheckKind::Http);
    assert_eq!(
        checks[1].2.path, "/health",
        "the real server's own check wins"
    );
}

#[test]
fn port_groups_thresholds_and_their_mistakes() {
    let good = "port_groups:\n  - name: shop\n    fwmark: 7\n    members:\n      - {protocol: tcp, address: 192.0.2.100, port: 80}\n      - {protocol: tcp, address: 192.0.2.100, port: 443}\nservices:\n  - port_group: shop\n    scheduler: rr\n    persistent: 300\n    real_servers:\n      - {address: 192.0.2.11, upper_threshold: 10, lower_threshold: 5}\n";
    let c = Config::parse(good, "t.yaml").unwrap();
    let t = c.table("t.yaml").unwrap();
    let (a, s) = t.services.iter().next().unwrap();
    assert_eq!((a.fwmark, s.spec.persistent), (7, Some(300)));
    assert_eq!(t.groups[&7].members.len(), 2);
    let r = s.reals.values().next().unwrap();
    assert_eq!((r.u_threshold, r.l_threshold, r.port), (10, 5, 0));
    let e = err(&good.replace("port_group: shop", "port_group: shpo"));
    assert!(
        e.starts_with("t.yaml:8:5: services[0].port_group: no port group named 'shpo'"),
        "{e}"
    );
    let e = err(&good.replace("lower_threshold: 5", "lower_threshold: 50"));
    assert!(e.starts_with("t.yaml:12:") && e.contains("real_servers[0].lower_threshold: lower threshold 50 is above the upper threshold 10"), "{e}");
    let e = err(&format!(
        "{good}  - {{protocol: tcp, address: 192.0.2.100, port: 80}}\n"
    ));
    assert!(
        e.contains("services[1]: 192.0.2.100") || e.contains("is a member of port group 7"),
        "{e}"
    );
    let e = err(&good.replace(
        "    scheduler: rr\n",
        "    scheduler: rr\n    health_check: {type: http}\n",
    ));
    assert!(
        e.contains("services[0].health_check.port: required for a port group"),
        "{e}"
    );
    let e = err(&good.replace("port_group: shop", "port_group: shop\n    port: 80"));
    assert!(e.contains("takes no protocol, address or port"), "{e}");
}

#[test]
fn the_shipped_example_config_is_valid() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/lbd.yaml");
    let c = Config::load(&p).unwrap();
    assert!(!c.services.is_empty());
}

fn err(text: &str) -> String {
    Config::parse(text, "t.yaml").unwrap_err().to_string()
}

#[test]
fn mistakes_are_reported_with_position_or_field() {
    let e = err(
        "services:\n  - protocol: tcp\n    address: 192.0.2.100\n    port: 80\n    colour: red\n",
    );
    assert!(
        e.starts_with("t.yaml:5:5: ") && e.contains("unknown field `colour`"),
        "{e}"
    );
    let e = err("services:\n  - protocol: tcp\n    address: 192.0.2.300\n    port: 80\n");
    assert!(
        e.starts_with("t.yaml:3:") && e.contains("invalid IP address"),
        "{e}"
    );
    let e = err(
        "services:\n  - protocol: tcp\n    address: 192.0.2.1\n    port: 80\n    scheduler: xyz\n",
    );
    assert!(
        e.starts_with("t.yaml:5:") && e.contains("unknown variant `xyz`"),
        "{e}"
    );
    let e = err("services:\n  - {protocol: tcp, address: 192.0.2.1, port: 80, real_servers: [{address: 192.0.2.11, weight: 70000}]}\n");
    assert_eq!(
        e,
        "t.yaml:2:88: services[0].real_servers[0].weight: weight 70000 out of range (0..=65535)"
    );
    let e = err("services:\n  - {protocol: tcp, address: 192.0.2.1, port: 80}\n  - {protocol: tcp, address: 192.0.2.1, port: 80}\n");
    assert_eq!(
        e,
        "t.yaml:3:6: services[1]: duplicate service tcp 192.0.2.1:80"
    );
    let e = err("services:\n  - {protocol: tcp, address: 192.0.2.1, port: 0}\n");
    assert!(e.contains("services[0]: port 0 is only allowed"), "{e}");
    let e = err("services:\n  - {protocol: tcp, address: 192.0.2.1, port: 80, scheduler: rr, flags: [mh-port]}\n");
    assert!(e.contains("services[0]: scheduler flag mh-port"), "{e}");
    let e = err("services:\n  - {protocol: tcp, address: 192.0.2.1, port: 80, health_check: {type: http, interval: 0}}\n");
    assert!(e.contains("services[0].health_check: interval 0"), "{e}");
    let e = err("services:\n  - {protocol: tcp, address: 192.0.2.1, port: 80, health_check: {type: ping}}\n");
    assert!(
        e.starts_with("t.yaml:2:") && e.contains("unknown variant `ping`"),
        "{e}"
    );
}

#[test]
fn joins_need_an_authenticated_join_api() {
    let e = err("services:\n  - {protocol: tcp, address: 192.0.2.1, port: 80, joinable: true}\n");
    assert!(
        e.starts_with("t.yaml:2:") && e.contains("services[0].joinable: needs a join: section"),
        "{e}"
    );
    let e = err("join: {listen: \"192.0.2.2:9470\"}\nservices: []\n");
    assert!(
        e.contains("join: needs token_file, or tls with client_ca"),
        "{e}"
    );
    let e = err("join: {listen: \"192.0.2.2\", token_file: /t}\n");
    assert!(
        e.starts_with("t.yaml:1:") && e.contains("join.listen"),
        "{e}"
    );
    let e = err("join: {listen: \"192.0.2.2:1\", token_file: /t}\nport_groups: [{name: g, fwmark: 1, members: [{protocol: tcp, address: 192.0.2.1, port: 80}]}]\nservices:\n  - {port_group: g, joinable: true}\n");
    assert!(
        e.contains("services[0].joinable: a port-group service takes no joins"),
        "{e}"
    );
    let c = Config::parse(
        "join: {listen: \"192.0.2.2:9470\", token_file: /t}\nservices:\n  - {protocol: tcp, address: 192.0.2.1, port: 80, joinable: true, health_check: {type: tcp}}\n",
        "t.yaml",
    )
    .unwrap();
    let j = c.joinable();
    assert_eq!(j.len(), 1);
    assert!(
        j.values().next().unwrap().is_some(),
        "the service's check goes with it"
    );
}
