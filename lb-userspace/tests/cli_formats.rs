//! Golden tests of every listing format against ipvsadm's printf formats
//! (REFERENCE.md), and the ipvsadm-save corpus: every rule line parses, and
//! `-Sn` output restores to the same table. No root needed.

use lb_userspace::{
    cli::{
        format::{self, largenum, Fmt},
        ipvsadm::restore_requests,
    },
    control::{Listing, RateView, RealView, Request, ServiceView, StatsView},
    model::{Forward, RealSpec, ServiceAddr, Table},
};

/// The save corpus: every option ipvsadm-save writes (and a few more a
/// hand-written rules file has), IPv4 and IPv6, persistence, netmask,
/// one-packet, scheduler flags, thresholds, port groups.
const CORPUS: &str = "\
# web: persistent wlc with a /24 granularity
-A -t 192.0.2.100:80 -s wlc -p 360 -M 255.255.255.0
-a -t 192.0.2.100:80 -r 192.0.2.11:80 -g -w 1
-a -t 192.0.2.100:80 -r 192.0.2.12:80 -g -w 3 -x 100 -y 50
-A -t 192.0.2.100:443 -s rr
-a -t 192.0.2.100:443 -r 192.0.2.11:443 -g -w 0
-A -u 192.0.2.100:53 -s sh -b sh-fallback,sh-port
-a -u 192.0.2.100:53 -r 192.0.2.13:53 -g -w 2
-A -u 192.0.2.100:5353 -s rr -o
-a -u 192.0.2.100:5353 -r 192.0.2.13:5353 -g -w 1
-A -t 192.0.2.101:0 -s lblc -p 600
-a -t 192.0.2.101:0 -r 192.0.2.11:0 -g -w 1
-A -t [2001:db8::100]:80 -s mh -p 360 -M 64 -b mh-fallback,mh-port
-a -t [2001:db8::100]:80 -r [2001:db8::11]:80 -g -w 65535
-A -t 192.0.2.102:80 -s lblcr
-A -t 192.0.2.103:80 -s twos
-A -t 192.0.2.104:80 -s sed
-A -t 192.0.2.105:80 -s nq
-A -t 192.0.2.106:80 -s fo
-A -t 192.0.2.107:80 -s ovf
-A -t 192.0.2.108:80 -s dh
-A -t 192.0.2.109:80 -s lc
-A -t 192.0.2.110:80 -s wrr
-A -f 7 -s rr -p 300
-a -f 7 -r 192.0.2.11 -g -w 2
";

/// What the daemon does with a batch: every request against a table.
fn apply(t: &mut Table, reqs: Vec<(usize, Request)>) {
    for (_, r) in reqs {
        lb_userspace::control::edit_table(t, r).unwrap();
    }
}

/// A listing of `t` as the daemon would send it (no traffic).
fn listing(t: &Table) -> Listing {
    Listing {
        conn_table_size: 4096,
        groups: t.groups.clone().into_iter().collect(),
        vrrp: Vec::new(),
        sync: Vec::new(),
        bgp: None,
        services: t
            .services
            .values()
            .enumerate()
            .map(|(i, s)| ServiceView {
                id: i as u32,
                spec: s.spec.clone(),
                stats: StatsView::default(),
                rate: RateView::default(),
                reals: s
                    .reals
                    .values()
                    .enumerate()
                    .map(|(j, r)| real_view(j as u32, *r))
                    .collect(),
            })
            .collect(),
    }
}

fn real_view(id: u32, spec: RealSpec) -> RealView {
    RealView {
        id,
        spec,
        health: None,
        effective_weight: spec.weight,
        in_service: true,
        sorry: false,
        active_conns: 0,
        inactive_conns: 0,
        persistent_conns: 0,
        stats: StatsView::default(),
        rate: RateView::default(),
        mac: None,
        mac_stale: false,
    }
}

fn numeric() -> Fmt {
    Fmt {
        numeric: true,
        ..Default::default()
    }
}

#[test]
fn the_save_corpus_parses_and_round_trips() {
    let reqs = restore_requests(CORPUS).unwrap();
    assert_eq!(reqs.len(), 24, "every rule line, comments skipped");
    let mut t = Table::default();
    apply(&mut t, reqs);
    assert_eq!(t.services.len(), 16);
    let fw = &t.services[&ServiceAddr::fwmark(7, false)];
    assert_eq!(fw.spec.persistent, Some(300));
    let web = t.services.values().next().unwrap();
    assert_eq!(web.spec.netmask, Some(24));
    let rs12 = web.reals.values().nth(1).unwrap();
    assert_eq!(
        (rs12.weight, rs12.u_threshold, rs12.l_threshold),
        (3, 100, 50)
    );
    // -Sn of that table restores to the same table, and prints the same
    // rules again (a fixed point).
    let saved = format::rules(&listing(&t), &numeric());
    let mut t2 = Table::default();
    apply(&mut t2, restore_requests(&saved).unwrap());
    assert_eq!(t2, t, "round trip through -Sn:\n{saved}");
    assert_eq!(format::rules(&listing(&t2), &numeric()), saved);
    // ipvsadm-save's own lines, byte for byte.
    assert!(
        saved.starts_with(
            "-A -t 192.0.2.100:80 -s wlc -p 360 -M 255.255.255.0\n\
         -a -t 192.0.2.100:80 -r 192.0.2.11:80 -g -w 1\n\
         -a -t 192.0.2.100:80 -r 192.0.2.12:80 -g -w 3 -x 100 -y 50\n"
        ),
        "{saved}"
    );
    assert!(saved.contains("-A -u 192.0.2.100:53 -s sh -b sh-fallback,sh-port\n"));
    assert!(saved.contains("-A -u 192.0.2.100:5353 -s rr -o\n"));
    assert!(saved.contains("-A -t [2001:db8::100]:80 -s mh -p 360 -M 64 -b mh-fallback,mh-port\n"));
    assert!(
        saved.ends_with("-A -f 7 -s rr -p 300\n-a -f 7 -r 0.0.0.0:0 -g -w 2\n")
            || saved.contains("-A -f 7 -s rr -p 300\n-a -f 7 -r 192.0.2.11:0 -g -w 2\n"),
        "{saved}"
    );
}

#[test]
fn bad_rule_lines_are_named_by_line_number() {
    let e = restore_requests("-A -t 192.0.2.100:80 -s rr\n-A -t 192.0.2.100:81 -s nosuch\n")
        .unwrap_err();
    assert!(
        e.starts_with("line 2: -s: unknown scheduler 'nosuch'"),
        "{e}"
    );
    let e = restore_requests("-A -t 192.0.2.100:80\n\n-a -t 192.0.2.100:80 -r 192.0.2.11 -m\n")
        .unwrap_err();
    assert!(e.starts_with("line 3: -m"), "{e}");
    let e = restore_requests("-L -n\n").unwrap_err();
    assert!(e.starts_with("line 1: not a rule"), "{e}");
    let e = restore_requests("-A -t 192.0.2.100:80 -s rr stray\n").unwrap_err();
    assert_eq!(e, "line 1: unexpected argument stray");
    let e = restore_requests("counters\n").unwrap_err();
    assert!(e.starts_with("line 1: not a rule"), "{e}");
}

/// As ipvsadm reads -R input: the word `ipvsadm` dropped wherever it
/// stands (a path to it at the start too), blank lines skipped, a word
/// starting with `#` starts a comment; every request keeps its line number
/// for the daemon's errors.
#[test]
fn restore_input_is_read_as_ipvsadm_reads_it() {
    let text = "\
# a comment
ipvsadm -A -t 192.0.2.100:80 -s rr   # trailing comment

/sbin/ipvsadm -a -t 192.0.2.100:80 -r 192.0.2.11 ipvsadm -w 2\r
\t-a\t-t 192.0.2.100:80 -r 192.0.2.12\r
ipvsadm
";
    let reqs = restore_requests(text).unwrap();
    let lines: Vec<usize> = reqs.iter().map(|(n, _)| *n).collect();
    assert_eq!(lines, vec![2, 4, 5]);
    // A failure in the daemon's batch names the input line.
    let (lines, mut requests): (Vec<usize>, Vec<Request>) = reqs.into_iter().unzip();
    requests.push(Request::DelService {
        service: ServiceAddr::new(
            lb_userspace::model::Protocol::Tcp,
            "192.0.2.200".parse().unwrap(),
            80,
        ),
    });
    let mut lines = lines;
    lines.push(9);
    let e = lb_userspace::control::edit_table(
        &mut Table::default(),
        Request::Batch { requests, lines },
    )
    .unwrap_err();
    assert!(e.starts_with("line 9: "), "{e}");
}

fn fixture(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ipvsadm")
        .join(name);
    std::fs::read_to_string(&p).unwrap()
}

/// Rule files from public repositories (tests/fixtures/ipvsadm/README.md):
/// what ipvsadm accepts is read, what this director cannot do (tunnels,
/// NAT) is refused with the reason, on the right line.
#[test]
fn public_rule_files_read_as_ipvsadm_reads_them() {
    // ipvsadm 1.31's own save output: every -i line carries --tun-type.
    let save = fixture("ravel-save.rules");
    let e = restore_requests(&save).unwrap_err();
    assert!(
        e.starts_with("line 9: -i (tunnelling) is not supported"),
        "{e}"
    );
    let dr: String = save
        .lines()
        .filter(|l| !l.contains(" -i "))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut t = Table::default();
    apply(&mut t, restore_requests(&dr).unwrap());
    let mh = t
        .services
        .values()
        .find(|s| s.spec.addr.port == 4000)
        .unwrap();
    assert!(mh.spec.flags.mh_fallback && mh.spec.flags.mh_port);
    // Generated -R input: -b flag-1,flag-2 on mh is mh-fallback,mh-port.
    let restore = fixture("ravel-restore.rules");
    let e = restore_requests(&restore).unwrap_err();
    assert!(e.starts_with("line 6: -i"), "{e}");
    let head: String = restore.lines().take(5).map(|l| format!("{l}\n")).collect();
    let mut t = Table::default();
    apply(&mut t, restore_requests(&head).unwrap());
    let mh = t
        .services
        .values()
        .find(|s| s.spec.addr.port == 443)
        .unwrap();
    assert!(
        mh.spec.flags.mh_fallback && mh.spec.flags.mh_port,
        "{:?}",
        mh.spec.flags
    );
    assert_eq!(t.services.values().next().unwrap().reals.len(), 3);
    // A comment, service names (/etc/services), NAT refused on its line.
    let e = restore_requests(&fixture("mypjb-docker.rules")).unwrap_err();
    assert!(
        e.starts_with("line 3: -m (masquerading/NAT) is not supported"),
        "{e}"
    );
    // The man page's tunnels: parsed, refused as -i.
    let e = restore_requests(&fixture("ipvsadm-man.rules")).unwrap_err();
    assert!(
        e.starts_with("line 3: -i (tunnelling) is not supported"),
        "{e}"
    );
    let e = restore_requests("-a -t 192.0.2.100:80 -r 192.0.2.11 --tun-type gue --tun-port 6080\n")
        .unwrap_err();
    assert!(e.contains("conflict with the forward method"), "{e}");
}

fn sample() -> Listing {
    let mut t = Table::default();
    apply(
        &mut t,
        restore_requests(
            "-A -t 10.0.0.100:80 -s wlc -p 360\n\
             -a -t 10.0.0.100:80 -r 10.0.0.11:80 -g -w 1 -x 200 -y 100\n\
             -a -t 10.0.0.100:80 -r 10.0.0.12:80 -g -w 2\n\
             -A -f 3 -s rr\n",
        )
        .unwrap(),
    );
    let mut l = listing(&t);
    let s = &mut l.services[0];
    s.stats = StatsView {
        conns: 123_456_789,
        in_packets: 5_000_000_000,
        in_bytes: 1_234_567_890_123_456,
    };
    s.rate = RateView {
        cps: 12,
        in_pps: 3400,
        in_bps: 2_500_000,
    };
    let r = &mut s.reals[0];
    r.active_conns = 3;
    r.inactive_conns = 12;
    r.persistent_conns = 4;
    r.stats = StatsView {
        conns: 99,
        in_packets: 1000,
        in_bytes: 150_000,
    };
    r.rate = RateView {
        cps: 1,
        in_pps: 20,
        in_bps: 30_000,
    };
    l
}

#[test]
fn largenum_switches_units_like_ipvsadm() {
    assert_eq!(largenum(99_999_999, false), " 99999999");
    assert_eq!(largenum(100_000_000, false), "  100000K");
    assert_eq!(largenum(5_000_000_000, false), "    5000M");
    assert_eq!(largenum(1_234_567_890_123, false), "    1234G");
    assert_eq!(largenum(1_234_567_890_123_456, false), "    1234T");
    assert_eq!(largenum(5_000_000_000, true), " 5000000000");
    assert_eq!(largenum(42, true), "       42");
}

#[test]
fn golden_plain_listing() {
    let want = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.0.0.100:80 wlc persistent 360
  -> 10.0.0.11:80                 Route   1      3          12        
  -> 10.0.0.12:80                 Route   2      0          0         
FWM  3 rr
";
    assert_eq!(format::listing(&sample(), &numeric()), want);
}

#[test]
fn golden_stats_and_exact() {
    let want = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  10.0.0.100:80                 123456K    5000M        0    1234T        0
  -> 10.0.0.11:80                       99     1000        0   150000        0
  -> 10.0.0.12:80                        0        0        0        0        0
FWM  3                                   0        0        0        0        0
";
    let f = Fmt {
        stats: true,
        ..numeric()
    };
    assert_eq!(format::listing(&sample(), &f), want);
    let exact = format::listing(&sample(), &Fmt { exact: true, ..f });
    assert!(
        exact.contains("TCP  10.0.0.100:80                123456789 5000000000        0 1234567890123456        0\n"),
        "{exact}"
    );
}

#[test]
fn golden_rate() {
    let want = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS
  -> RemoteAddress:Port
TCP  10.0.0.100:80                      12     3400        0  2500000        0
  -> 10.0.0.11:80                        1       20        0    30000        0
  -> 10.0.0.12:80                        0        0        0        0        0
FWM  3                                   0        0        0        0        0
";
    let f = Fmt {
        rate: true,
        ..numeric()
    };
    assert_eq!(format::listing(&sample(), &f), want);
}

#[test]
fn golden_thresholds_and_persistent_conn() {
    let want = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn 
  -> RemoteAddress:Port
TCP  10.0.0.100:80 wlc persistent 360
  -> 10.0.0.11:80                 200        100        3          12        
  -> 10.0.0.12:80                 0          0          0          0         
FWM  3 rr
";
    let f = Fmt {
        thresholds: true,
        ..numeric()
    };
    assert_eq!(format::listing(&sample(), &f), want);
    let want = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn 
  -> RemoteAddress:Port
TCP  10.0.0.100:80 wlc persistent 360
  -> 10.0.0.11:80                 1         4           3          12        
  -> 10.0.0.12:80                 2         0           0          0         
FWM  3 rr
";
    let f = Fmt {
        persistent_conn: true,
        ..numeric()
    };
    assert_eq!(format::listing(&sample(), &f), want);
}

#[test]
fn nosort_keeps_creation_order_and_names_come_from_local_files() {
    let mut l = sample();
    l.services[0].reals[0].id = 9;
    let sorted = format::listing(&l, &numeric());
    let nosort = format::listing(
        &l,
        &Fmt {
            nosort: true,
            ..numeric()
        },
    );
    let pos = |s: &str, x: &str| s.find(x).unwrap();
    assert!(pos(&sorted, "10.0.0.11:80") < pos(&sorted, "10.0.0.12:80"));
    assert!(pos(&nosort, "10.0.0.12:80") < pos(&nosort, "10.0.0.11:80"));
    let _ = Forward::Route;
}
