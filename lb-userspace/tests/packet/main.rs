//! Packet tests: the real XDP object under BPF_PROG_TEST_RUN, with the maps
//! filled by the daemon's own code (the director's plan and commit). One
//! binary, one file per topic; see common/harness.rs for how they report
//! without root.

#[path = "../common/mod.rs"]
mod common;
mod fixture;
#[path = "../common/rng.rs"]
mod rng;

mod commit;
mod daemon_down;
mod flows;
mod fuzz;
mod health;
mod hostile;
mod maglev;
mod object;
mod parse;
mod persist;
mod pins;
mod prefilter;
mod sched;
mod sched_state;
mod standby;

#[path = "../common/harness.rs"]
mod harness;

pub use harness::Test;

fn main() -> std::process::ExitCode {
    harness::run(
        &[
            ("parse", parse::TESTS),
            ("flows", flows::TESTS),
            ("sched", sched::TESTS),
            ("sched_state", sched_state::TESTS),
            ("maglev", maglev::TESTS),
            ("prefilter", prefilter::TESTS),
            ("persist", persist::TESTS),
            ("health", health::TESTS),
            ("hostile", hostile::TESTS),
            ("commit", commit::TESTS),
            ("daemon_down", daemon_down::TESTS),
            ("object", object::TESTS),
            ("pins", pins::TESTS),
            ("standby", standby::TESTS),
            ("fuzz", fuzz::TESTS),
        ],
        "BPF_PROG_TEST_RUN",
    )
}
