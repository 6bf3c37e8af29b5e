//! Prints how many instructions the kernel's verifier processed for the
//! XDP programs (a guard against scheduler changes that blow up
//! verification). Needs root: `cargo run --example verifier_cost`.
use lb_userspace::{config::Limits, dataplane::Dataplane};

fn main() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/lb-verifier-cost-{}",
        std::process::id()
    ));
    let res = Dataplane::load(&dir, &Limits::default());
    let _ = std::fs::remove_dir_all(&dir);
    let mut dp = res?;
    for name in lb_common::names::prog::ALL {
        let n = dp.verified_instructions(name)?;
        println!("{name}: {n} instructions verified (limit 1000000)");
    }
    Ok(())
}
