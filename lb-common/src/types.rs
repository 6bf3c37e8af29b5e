//! Map keys and values. Every one is `#[repr(C)]`, has explicit padding and
//! a compile-time size check; addresses are 16-byte arrays in network order
//! (IPv4 in the first four bytes), ports in network order as on the wire.

use crate::{sched, RING_SIZE};

/// Key of the SERVICES map: (protocol, VIP, port).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ServiceKey {
    pub addr: [u8; 16],
    /// Port in network order; 0 = every port of the VIP.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 20);

/// Value of the SERVICES map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceValue {
    /// Index into RINGS (times two, plus `gen`), SVC_STATS and CURSORS.
    pub id: u32,
    /// Number of valid entries in the active ring; 0 = no real server available.
    pub ring_len: u32,
    /// Flags from [`crate::svc_flags`].
    pub flags: u32,
    /// Persistence timeout in seconds (0 = not persistent).
    pub persist_timeout: u32,
    /// The fwmark of a port group (0 for a plain service).
    pub fwmark: u32,
    /// Scheduler from [`sched`].
    pub sched: u8,
    /// Which of the service's two rings is live (0 or 1).
    pub gen: u8,
    /// Persistence granularity (-M) as a prefix length of the client address.
    pub persist_prefix: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<ServiceValue>() == 24);

/// One scheduling table: real-server ids. Entry `i < ring_len` is valid.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    pub reals: [u32; RING_SIZE],
}
const _: () = assert!(core::mem::size_of::<Ring>() == RING_SIZE * 4);

/// One entry of the MAGLEV map: [`crate::MAGLEV_CHUNK`] slots of a large
/// Maglev table (real-server ids).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevChunk {
    pub reals: [u32; crate::MAGLEV_CHUNK],
}

/// Value of the REALS array (indexed by real-server id).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RealServer {
    pub addr: [u8; 16],
    pub mac: [u8; 6],
    pub flags: u16,
    /// Service id this real server belongs to.
    pub svc_id: u32,
    /// Port in network order (DR: same as the virtual port).
    pub port: u16,
    pub family: u8,
    pub _pad: u8,
    pub weight: u32,
    /// Connection thresholds (-x upper, -y lower; 0 = none). Over `upper`
    /// (active + inactive) the server is overloaded: no new connections
    /// until it drops below `lower` (3/4 of upper when 0).
    pub u_threshold: u32,
    pub l_threshold: u32,
}
const _: () = assert!(core::mem::size_of::<RealServer>() == 44);

/// Key of the lblc/lblcr destination cache.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct LblcKey {
    pub daddr: [u8; 16],
    pub svc_id: u32,
}
const _: () = assert!(core::mem::size_of::<LblcKey>() == 20);

/// lblc: `reals[0]` is the destination's server (`n` = 1); lblcr: the
/// destination's set, `reals[..n]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LblcValue {
    pub reals: [u32; sched::LBLCR_SET],
    pub n: u32,
    pub _pad: u32,
    /// When the set last changed (CLOCK_MONOTONIC ns).
    pub last_mod_ns: u64,
    /// When the entry was last used.
    pub last_use_ns: u64,
}
const _: () = assert!(core::mem::size_of::<LblcValue>() == 56);

/// Key of the CONNS map: the connection's 5-tuple as seen from the client.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ConnKey {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<ConnKey>() == 40);

/// Value of the CONNS map: a connection entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConnValue {
    pub real_id: u32,
    pub svc_id: u32,
    /// bpf_ktime_get_coarse_ns() (CLOCK_MONOTONIC_COARSE) of the last packet.
    pub last_seen_ns: u64,
    /// Connection state ([`crate::tcp_state`]; UDP entries hold `tcp_state::UDP`).
    pub state: u8,
    /// [`crate::conn_flags`].
    pub flags: u8,
    pub _pad: [u8; 2],
    /// Templates only: the persistence timeout in seconds.
    pub timeout: u32,
}
const _: () = assert!(core::mem::size_of::<ConnValue>() == 24);

/// Live connection counts of a real server: RS_LOAD is incremented by the
/// program (atomic adds), RS_CLOSED by the daemon (entries it expired or
/// found evicted); the load is their difference.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RealLoad {
    pub active: u64,
    pub inactive: u64,
}
const _: () = assert!(core::mem::size_of::<RealLoad>() == 16);

/// Per-CPU traffic counters per service and per real server.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stats {
    pub conns: u64,
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Stats>() == 24);

/// Key of the FRAGS map: a fragmented datagram (IPv4's 16-bit or IPv6's
/// 32-bit identification).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FragKey {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub id: u32,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<FragKey>() == 40);

/// Value of the FRAGS map: where the datagram's first fragment went.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragValue {
    pub real_id: u32,
    pub svc_id: u32,
}
const _: () = assert!(core::mem::size_of::<FragValue>() == 8);

/// A connection entry for the sync daemon (SYNC ring buffer): written by
/// the program when an entry is made or changes into a state IPVS syncs
/// (TCP ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT, TIME_WAIT; UDP and
/// persistence templates when made), read by lbd's sync master.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SyncEvent {
    pub key: ConnKey,
    pub value: ConnValue,
}
const _: () = assert!(core::mem::size_of::<SyncEvent>() == 64);

/// Director-wide settings (CONFIG array, index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DirectorConfig {
    /// MAC of the director's NIC, used as the source MAC of forwarded frames.
    pub mac: [u8; 6],
    /// [`crate::dir_flags`].
    pub flags: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<DirectorConfig>() == 8);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for ServiceValue {}
    unsafe impl aya::Pod for Ring {}
    unsafe impl aya::Pod for MaglevChunk {}
    unsafe impl aya::Pod for RealServer {}
    unsafe impl aya::Pod for ConnKey {}
    unsafe impl aya::Pod for ConnValue {}
    unsafe impl aya::Pod for Stats {}
    unsafe impl aya::Pod for RealLoad {}
    unsafe impl aya::Pod for DirectorConfig {}
    unsafe impl aya::Pod for LblcKey {}
    unsafe impl aya::Pod for LblcValue {}
    unsafe impl aya::Pod for FragKey {}
    unsafe impl aya::Pod for FragValue {}
}
