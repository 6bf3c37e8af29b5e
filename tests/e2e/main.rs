//! Namespace end-to-end tests: real namespaces, veth, native XDP, the real
//! lbd and lbadm, python HTTP servers, curl and tcpdump. One lab per test,
//! torn down even on failure. Run by `cargo xtask test` (one at a time:
//! each builds a whole lab); see lb-userspace/tests/common/harness.rs for
//! how they report without root.

mod browser;
mod console;
mod ecmp;
mod forwarding;
mod ha;
mod health;
mod join;
mod lbadm;
mod neighbours;
mod ops;
mod restart;
mod sched;
mod service;
mod support;

#[path = "../../lb-userspace/tests/common/harness.rs"]
mod harness;

pub use harness::Test;

fn main() -> std::process::ExitCode {
    harness::run(
        &[
            ("forwarding", forwarding::TESTS),
            ("restart", restart::TESTS),
            ("lbadm", lbadm::TESTS),
            ("health", health::TESTS),
            ("neighbours", neighbours::TESTS),
            ("sched", sched::TESTS),
            ("service", service::TESTS),
            ("ops", ops::TESTS),
            ("join", join::TESTS),
            ("console", console::TESTS),
            ("ha", ha::TESTS),
            ("ecmp", ecmp::TESTS),
        ],
        "namespaces, XDP",
    )
}
