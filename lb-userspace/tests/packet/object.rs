//! The XDP object itself: verifier budget, names.

use lb_userspace::model::Table;

use crate::{common::*, tests, Test};

/// Every program stays well inside the verifier's budget (1,000,000
/// processed instructions): a scheduler change that multiplies the
/// verifier's states fails here, not at load time on a director.
fn every_program_leaves_the_verifier_headroom() {
    let mut t = TestDirector::new(Table::default(), &[]);
    for name in ["lb", "lb_new", "lb_lblc", "lb_lblcr", "lb_lblcr_grow"] {
        let n = t.d.maps_mut().inner.verified_instructions(name).unwrap();
        assert!(n > 0, "{name}: the kernel reported no count");
        assert!(
            n < 250_000,
            "{name}: {n} instructions verified, a quarter of the budget"
        );
    }
}

pub const TESTS: &[Test] = tests![every_program_leaves_the_verifier_headroom,];
