//! A VRRP backup forwards nothing for the VIPs it is backup for: new
//! connections and packets of known ones go to the kernel (`pass_standby`),
//! other VIPs keep being served, and once master again the known flows go
//! on to the real servers they had.

use crate::{common::*, tests, Test};

const TWO_VIPS: &str = r#"
services:
  - {protocol: tcp, address: 192.0.2.100, port: 80, scheduler: rr,
     real_servers: [{address: 192.0.2.11}, {address: 192.0.2.12}]}
  - {protocol: tcp, address: 192.0.2.101, port: 80, scheduler: rr,
     real_servers: [{address: 192.0.2.13}]}
"#;

fn a_backup_forwards_nothing_for_its_vips_and_resumes_as_master() {
    pin_to_cpu0();
    let mut t = TestDirector::new(table(TWO_VIPS), &RS3);
    let first = open(&mut t, "192.0.2.100", 5000, 80);
    // Backup for 192.0.2.100 only.
    t.d.change(|i| i.standby = ["192.0.2.100".parse().unwrap()].into())
        .unwrap();
    let ack = tcp("203.0.113.10", 5000, "192.0.2.100", 80, ACK).frame();
    let syn = tcp("203.0.113.10", 5001, "192.0.2.100", 80, SYN).frame();
    for f in [&ack, &syn] {
        let (a, out) = t.run(f);
        assert_eq!(a, XDP_PASS);
        assert_eq!(&out, f, "a passed frame is untouched");
    }
    assert_eq!(t.counter("pass_standby"), 2);
    // The other VIP is still served.
    let (a, _) = t.run(&tcp("203.0.113.10", 5002, "192.0.2.101", 80, SYN).frame());
    assert_eq!(a, XDP_TX);
    // Master again: the known flow goes on where it went.
    t.d.change(|i| i.standby.clear()).unwrap();
    let (a, out) = t.run(&ack);
    assert_eq!((a, out[5]), (XDP_TX, first));
    let (a, _) = t.run(&syn);
    assert_eq!(a, XDP_TX);
    assert_eq!(t.counter("pass_standby"), 2);
}

pub const TESTS: &[Test] = tests![a_backup_forwards_nothing_for_its_vips_and_resumes_as_master];
