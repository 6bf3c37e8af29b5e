//! The end-to-end suite lives in the `e2e` test target (main.rs).
