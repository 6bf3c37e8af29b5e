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
            tools::MAP_NEW_CONNS
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
            tools::CONN_INSERT
        ]),
        "programs of the tools object"
    );
}

pub const TESTS: &[Test] = tests![
    every_program_leaves_the_verifier_headroom,
    the_objects_hold_exactly_the_declared_maps_and_programs,
];
