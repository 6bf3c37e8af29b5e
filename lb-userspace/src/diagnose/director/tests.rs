use super::*;
use crate::{
    control::{HealthView, RealView, ServiceView, StatsView},
    diagnose::Level,
    model::*,
};

fn real(a: &str) -> RealView {
    RealView::test(a, 1)
}

fn good() -> DirectorFacts {
    let svc = ServiceView {
        id: 0,
        rate: Default::default(),
        spec: ServiceSpec {
            addr: ServiceAddr {
                fwmark: 0,
                protocol: Protocol::Tcp,
                address: "192.0.2.100".parse().unwrap(),
                port: 80,
            },
            scheduler: Scheduler::Rr,
            flags: SchedFlags::default(),
            persistent: None,
            netmask: None,
            one_packet: false,
        },
        stats: StatsView::default(),
        reals: vec![real("192.0.2.11"), real("192.0.2.12")],
    };
    let neigh = |s: &str| NeighInfo {
        state: s.into(),
        mac: Some("02:00:00:00:00:0b".into()),
        confirmed_s: Some(3),
    };
    DirectorFacts {
        interface: "eth1".into(),
        xdp: Some(("native".into(), 42)),
        own_prog: Some(42),
        listing: Listing {
            services: vec![svc],
            ..Default::default()
        },
        neighbours: [
            ("192.0.2.11".parse().unwrap(), neigh("REACHABLE")),
            ("192.0.2.12".parse().unwrap(), neigh("STALE")),
        ]
        .into_iter()
        .collect(),
        counters: vec![("tx".into(), 100), ("drop_no_real".into(), 0)],
        counters_before: None,
        features: Some(
            [("rx-vlan-offload".to_string(), true)]
                .into_iter()
                .collect(),
        ),
        vlans: false,
        nic_addresses: vec![("192.0.2.2".parse().unwrap(), 24)],
        local_addresses: ["192.0.2.2".parse().unwrap(), "192.0.2.100".parse().unwrap()]
            .into_iter()
            .collect(),
        managed_vips: Default::default(),
    }
}

/// The problems found: (level, sentence).
fn problems(f: &DirectorFacts) -> Vec<(Level, String)> {
    judge(f)
        .into_iter()
        .filter(|x| x.level != Level::Ok)
        .map(|x| {
            assert!(x.fix.is_some(), "a problem without a fix: {}", x.what);
            (x.level, x.what)
        })
        .collect()
}

#[test]
fn a_healthy_director_has_no_problem_and_says_what_it_checked() {
    let f = good();
    assert_eq!(problems(&f), vec![]);
    let all = judge(&f);
    let said = |s: &str| all.iter().any(|x| x.what.contains(s));
    assert!(said(
        "lbd's program (id 42) is attached to eth1 in native mode"
    ));
    assert!(said(
        "virtual service tcp 192.0.2.100:80: 2 of 2 real server(s) usable"
    ));
    assert!(said(
        "real server 192.0.2.11: MAC 02:00:00:00:00:0b (REACHABLE, confirmed 3 s ago)"
    ));
    assert!(said("VIP 192.0.2.100 is a local address"));
}

#[test]
fn the_program_missing_foreign_or_generic_is_found() {
    let mut f = good();
    f.xdp = None;
    assert_eq!(problems(&f)[0].0, Level::Error);
    assert!(problems(&f)[0]
        .1
        .contains("no XDP program is attached to eth1"));
    f.xdp = Some(("native".into(), 7));
    assert!(problems(&f)[0]
        .1
        .contains("(id 7, native) is not lbd's (id 42)"));
    f.xdp = Some(("generic".into(), 42));
    assert_eq!(problems(&f)[0].0, Level::Warning);
    assert!(problems(&f)[0].1.contains("generic (SKB) mode"));
}

#[test]
fn a_service_with_no_usable_real_server_says_why_each_is_out() {
    let mut f = good();
    let reals = &mut f.listing.services[0].reals;
    reals[0].health = Some(HealthView {
        up: false,
        reason: "connect refused".into(),
    });
    reals[0].effective_weight = 0;
    reals[1].mac = None;
    let p = problems(&f);
    let svc = p
        .iter()
        .find(|(_, w)| w.starts_with("virtual service"))
        .unwrap();
    assert_eq!(svc.0, Level::Error);
    assert!(
        svc.1
            .contains("192.0.2.11:80 down (connect refused), 192.0.2.12:80 MAC unresolved"),
        "{}",
        svc.1
    );
    let mac = p.iter().find(|(_, w)| w.contains("has no MAC")).unwrap();
    assert!(mac
        .1
        .contains("real server 192.0.2.12 has no MAC (neighbour table: STALE)"));
    let fix = judge(&f)
        .into_iter()
        .find(|x| x.what.starts_with("virtual service"))
        .unwrap()
        .fix
        .unwrap();
    assert!(
        fix.contains("lbadm -a -t 192.0.2.100:80 -r ADDRESS -g"),
        "{fix}"
    );
}

#[test]
fn macs_stale_or_off_the_lan_are_found() {
    let mut f = good();
    f.listing.services[0].reals[1].mac_stale = true;
    let p = problems(&f);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0, Level::Warning);
    assert!(p[0]
        .1
        .contains("192.0.2.12: MAC 02:00:00:00:00:0b is the last known one"));

    let mut f = good();
    f.listing.services[0].reals[1].spec.address = "198.51.100.7".parse().unwrap();
    let p = problems(&f);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, Level::Warning);
    assert!(p[0].1.contains("198.51.100.7 is not on a subnet of eth1"));
}

#[test]
fn counters_that_explain_losses_are_findings() {
    let mut f = good();
    f.counters = vec![
        ("drop_no_real".into(), 5),
        ("pass_tcp_no_conn".into(), 2),
        ("drop_malformed".into(), 0),
    ];
    let p = problems(&f);
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(p[0].0, Level::Error);
    assert!(p[0]
        .1
        .starts_with("5 packets to a virtual service with no usable real server"));
    assert_eq!(p[1].0, Level::Warning);
    assert!(p[1]
        .1
        .contains("(pass_tcp_no_conn, since the maps were created)"));
    // With a sample from 60 s ago: what moved since is a problem, what did
    // not is only said.
    f.counters_before = Some((
        60,
        vec![("drop_no_real".into(), 2), ("pass_tcp_no_conn".into(), 2)],
    ));
    let p = problems(&f);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].1.starts_with("3 packets to a virtual service") && p[0].1.contains("in the last 60 s")
    );
    let all = judge(&f);
    assert!(all.iter().any(|x| x.level == Level::Ok
        && x.what.contains("2 TCP segments")
        && x.what.contains("none in the last 60 s")));
}

#[test]
fn offloads_and_vips_nobody_answers_for_are_found() {
    let mut f = good();
    f.vlans = true;
    let p = problems(&f);
    assert!(
        p.len() == 1 && p[0].1.contains("rx-vlan-offload on"),
        "{p:?}"
    );

    let mut f = good();
    f.local_addresses.remove(&"192.0.2.100".parse().unwrap());
    let p = problems(&f);
    assert!(
        p.len() == 1 && p[0].1.contains("VIP 192.0.2.100 is on no interface"),
        "{p:?}"
    );
    // A VRRP router or BGP takes care of it: nothing to say.
    f.managed_vips.insert("192.0.2.100".parse().unwrap());
    assert_eq!(problems(&f), vec![]);
}

#[test]
fn a_sorry_server_in_force_and_unchecked_offloads_are_said() {
    let mut f = good();
    f.features = None;
    let all = judge(&f);
    assert!(all
        .iter()
        .any(|x| x.level == Level::Ok && x.what.contains("offloads were not checked")));
    let svc = &mut f.listing.services[0];
    for r in &mut svc.reals {
        r.effective_weight = 0;
    }
    let mut sorry = real("192.0.2.99");
    sorry.sorry = true;
    svc.reals.push(sorry);
    let p = problems(&f);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, Level::Warning);
    assert!(
        p[0].1
            .contains("its sorry server 192.0.2.99 takes the new connections"),
        "{p:?}"
    );
}

#[test]
fn a_port_group_s_vips_are_checked_too() {
    let mut f = good();
    let svc = &mut f.listing.services[0];
    svc.spec.addr = ServiceAddr::fwmark(7, false);
    f.listing.groups = vec![(
        7,
        PortGroup {
            name: "shop".into(),
            members: vec![ServiceAddr::new(
                Protocol::Tcp,
                "192.0.2.101".parse().unwrap(),
                443,
            )],
        },
    )];
    let p = problems(&f);
    assert!(
        p.len() == 1 && p[0].1.contains("VIP 192.0.2.101 is on no interface"),
        "{p:?}"
    );
}
