//! lb-userspace: the director daemon (`lbd`), the ipvsadm-compatible CLI
//! (`lbadm`) and the real-server helper, as a library so that tests and the
//! benchmark drive the same code.
//!
//! Rooms, each depending only on those listed before it:
//! - [`model`]: the service table as the operator declares it, the
//!   scheduler table;
//! - [`dataplane`]: loading, pinning and attaching the XDP object, and the
//!   typed map operations (the only room that touches aya maps);
//! - [`health`]: check specs, probes, tasks, the health policy;
//! - [`config`]: the YAML schema, its validation and export;
//! - [`control`]: the control protocol between lbd and its clients, and
//!   how a request edits the table;
//! - [`director`]: the pure planner, the transactional commit, ids, rings,
//!   the connection sweep, statistics and listings;
//! - [`daemon`]: lbd's start, its one change path and request dispatch;
//! - [`cli`]: lbadm, the ipvsadm-compatible command line.
//!

/// Files written whole.
pub mod files;

pub mod model;

pub mod netif;

pub mod dataplane;

pub mod health;

pub mod config;

pub mod control;

pub mod director;

pub mod vrrp;

/// Announcing VIPs by BGP through BIRD (ECMP over several directors).
pub mod bgp;
pub mod sync;

/// `lbadm diagnose`: findings on a director or a real server.
pub mod diagnose;

/// lbd's TCP listeners: TLS, bounds, refusal logs.
pub mod listen;

/// Real servers that register themselves (`lbadm realserver join`).
pub mod join;

pub mod daemon;
/// `/metrics` for Prometheus.
pub mod metrics;

/// The web console on the HTTP listener.
pub mod console;

pub mod cli;
