//! lb-userspace: the director daemon (`lbd`), the ipvsadm-compatible CLI
//! (`lbadm`) and the real-server helper, as a library so that tests and xtask
//! drive the same code.
pub mod apply;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod director;
pub mod format;
pub mod health;
pub mod ipvsadm;
pub mod model;
pub mod neigh;
pub mod realserver;
pub mod resolve;
pub mod sched;
