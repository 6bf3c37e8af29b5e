//! xtask: set-up, the namespace lab, the demo, the test tiers.
pub mod demoecmp;
pub mod demoha;
pub mod ecmpbench;
pub mod ecmplab;
pub mod habench;
pub mod halab;
pub mod lab;
pub mod labbench;
pub mod soak;

use std::path::PathBuf;

/// The workspace root (parent of xtask/).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The lab's paths: binaries from `LB_BIN_DIR`, else target/debug.
pub fn paths() -> lab::Paths {
    let root = root();
    let bin_dir = std::env::var_os("LB_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/debug"));
    lab::Paths { bin_dir, root }
}
