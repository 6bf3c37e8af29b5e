//! Large Maglev tables through the real object: an mh service with 1,000
//! real servers gets a 131,071-slot table in MAGLEV chunks; every new
//! connection goes where that table says (not where a 4,093-slot ring
//! would), stateless mid-stream packets too, and a restarted director
//! reads the table back and rewrites nothing.

use std::{collections::BTreeMap, net::IpAddr};

use lb_common::{flow_hash, svc_flags};
use lb_userspace::{
    config::Limits,
    dataplane::Dataplane,
    director::{codec::addr_bytes, Director},
};

use crate::{common::*, tests, Test};

const N: u16 = 1000;

fn real(i: u16) -> IpAddr {
    format!("2001:db8:1::{i:x}").parse().unwrap()
}

fn mac(i: u16) -> [u8; 6] {
    [0x02, 0, 0, 1, (i >> 8) as u8, i as u8]
}

fn yaml(n: u16) -> String {
    let reals: Vec<String> = (1..=n)
        .map(|i| format!("{{address: \"{}\"}}", real(i)))
        .collect();
    format!(
        "services:\n  - {{protocol: tcp, address: \"2001:db8::100\", port: 80, scheduler: mh,\n     real_servers: [{}]}}\n",
        reals.join(", ")
    )
}

fn mh_with_a_thousand_real_servers_uses_its_large_table() {
    pin_to_cpu0();
    let pins = PinDir::new("maglev");
    let limits = Limits {
        max_services: 8,
        max_reals: 2048,
        max_conns: 65536,
        max_maglev_slots: lb_common::DEFAULT_MAX_MAGLEV_SLOTS,
    };
    let load = || {
        let dp = Dataplane::load(&pins.0, &limits).unwrap();
        let mut d = Director::recover(dp).unwrap();
        d.set_director_mac(DIRECTOR_MAC).unwrap();
        d
    };
    let macs: Vec<(IpAddr, Option<[u8; 6]>)> = (1..=N).map(|i| (real(i), Some(mac(i)))).collect();
    let mut d = load();
    d.set_macs(&macs).unwrap();
    // 999 servers first: the table with 1,000 is the second generation,
    // in the run reserved for it (not at chunk 0).
    d.set_table(table(&yaml(N - 1))).unwrap();
    d.set_table(table(&yaml(N))).unwrap();
    let p = d.published().clone();
    let v = *p.services.values().next().unwrap();
    assert_ne!(v.flags & svc_flags::MAGLEV_LARGE, 0);
    let live = p.chunks[&(v.id * 2 + (v.gen as u32 & 1))];
    assert_ne!(live.0, 0, "{:?}", p.chunks);
    let ring = &p.rings[&v.id].1;
    assert_eq!(ring.len(), 131_071);
    // Real-server slot -> MAC.
    let by_slot: BTreeMap<u32, [u8; 6]> = p.reals.iter().map(|(id, r)| (*id, r.mac)).collect();
    let want = |client: &str| -> [u8; 6] {
        let (saddr, _) = addr_bytes(&client.parse().unwrap());
        by_slot[&ring[(flow_hash(&saddr, 0) as usize) % ring.len()]]
    };
    let mut beyond_small = 0;
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..3000u32 {
        let client = format!("2001:db8:ffff::{:x}:{:x}", i >> 16, i & 0xffff);
        let (saddr, _) = addr_bytes(&client.parse().unwrap());
        if (flow_hash(&saddr, 0) as usize) % ring.len() >= lb_common::RING_SIZE {
            beyond_small += 1;
        }
        let (a, out) = d
            .maps_mut()
            .test_run(&tcp(&client, 40000, "2001:db8::100", 80, SYN).frame())
            .unwrap();
        assert_eq!(a, XDP_TX, "{client}");
        assert_eq!(
            out[..6],
            want(&client),
            "{client}: not where the table says"
        );
        seen.insert(out[5] as u16 | (out[4] as u16) << 8);
    }
    assert!(
        beyond_small > 2500,
        "{beyond_small} lookups past slot 4,093"
    );
    assert!(
        seen.len() > 900,
        "{} servers took the 3,000 clients",
        seen.len()
    );
    // mh forwards a mid-stream packet without an entry by the same table.
    let client = "2001:db8:ffff::7:1";
    let (a, out) = d
        .maps_mut()
        .test_run(&tcp(client, 40001, "2001:db8::100", 80, ACK).frame())
        .unwrap();
    assert_eq!((a, &out[..6]), (XDP_TX, &want(client)[..]));
    drop(d);
    // A new daemon reads the table back: reapplying writes nothing, and
    // connections keep going where the table says.
    let mut d2 = Director::recover(Dataplane::load(&pins.0, &limits).unwrap()).unwrap();
    assert_eq!(d2.published().rings, p.rings);
    assert_eq!(d2.published().chunks.len(), 1);
    assert_eq!(d2.set_table(table(&yaml(N))).unwrap(), 0);
    let client = "2001:db8:ffff::9:9";
    let (a, out) = d2
        .maps_mut()
        .test_run(&tcp(client, 40000, "2001:db8::100", 80, SYN).frame())
        .unwrap();
    assert_eq!((a, &out[..6]), (XDP_TX, &want(client)[..]));
}

pub const TESTS: &[Test] = tests![mh_with_a_thousand_real_servers_uses_its_large_table];
