//! Tests of the parent module (a file of their own: the module is long).
use super::*;
use crate::{
    control::{HealthView, RealView, ServiceView, StatsView},
    model::*,
};

fn real(a: &str, port: u16, w: u32, act: u64, inact: u64) -> RealView {
    let mut r = RealView::test(a, w);
    r.spec.port = port;
    r.active_conns = act;
    r.inactive_conns = inact;
    r.mac = None;
    r
}

#[test]
fn list_matches_ipvsadm_byte_for_byte() {
    let l = Listing {
        conn_table_size: 4096,
        groups: Default::default(),
        vrrp: Vec::new(),
        sync: Vec::new(),
        bgp: None,
        services: vec![
            ServiceView {
                id: 0,
                rate: Default::default(),
                spec: ServiceSpec {
                    addr: ServiceAddr {
                        fwmark: 0,
                        protocol: Protocol::Tcp,
                        address: "10.0.0.100".parse().unwrap(),
                        port: 80,
                    },
                    scheduler: Scheduler::Wrr,
                    flags: SchedFlags::default(),
                    persistent: Some(360),
                    netmask: None,
                    one_packet: false,
                },
                stats: StatsView::default(),
                reals: vec![real("10.0.0.11", 80, 1, 3, 12)],
            },
            ServiceView {
                id: 0,
                rate: Default::default(),
                spec: ServiceSpec {
                    addr: ServiceAddr {
                        fwmark: 0,
                        protocol: Protocol::Udp,
                        address: "2001:db8::100".parse().unwrap(),
                        port: 53,
                    },
                    scheduler: Scheduler::Mh,
                    flags: SchedFlags {
                        mh_fallback: true,
                        mh_port: true,
                        ..Default::default()
                    },
                    persistent: None,
                    netmask: None,
                    one_packet: false,
                },
                stats: StatsView::default(),
                reals: vec![real("2001:db8::11", 53, 65535, 0, 0)],
            },
        ],
    };
    let want = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.0.0.100:80 wrr persistent 360
  -> 10.0.0.11:80                 Route   1      3          12        
UDP  [2001:db8::100]:53 mh (mh-fallback,mh-port)
  -> [2001:db8::11]:53            Route   65535  0          0         
";
    assert_eq!(list(&l), want);
}

#[test]
fn connection_listing_and_service_flags_match_ipvsadm() {
    let conns = vec![
        ConnView {
            protocol: "TCP".into(),
            expire_s: 899,
            state: "ESTABLISHED".into(),
            client: "192.0.2.7:51922".into(),
            virtual_: "10.0.0.100:80".into(),
            real: "10.0.0.11:80".into(),
            template: false,
        },
        ConnView {
            protocol: "TCP".into(),
            expire_s: 360,
            state: "NONE".into(),
            client: "192.0.2.0:0".into(),
            virtual_: "10.0.0.100:0".into(),
            real: "10.0.0.11:0".into(),
            template: true,
        },
    ];
    assert_eq!(
        list_conns(&conns),
        "IPVS connection entries\n\
         pro expire state       source             virtual            destination\n\
         TCP 14:59  ESTABLISHED 192.0.2.7:51922    10.0.0.100:80      10.0.0.11:80\n\
         TCP 06:00  NONE        192.0.2.0:0        10.0.0.100:0       10.0.0.11:0\n"
    );
    let spec = ServiceSpec {
        addr: ServiceAddr {
            fwmark: 0,
            protocol: Protocol::Udp,
            address: "10.0.0.100".parse().unwrap(),
            port: 53,
        },
        scheduler: Scheduler::Rr,
        flags: SchedFlags::default(),
        persistent: Some(600),
        netmask: Some(24),
        one_packet: true,
    };
    assert_eq!(
        service_line(&spec),
        "UDP  10.0.0.100:53 rr persistent 600 mask 255.255.255.0 ops"
    );
}

#[test]
fn health_shows_in_weight_and_in_the_extra_listing() {
    let mut down = real("10.0.0.12", 80, 5, 1, 0);
    down.health = Some(HealthView {
        up: false,
        reason: "HTTP 503".into(),
    });
    down.effective_weight = 0;
    let mut removed = real("10.0.0.13", 80, 1, 0, 0);
    removed.health = Some(HealthView {
        up: false,
        reason: "connection refused".into(),
    });
    removed.effective_weight = 0;
    removed.in_service = false;
    let l = Listing {
        conn_table_size: 4096,
        groups: Default::default(),
        vrrp: Vec::new(),
        sync: Vec::new(),
        bgp: None,
        services: vec![ServiceView {
            id: 0,
            rate: Default::default(),
            spec: ServiceSpec {
                addr: ServiceAddr {
                    fwmark: 0,
                    protocol: Protocol::Tcp,
                    address: "10.0.0.100".parse().unwrap(),
                    port: 80,
                },
                scheduler: Scheduler::Rr,
                flags: SchedFlags::default(),
                persistent: None,
                netmask: None,
                one_packet: false,
            },
            stats: StatsView::default(),
            reals: vec![real("10.0.0.11", 80, 1, 2, 0), down, removed],
        }],
    };
    let plain = list(&l);
    assert!(
        plain.contains("  -> 10.0.0.12:80                 Route   0      1          0         \n"),
        "{plain}"
    );
    assert!(!plain.contains("10.0.0.13"), "{plain}");
    let h = list_health(&l);
    assert!(h.contains("InActConn Health ConfW  Reason\n"), "{h}");
    assert!(h.contains("10.0.0.12:80                 Route   0      1          0          down   5      HTTP 503\n"), "{h}");
    assert!(
        h.contains(
            "10.0.0.11:80                 Route   1      2          0          -      1      \n"
        ),
        "{h}"
    );
}
