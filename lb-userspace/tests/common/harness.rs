//! The test harness of the suites that need root (packet tests here, the
//! namespace suite in tests/e2e, which includes this file): tests listed per
//! topic file, run by libtest-mimic. Without root every test is reported as
//! ignored (never as passed); with CI set it fails instead.

use std::process::ExitCode;

use libtest_mimic::{Arguments, Failed, Trial};

/// A test: its name and its body (which panics on failure).
pub type Test = (&'static str, fn());

/// `tests![a, b]`: the (name, function) list of a topic file.
#[macro_export]
macro_rules! tests {
    ($($f:ident),* $(,)?) => { &[$((stringify!($f), $f as fn())),*] };
}

/// Runs `topics`' tests; `needs` says what root gives them ("BPF_PROG_TEST_RUN").
pub fn run(topics: &[(&str, &[Test])], needs: &'static str) -> ExitCode {
    let args = Arguments::from_args();
    // SAFETY: no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ci = std::env::var_os("CI").is_some();
    let mut trials = Vec::new();
    for (topic, tests) in topics {
        for (name, f) in tests.iter().copied() {
            let t = Trial::test(format!("{topic}::{name}"), move || {
                if !root {
                    return Err(Failed::from(format!("needs root ({needs}) and CI is set")));
                }
                f();
                Ok(())
            });
            trials.push(t.with_ignored_flag(!root && !ci));
        }
    }
    if !root && !ci {
        eprintln!("these tests need root ({needs}): reported as ignored");
    }
    libtest_mimic::run(&args, trials).exit_code()
}
