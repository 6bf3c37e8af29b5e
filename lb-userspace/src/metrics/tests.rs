use super::*;
use crate::{
    control::{HealthView, ServiceView, StatsView},
    model::*,
};

fn real(a: &str, weight: u32, health: Option<bool>) -> RealView {
    let mut r = RealView::test(a, weight);
    r.active_conns = 3;
    r.inactive_conns = 12;
    r.stats = StatsView {
        conns: 40,
        in_packets: 400,
        in_bytes: 40_000,
    };
    r.health = health.map(|up| HealthView {
        up,
        reason: "connect refused".into(),
    });
    if health == Some(false) {
        r.effective_weight = 0;
    }
    r
}

fn snapshot() -> Snapshot {
    let service = ServiceView {
        id: 0,
        rate: crate::control::RateView {
            cps: 7,
            in_pps: 70,
            in_bps: 7000,
        },
        spec: ServiceSpec {
            addr: ServiceAddr {
                fwmark: 0,
                protocol: Protocol::Tcp,
                address: "192.0.2.10".parse().unwrap(),
                port: 80,
            },
            scheduler: Scheduler::Wlc,
            flags: SchedFlags::default(),
            persistent: None,
            netmask: None,
            one_packet: false,
        },
        stats: StatsView {
            conns: 80,
            in_packets: 800,
            in_bytes: 80_000,
        },
        reals: vec![
            real("192.0.2.11", 2, Some(true)),
            real("192.0.2.12", 1, Some(false)),
            real("2001:db8::13", 1, None),
        ],
    };
    Snapshot {
        listing: Listing {
            conn_table_size: 4096,
            services: vec![service],
            ..Default::default()
        },
        counters: vec![
            ("pass_not_vip".into(), 5),
            ("drop_malformed".into(), 2),
            ("tx".into(), 800),
            ("icmp_forwarded".into(), 1),
            ("fwd_stateless".into(), 4),
            ("conn_new".into(), 80),
            ("conn_evicted".into(), 9),
            ("conn_evicted_established".into(), 1),
        ],
        conn_entries: 45,
        attached: Some(("native".into(), 7)),
        own_prog: Some(7),
        history: Vec::new(),
    }
}

/// The value of the one sample of `name` carrying every label of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let hits: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let series = l.rsplit_once(' ').unwrap().0;
            let n = series.split('{').next().unwrap();
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert_eq!(hits.len(), 1, "{name} {labels:?} in:\n{text}");
    hits[0]
}

#[test]
fn a_scrape_shows_services_reals_health_and_the_data_plane() {
    let text = render(&snapshot(), &CheckMetrics::default());
    let svc = ("service", "tcp 192.0.2.10:80");
    assert_eq!(sample(&text, "lb_service_connections_total", &[svc]), 80.0);
    assert_eq!(
        sample(&text, "lb_service_incoming_bytes_total", &[svc]),
        80_000.0
    );
    assert_eq!(
        sample(&text, "lb_service_connections_per_second", &[svc]),
        7.0
    );
    assert_eq!(
        sample(&text, "lb_service_info", &[svc, ("scheduler", "wlc")]),
        1.0
    );
    // The one that is down cannot take new connections.
    assert_eq!(sample(&text, "lb_service_usable_reals", &[svc]), 2.0);
    let up = ("real", "192.0.2.11:80");
    let down = ("real", "192.0.2.12:80");
    let unchecked = ("real", "[2001:db8::13]:80");
    assert_eq!(sample(&text, "lb_real_up", &[svc, up]), 1.0);
    assert_eq!(sample(&text, "lb_real_up", &[svc, down]), 0.0);
    assert_eq!(sample(&text, "lb_real_up", &[svc, unchecked]), 1.0);
    assert_eq!(sample(&text, "lb_real_checked", &[svc, unchecked]), 0.0);
    assert_eq!(sample(&text, "lb_real_weight", &[svc, up]), 2.0);
    assert_eq!(sample(&text, "lb_real_effective_weight", &[svc, down]), 0.0);
    assert_eq!(sample(&text, "lb_real_active_connections", &[svc, up]), 3.0);
    assert_eq!(
        sample(&text, "lb_real_inactive_connections", &[svc, up]),
        12.0
    );
    assert_eq!(
        sample(&text, "lb_real_incoming_packets_total", &[svc, up]),
        400.0
    );
    assert_eq!(sample(&text, "lb_real_mac_resolved", &[svc, up]), 1.0);
    // Verdicts by reason; events apart.
    let packets = "lb_dataplane_packets_total";
    assert_eq!(
        sample(
            &text,
            packets,
            &[("verdict", "pass"), ("reason", "not_vip")]
        ),
        5.0
    );
    assert_eq!(
        sample(
            &text,
            packets,
            &[("verdict", "drop"), ("reason", "malformed")]
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            packets,
            &[("verdict", "tx"), ("reason", "forwarded")]
        ),
        800.0
    );
    // Kinds of forwarded frames are part of tx: events, not verdicts.
    let events = "lb_dataplane_events_total";
    assert_eq!(sample(&text, events, &[("event", "icmp_forwarded")]), 1.0);
    assert_eq!(sample(&text, events, &[("event", "fwd_stateless")]), 4.0);
    assert!(!text.contains("reason=\"icmp"), "{text}");
    assert_eq!(
        sample(&text, "lb_dataplane_events_total", &[("event", "conn_new")]),
        80.0
    );
    assert_eq!(
        sample(&text, "lb_conntable_evictions_total", &[("state", "any")]),
        9.0
    );
    assert_eq!(sample(&text, "lb_conntable_entries", &[]), 45.0);
    assert_eq!(sample(&text, "lb_conntable_capacity", &[]), 4096.0);
    assert_eq!(sample(&text, "lb_xdp_attached", &[("mode", "native")]), 1.0);
    // No VRRP, sync or BGP configured: none of their families.
    assert!(!text.contains("lb_vrrp_state{"), "{text}");
    assert!(!text.contains("lb_bgp_"), "{text}");
}

#[test]
fn every_family_has_help_and_type_and_counters_end_in_total() {
    let text = render(&snapshot(), &CheckMetrics::default());
    let mut families = 0;
    for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut f = l["# TYPE ".len()..].split(' ');
        let (name, kind) = (f.next().unwrap(), f.next().unwrap());
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
        if kind == "counter" {
            assert!(name.ends_with("_total"), "counter {name}");
        } else {
            assert!(!name.ends_with("_total"), "{kind} {name}");
        }
        families += 1;
    }
    assert!(families > 25, "{families} families");
}

#[test]
fn every_packet_counter_of_the_program_has_a_verdict_or_is_an_event() {
    let events = [
        "icmp_forwarded",
        "frag_forwarded",
        "fwd_stateless",
        "conn_new",
        "conn_insert_fail",
        "conn_reuse",
        "persist_hit",
        "persist_new",
        "sync_lost",
    ];
    for name in lb_common::counter::NAMES {
        match verdict(name) {
            Some((v, reason)) => {
                assert!(["tx", "pass", "drop"].contains(&v), "{name}");
                assert!(!reason.is_empty(), "{name}");
                assert!(!events.contains(&name), "{name} is an event");
            }
            None => assert!(
                events.contains(&name),
                "{name}: neither verdict nor known event"
            ),
        }
    }
}

#[test]
fn a_stopped_check_leaves_no_series() {
    let m = CheckMetrics::default();
    let svc = snapshot().listing.services[0].spec.addr;
    let a: std::net::IpAddr = "192.0.2.11".parse().unwrap();
    let b: std::net::IpAddr = "192.0.2.12".parse().unwrap();
    let (sa, sb) = (m.start(&svc, &a), m.start(&svc, &b));
    sa.observe(true, 0.002);
    sa.observe(false, 0.3);
    sb.observe(true, 0.004);
    let text = render(&snapshot(), &m);
    let addr = ("address", "192.0.2.11");
    let svc_l = ("service", "tcp 192.0.2.10:80");
    assert_eq!(
        sample(&text, "lb_check_duration_seconds_count", &[svc_l, addr]),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "lb_check_duration_seconds_bucket",
            &[svc_l, addr, ("le", "0.0025")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "lb_check_probes_total",
            &[svc_l, addr, ("result", "failed")]
        ),
        1.0
    );
    m.forget(&svc, &a);
    // A probe that finishes after its check stopped records nothing.
    sa.observe(true, 0.002);
    let text = render(&snapshot(), &m);
    assert!(!text.contains("address=\"192.0.2.11\""), "{text}");
    assert!(text.contains("address=\"192.0.2.12\""), "{text}");
}

/// A director of a VRRP pair with a sync daemon, announcing by BGP.
fn snapshot_with_ha() -> Snapshot {
    let mut s = snapshot();
    let any: std::net::IpAddr = "192.0.2.2".parse().unwrap();
    s.listing.vrrp = vec![crate::vrrp::VrrpView {
        name: "VI_1".into(),
        interface: "eth1".into(),
        virtual_router_id: 51,
        version: 3,
        state: crate::vrrp::State::Master,
        priority: 150,
        effective_priority: 140,
        master: Some(any),
        since_unix: 0,
        transitions: 2,
        adverts_sent: 100,
        adverts_received: 3,
        refused: [("bad_auth".to_string(), 1)].into_iter().collect(),
        released: false,
        virtual_addresses: vec!["192.0.2.100".parse().unwrap()],
        advert_int: 100,
        source: any,
        master_down_ms: 3_000,
    }];
    s.listing.sync = vec![crate::sync::SyncView {
        role: crate::sync::Role::Master,
        interface: "eth1".into(),
        cfg: crate::sync::SyncCfg::default(),
        stats: crate::sync::SyncStats {
            sent_records: 12,
            ..Default::default()
        },
    }];
    s.listing.bgp = Some(crate::bgp::BgpView {
        vips: vec![crate::bgp::VipView {
            address: "192.0.2.100".parse().unwrap(),
            announced: true,
            reason: None,
        }],
        sessions: vec![crate::bgp::Session {
            name: "router".into(),
            state: "up".into(),
            info: "Established".into(),
        }],
        ..Default::default()
    });
    s
}

#[test]
fn vrrp_sync_and_bgp_show_their_state() {
    let text = render(&snapshot_with_ha(), &CheckMetrics::default());
    let r = ("router", "VI_1");
    assert_eq!(
        sample(&text, "lb_vrrp_state", &[r, ("state", "master")]),
        1.0
    );
    assert_eq!(
        sample(&text, "lb_vrrp_state", &[r, ("state", "backup")]),
        0.0
    );
    assert_eq!(sample(&text, "lb_vrrp_effective_priority", &[r]), 140.0);
    assert_eq!(
        sample(
            &text,
            "lb_vrrp_adverts_refused_total",
            &[r, ("reason", "bad_auth")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "lb_sync_records_total",
            &[("role", "master"), ("what", "sent")]
        ),
        12.0
    );
    assert_eq!(
        sample(&text, "lb_bgp_vip_announced", &[("vip", "192.0.2.100")]),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "lb_bgp_session_established",
            &[("session", "router")]
        ),
        1.0
    );
}

/// deploy/grafana/lbd-dashboard.json asks only for series lbd serves.
#[test]
fn the_grafana_dashboard_queries_only_metrics_that_exist() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/lbd-dashboard.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let m = CheckMetrics::default();
    let svc = snapshot().listing.services[0].spec.addr;
    let a = "192.0.2.11".parse().unwrap();
    m.start(&svc, &a).observe(true, 0.01);
    let text = render(&snapshot_with_ha(), &m);
    let served: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let names = regex::Regex::new(r"\b(lb_[a-z_]+|process_[a-z_]+)").unwrap();
    let mut exprs = Vec::new();
    let mut queried = 0;
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"].as_str() {
            exprs.push(q.to_string());
        }
    }
    for e in &exprs {
        for n in names.find_iter(e) {
            assert!(
                served.contains(n.as_str()),
                "{} in {e:?} is not served",
                n.as_str()
            );
            queried += 1;
        }
    }
    assert!(queried > 20, "{queried}");
}
