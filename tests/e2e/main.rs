//! Namespace end-to-end tests: real namespaces, veth, native XDP, the real
//! lbd and lbadm, python HTTP servers, curl and tcpdump. One lab per test,
//! torn down even on failure. They need root: without it every test is
//! reported as ignored, and with CI set it fails instead. Run by
//! `cargo xtask test` (one at a time: each builds a whole lab).

mod forwarding;
mod health;
mod lbadm;
mod sched;
mod support;

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
    // SAFETY: no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ci = std::env::var_os("CI").is_some();
    let topics: &[(&str, &[Test])] = &[
        ("forwarding", forwarding::TESTS),
        ("lbadm", lbadm::TESTS),
        ("health", health::TESTS),
        ("sched", sched::TESTS),
    ];
    let mut trials = Vec::new();
    for (topic, tests) in topics {
        for (name, f) in tests.iter().copied() {
            let t = Trial::test(format!("{topic}::{name}"), move || {
                if !root {
                    return Err(Failed::from(
                        "e2e tests need root (namespaces, XDP) and CI is set",
                    ));
                }
                f();
                Ok(())
            });
            trials.push(t.with_ignored_flag(!root && !ci));
        }
    }
    if !root && !ci {
        eprintln!("e2e tests need root (namespaces, XDP): reported as ignored");
    }
    libtest_mimic::run(&args, trials).exit_code()
}
