//! The XDP object itself: verifier budget, names.

use lb_userspace::model::Table;

use crate::{common::*, tests, Test};

/// Every program stays well inside the verifier's budget (1,000,000
/// processed instructions): a scheduler change that multiplies the
/// verifier's states fails here, not at load time on a director.
fn every_program_leaves_the_verifier_headroom() {
    let mut t = TestDirector::new(Table::default(), &[]);
    for name in lb_common::names::prog::ALL {
        let n = t.d.maps_mut().inner.verified_instructions(name).unwrap();
        assert!(n > 0, "{name}: the kernel reported no count");
        assert!(
            n < 250_000,
            "{name}: {n} instructions verified, a quarter of the budget"
        );
    }
}

/// The objects hold exactly the maps and programs lb_common::names declares:
/// the production object its maps and programs, the tools object
/// (lb-tools) the lab's and the benchmark's, and nothing of each other's.
fn the_objects_hold_exactly_the_declared_maps_and_programs() {
    use std::collections::BTreeSet;

    use lb_common::names::{self, tools};
    use lb_userspace::dataplane::{OBJECT, TOOLS_OBJECT};

    /// Map and program names of `object` once loaded (maps created, pinned
    /// under `pins`; programs not loaded into the kernel). Data sections
    /// (.rodata, .bss: names starting with a dot) are not declared maps.
    fn contents(object: &[u8], pins: &PinDir) -> (BTreeSet<String>, BTreeSet<String>) {
        std::fs::create_dir_all(&pins.0).unwrap();
        let ebpf = aya::EbpfLoader::new()
            .default_map_pin_directory(&pins.0)
            .load(object)
            .expect("load the object");
        let maps = ebpf
            .maps()
            .map(|(name, _)| name.to_string())
            .filter(|name| !name.starts_with('.'))
            .collect();
        let programs = ebpf.programs().map(|(name, _)| name.to_string()).collect();
        (maps, programs)
    }
    let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();

    let pins = PinDir::new("names");
    let (maps, programs) = contents(OBJECT, &pins);
    let declared: Vec<&str> = names::MAPS.iter().map(|(name, _)| *name).collect();
    assert_eq!(maps, set(&declared), "maps of the production object");
    assert_eq!(
        programs,
        set(&names::prog::ALL),
        "programs of the production object"
    );

    let pins = PinDir::new("tools-names");
    let (maps, programs) = contents(TOOLS_OBJECT, &pins);
    assert_eq!(
        maps,
        set(&[
            tools::MAP_BACKENDS,
            tools::MAP_SINK_COUNT,
            tools::MAP_CONNS,
            tools::MAP_REALS,
            tools::MAP_STATS,
            tools::MAP_CONNS4,
            tools::MAP_NEW_CONNS,
            tools::MAP_FLOOR_LB
        ]),
        "maps of the tools object"
    );
    assert_eq!(
        programs,
        set(&[
            tools::PASS,
            tools::FLOOR,
            tools::MINIMAL_LB,
            tools::SINK,
            tools::GEN,
            tools::CONN_LOOKUP,
            tools::CONN_STATS,
            tools::CONN4_LOOKUP,
            tools::CONN_INSERT,
            tools::FLOOR_LB
        ]),
        "programs of the tools object"
    );
}

/// The lab's floor load balancer (the benchmark's reference for new
/// connections through the lab): TCP to VIP:port goes to the real server
/// the source port picks, the same one for every packet of a connection;
/// anything else to the kernel.
fn the_floor_load_balancer_spreads_by_source_port_and_passes_the_rest() {
    use aya::programs::{TestRun as _, TestRunOptions, Xdp};
    use lb_common::names::tools;
    use lb_userspace::dataplane::TOOLS_OBJECT;

    let mut ebpf = aya::EbpfLoader::new().load(TOOLS_OBJECT).unwrap();
    let macs = [rs_mac(11), rs_mac(12), rs_mac(13)];
    let mut table: aya::maps::Array<_, [u8; 8]> =
        aya::maps::Array::try_from(ebpf.take_map(tools::MAP_FLOOR_LB).unwrap()).unwrap();
    let mut head = |port: u16| {
        let vip = "192.0.2.100".parse().unwrap();
        for (slot, v) in lb_userspace::dataplane::floor_lb_entries(vip, port, &macs) {
            table.set(slot, v, 0).unwrap();
        }
    };
    head(80);
    let prog: &mut Xdp = ebpf
        .program_mut(tools::FLOOR_LB)
        .unwrap()
        .try_into()
        .unwrap();
    prog.load().unwrap();
    let run = |frame: Vec<u8>| -> (u32, Vec<u8>) {
        let mut out = vec![0u8; frame.len()];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .unwrap();
        (r.return_value, out)
    };
    for sport in [40000u16, 40001, 40002, 40003] {
        for flags in [SYN, ACK] {
            let (verdict, out) = run(tcp("203.0.113.10", sport, "192.0.2.100", 80, flags).frame());
            assert_eq!(verdict, XDP_TX, "sport {sport}");
            assert_eq!(out[..6], macs[sport as usize % 3], "sport {sport}");
        }
    }
    for frame in [
        tcp("203.0.113.10", 40000, "192.0.2.100", 443, SYN).frame(),
        tcp("203.0.113.10", 40000, "192.0.2.2", 80, SYN).frame(),
        udp("203.0.113.10", 40000, "192.0.2.100", 80).frame(),
    ] {
        assert_eq!(run(frame).0, XDP_PASS);
    }
    // Port 0: every port of the VIP.
    head(0);
    let (verdict, out) = run(tcp("203.0.113.10", 40001, "192.0.2.100", 5201, SYN).frame());
    assert_eq!((verdict, &out[..6]), (XDP_TX, &macs[40001 % 3][..]));
}

pub const TESTS: &[Test] = tests![
    every_program_leaves_the_verifier_headroom,
    the_objects_hold_exactly_the_declared_maps_and_programs,
    the_floor_load_balancer_spreads_by_source_port_and_passes_the_rest,
];
