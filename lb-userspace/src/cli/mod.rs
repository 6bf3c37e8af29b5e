//! lbadm: the ipvsadm-compatible command line (syntax, listings in
//! ipvsadm's formats, host and service names) and the real-server helper.

pub mod args;
pub mod format;
pub mod ipvsadm;
pub mod names;
pub mod realserver;
mod run;

pub use run::main;
