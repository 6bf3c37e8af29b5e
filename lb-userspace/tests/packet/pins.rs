//! The instance's pins: checked whole against this build before anything is
//! loaded over them, and locked by one daemon at a time.

use lb_common::names::tools;
use lb_userspace::{
    config::Limits,
    dataplane::{lock_instance, unload, Dataplane, TOOLS_OBJECT},
};

use crate::{common::*, tests, Test};

fn limits() -> Limits {
    Limits {
        max_services: 8,
        max_reals: 16,
        max_conns: 1024,
        max_maglev_slots: lb_common::DEFAULT_MAX_MAGLEV_SLOTS,
    }
}

fn load_error(dir: &std::path::Path, l: &Limits) -> String {
    match Dataplane::load(dir, l) {
        Ok(_) => panic!("loaded over incompatible pins"),
        Err(e) => e.to_string(),
    }
}

/// Pins of other limits or of another layout are refused with a message
/// saying how to start afresh; nothing is loaded over them.
fn pins_of_other_limits_or_layouts_are_refused() {
    let pins = PinDir::new("pins");
    drop(Dataplane::load(&pins.0, &limits()).unwrap());
    let more = Limits {
        max_reals: 32,
        ..limits()
    };
    let e = load_error(&pins.0, &more);
    assert!(
        e.contains("REALS has max_entries 16") && e.contains("need 32") && e.contains("--unload"),
        // (REALS is the first, in name order, of the maps sized by max_reals)
        "{e}"
    );
    // The pins are untouched: the same limits load again.
    drop(Dataplane::load(&pins.0, &limits()).unwrap());
    // A map of another layout under a map's name (here the benchmark's
    // 8-byte hash where SERVICES belongs).
    std::fs::remove_file(pins.0.join("SERVICES")).unwrap();
    let mut refs = aya::EbpfLoader::new().load(TOOLS_OBJECT).unwrap();
    refs.map_mut(tools::MAP_BACKENDS)
        .unwrap()
        .pin(pins.0.join("SERVICES"))
        .unwrap();
    let e = load_error(&pins.0, &limits());
    assert!(e.contains("SERVICES has key/value sizes 8/8"), "{e}");
}

/// One daemon per instance: the lock on the pin directory refuses a
/// second one (and `--unload`) while the first holds it.
fn an_instance_is_locked_by_one_daemon() {
    let pins = PinDir::new("lock");
    let first = lock_instance(&pins.0).unwrap();
    let e = lock_instance(&pins.0).unwrap_err().to_string();
    assert!(e.contains("in use by another lbd"), "{e}");
    let e = unload(&pins.0).unwrap_err().to_string();
    assert!(e.contains("in use by another lbd"), "{e}");
    assert!(pins.0.exists(), "unload removed a running instance's pins");
    drop(first);
    lock_instance(&pins.0).unwrap();
}

pub const TESTS: &[Test] = tests![
    pins_of_other_limits_or_layouts_are_refused,
    an_instance_is_locked_by_one_daemon,
];
