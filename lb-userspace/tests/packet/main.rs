//! Packet tests: the real XDP object under BPF_PROG_TEST_RUN, with the maps
//! filled by the daemon's own code (the director's plan and commit). One
//! binary, one file per topic. They need root: without it every test is
//! reported as ignored, and with CI set it fails instead.

#[path = "../common/mod.rs"]
mod common;
mod fixture;

mod commit;
mod flows;
mod health;
mod object;
mod parse;
mod persist;
mod sched;
mod sched_state;

use std::process::ExitCode;

use libtest_mimic::{Arguments, Failed, Trial};

/// A test: its name and its body (which panics on failure).
pub type Test = (&'static str, fn());

/// `tests![a, b]`: the (name, function) list of a topic file.
#[macro_export]
macro_rules! tests {
    ($($f:ident),* $(,)?) => { &[$((stringify!($f), $f as fn())),*] };
}

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let root = common::is_root();
    let ci = std::env::var_os("CI").is_some();
    let topics: &[(&str, &[Test])] = &[
        ("parse", parse::TESTS),
        ("flows", flows::TESTS),
        ("sched", sched::TESTS),
        ("sched_state", sched_state::TESTS),
        ("persist", persist::TESTS),
        ("health", health::TESTS),
        ("commit", commit::TESTS),
        ("object", object::TESTS),
    ];
    let mut trials = Vec::new();
    for (topic, tests) in topics {
        for (name, f) in tests.iter().copied() {
            let t = Trial::test(format!("{topic}::{name}"), move || {
                if !root {
                    return Err(Failed::from(
                        "packet tests need root (BPF_PROG_TEST_RUN) and CI is set",
                    ));
                }
                f();
                Ok(())
            });
            // Without root and outside CI: reported as ignored, not passed.
            trials.push(t.with_ignored_flag(!root && !ci));
        }
    }
    if !root && !ci {
        eprintln!("packet tests need root (BPF_PROG_TEST_RUN): reported as ignored");
    }
    libtest_mimic::run(&args, trials).exit_code()
}
