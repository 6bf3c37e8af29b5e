//! Types shared by the XDP program (lb-ebpf) and the daemon (lb-userspace).
//!
//! Every map key and value is `#[repr(C)]`, has explicit padding and a
//! compile-time size check. Addresses are stored as 16-byte arrays in network
//! order (IPv4 uses the first four bytes, the rest is zero); ports are stored
//! in network order exactly as they appear on the wire.
#![cfg_attr(not(test), no_std)]

/// Address families as stored in keys.
pub const AF_INET: u8 = 4;
pub const AF_INET6: u8 = 6;

/// IP protocol numbers.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Size of one scheduling table ("ring"). Prime, as Maglev requires; the same
/// size as the kernel's ip_vs_mh default (CONFIG_IP_VS_MH_TAB_INDEX=12).
pub const RING_SIZE: usize = 4093;

/// Default map sizes (overridable by the daemon at load time).
pub const DEFAULT_MAX_SERVICES: u32 = 256;
pub const DEFAULT_MAX_REALS: u32 = 4096;
pub const DEFAULT_MAX_CONNS: u32 = 1 << 20;

/// Scheduler identifiers as stored in [`ServiceValue::sched`].
pub mod sched {
    /// Round robin: walk the ring in order (per-CPU cursor).
    pub const RR: u8 = 1;
    /// Weighted round robin: walk the precomputed IPVS wrr sequence.
    pub const WRR: u8 = 2;
    /// Maglev hashing of the client address (and port with MH_PORT).
    pub const MH: u8 = 3;
    /// Dynamic schedulers: the ring lists the available real servers and the
    /// program picks by their live connection counts (RS_LOAD - RS_CLOSED).
    /// Least connections: lowest active*256 + inactive.
    pub const LC: u8 = 4;
    /// Weighted least connections: lowest (active*256 + inactive) / weight.
    pub const WLC: u8 = 5;
    /// Shortest expected delay: lowest (active + 1) / weight.
    pub const SED: u8 = 6;
    /// Never queue: an idle server (no active connection) if any, else sed.
    pub const NQ: u8 = 7;
    /// Weighted failover: the available server with the highest weight.
    pub const FO: u8 = 8;
    /// Overflow: the highest-weight server whose active connections are
    /// below its weight.
    pub const OVF: u8 = 9;
    /// Source hashing: a 256-bucket table indexed by the client address
    /// (and port with HASH_PORT).
    pub const SH: u8 = 10;
    /// Destination hashing: the same table indexed by the destination address.
    pub const DH: u8 = 11;
    /// Power of two choices: two weighted-random picks, the one with the
    /// lower (active*256 + inactive) / weight wins.
    pub const TWOS: u8 = 12;
    /// Locality-based least connections: per destination address, stick to
    /// one real server (LBLC map) until it is overloaded (active > weight)
    /// while another server is under half load; then the wlc choice.
    pub const LBLC: u8 = 13;
    /// lblc with replication: per destination address a set of servers
    /// (up to [`LBLCR_SET`]), the least loaded member is used; the set grows
    /// with the wlc choice when that member is overloaded, and its most
    /// loaded member leaves when the set has not changed for a while.
    pub const LBLCR: u8 = 14;
    /// Members of an lblcr destination set.
    pub const LBLCR_SET: usize = 8;
    /// An lblcr set with more than one member drops its most loaded member
    /// when it has not changed for this long (the kernel's
    /// sysctl lblcr_expiration default: one day).
    pub const LBLCR_EXPIRATION_NS: u64 = 24 * 3600 * 1_000_000_000;
    /// Buckets of the sh/dh table (the kernel's IP_VS_SH_TAB_SIZE).
    pub const HASH_BUCKETS: usize = 256;

    /// Whether a server with `active` connections and weight `w` may take a
    /// new connection under `sched` (ovf's own overflow rule).
    #[inline(always)]
    pub fn eligible(sched: u8, active: u64, w: u32) -> bool {
        w > 0 && (sched != OVF || active < w as u64)
    }

    /// IPVS's overloaded flag of a real server with thresholds (-x upper,
    /// -y lower): set when active + inactive reaches `upper`, cleared when
    /// it falls below `lower` (below 3/4 of `upper` when `lower` is 0);
    /// never set without an upper threshold (ip_vs_bind_dest/unbind_dest).
    #[inline(always)]
    pub fn overloaded_next(was: bool, total: u64, upper: u32, lower: u32) -> bool {
        if upper == 0 {
            return false;
        }
        if total >= upper as u64 {
            return true;
        }
        if !was {
            return false;
        }
        let clear = if lower != 0 {
            total < lower as u64
        } else {
            total * 4 < upper as u64 * 3
        };
        !clear
    }

    /// How many real servers a dynamic scheduler compares: all of them (the
    /// ring holds up to RING_SIZE), walked with bpf_loop as IPVS walks its
    /// destination list.
    pub const MAX_DYNAMIC: usize = super::RING_SIZE;

    /// Whether candidate `a` (active, inactive, weight) beats the current
    /// best `b` under scheduler `sched`, exactly as the kernel compares
    /// (ip_vs_lc/wlc/sed/nq.c: strict, so the first of equals wins).
    #[inline(always)]
    pub fn better(sched: u8, a: (u64, u64, u32), b: (u64, u64, u32)) -> bool {
        let (aa, ai, aw) = a;
        let (ba, bi, bw) = b;
        match sched {
            FO | OVF => aw > bw,
            LC => aa * 256 + ai < ba * 256 + bi,
            WLC => (ba * 256 + bi) * (aw as u64) > (aa * 256 + ai) * (bw as u64),
            _ => {
                // sed; nq prefers an idle server first (handled by the caller
                // too, this keeps the comparison total).
                if sched == NQ && (aa == 0) != (ba == 0) {
                    return aa == 0;
                }
                (ba + 1) * (aw as u64) > (aa + 1) * (bw as u64)
            }
        }
    }
}

/// Service flags ([`ServiceValue::flags`]).
pub mod svc_flags {
    /// mh-port / sh-port: add the client port to the hash.
    pub const MH_PORT: u32 = 1 << 0;
    /// mh-fallback: accepted and recorded; the published Maglev ring already
    /// holds only available real servers. sh-fallback: when the bucket's real
    /// server is unavailable, the next buckets are tried instead of dropping.
    pub const MH_FALLBACK: u32 = 1 << 1;
    /// persistent service (-p); port-0 services are always persistent.
    pub const PERSISTENT: u32 = 1 << 2;
    /// one-packet scheduling (-o, UDP): no connection entry, every datagram
    /// is scheduled on its own.
    pub const ONE_PACKET: u32 = 1 << 3;
    /// A port group (fwmark service): several (protocol, VIP, port) keys
    /// share this value; persistence templates are keyed by the fwmark
    /// ([`ServiceValue::fwmark`]), so the group shares persistence.
    pub const FWMARK: u32 = 1 << 4;
    /// At least one real server has connection thresholds (-x/-y): the
    /// scheduler checks the overloaded state of the servers it considers.
    pub const THRESHOLDS: u32 = 1 << 5;
}

/// Director-wide flags ([`DirectorConfig::flags`]).
pub mod dir_flags {
    /// IPVS expire_nodest_conn: a packet of a connection whose real server
    /// was removed expires the entry and is dropped (the client's
    /// retransmission is scheduled afresh), instead of continuing to the
    /// removed server.
    pub const EXPIRE_NODEST_CONN: u8 = 1 << 0;
}

/// Real server flags ([`RealServer::flags`]).
pub mod rs_flags {
    /// The slot is allocated to a real server.
    pub const IN_USE: u16 = 1 << 0;
    /// The MAC address has been resolved through the neighbour table.
    pub const MAC_VALID: u16 = 1 << 1;
    /// The real server was removed from its service: established connections
    /// continue (IPVS expire_nodest_conn=0), no new connection is scheduled.
    pub const REMOVED: u16 = 1 << 2;
}

/// TCP connection states (IPVS numbering, `ip_vs_tcp_state_name`).
pub mod tcp_state {
    pub const NONE: u8 = 0;
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT: u8 = 4;
    pub const TIME_WAIT: u8 = 5;
    pub const CLOSE: u8 = 6;
    pub const CLOSE_WAIT: u8 = 7;
    pub const LAST_ACK: u8 = 8;
    pub const LISTEN: u8 = 9;
    pub const SYNACK: u8 = 10;
    pub const COUNT: usize = 11;
    /// The state used for UDP entries.
    pub const UDP: u8 = 11;
    /// A persistence template (client address masked, client port 0); its
    /// timeout is the service's persistence timeout, kept in the entry.
    pub const TEMPLATE: u8 = 12;

    pub const NAMES: [&str; 13] = [
        "NONE",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "SYNACK",
        "UDP",
        "NONE",
    ];

    // IPVS tcp_states_dos-free input-only table (net/netfilter/ipvs/ip_vs_proto_tcp.c,
    // tcp_states "INPUT-ONLY"), columns indexed by the current state NO..SA.
    const S_ES: u8 = ESTABLISHED;
    const S_SS: u8 = SYN_SENT;
    const S_SR: u8 = SYN_RECV;
    const S_FW: u8 = FIN_WAIT;
    const S_TW: u8 = TIME_WAIT;
    const S_CL: u8 = CLOSE;
    const S_CW: u8 = CLOSE_WAIT;
    const S_LA: u8 = LAST_ACK;
    const S_LI: u8 = LISTEN;
    const SYN: [u8; COUNT] = [
        S_SR, S_ES, S_ES, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR,
    ];
    const FIN: [u8; COUNT] = [
        S_CL, S_FW, S_SS, S_TW, S_FW, S_TW, S_CL, S_CW, S_LA, S_LI, S_TW,
    ];
    const ACK: [u8; COUNT] = [
        S_CL, S_ES, S_SS, S_ES, S_FW, S_TW, S_CL, S_CW, S_CL, S_LI, S_ES,
    ];
    const RST: [u8; COUNT] = [
        S_CL, S_CL, S_CL, S_SR, S_CL, S_CL, S_CL, S_CL, S_LA, S_LI, S_CL,
    ];

    /// TCP flag bits as in the header's 14th byte.
    pub const F_FIN: u8 = 0x01;
    pub const F_SYN: u8 = 0x02;
    pub const F_RST: u8 = 0x04;
    pub const F_ACK: u8 = 0x10;

    /// Next state for a client-to-server packet (flag priority rst > syn > fin > ack).
    /// Packets with none of these flags leave the state unchanged.
    #[inline(always)]
    pub fn next(current: u8, flags: u8) -> u8 {
        let i = current as usize;
        if i >= COUNT {
            return current;
        }
        if flags & F_RST != 0 {
            RST[i]
        } else if flags & F_SYN != 0 {
            SYN[i]
        } else if flags & F_FIN != 0 {
            FIN[i]
        } else if flags & F_ACK != 0 {
            ACK[i]
        } else {
            current
        }
    }

    /// Default timeouts in seconds, indexed by state (IPVS defaults), then UDP.
    pub const DEFAULT_TIMEOUTS: [u32; 12] = [2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120, 300];
}

/// Key of the SERVICES map: (protocol, VIP, port).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
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
    /// Flags from [`svc_flags`].
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
#[derive(Clone, Copy)]
pub struct Ring {
    pub reals: [u32; RING_SIZE],
}
const _: () = assert!(core::mem::size_of::<Ring>() == RING_SIZE * 4);

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
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
    /// Connection state ([`tcp_state`]; UDP entries hold `tcp_state::UDP`).
    pub state: u8,
    pub _pad: [u8; 3],
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

/// Director-wide settings (CONFIG array, index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DirectorConfig {
    /// MAC of the director's NIC, used as the source MAC of forwarded frames.
    pub mac: [u8; 6],
    /// [`dir_flags`].
    pub flags: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<DirectorConfig>() == 8);

/// Global counters (per-CPU array GLOBAL_STATS, indexed by these constants).
pub mod counter {
    /// Frames passed to the kernel because they are not for a virtual service.
    pub const PASS_NOT_VIP: u32 = 0;
    /// Frames passed because the ethertype is neither IPv4 nor IPv6 (ARP, LLDP...).
    pub const PASS_NOT_IP: u32 = 1;
    /// Frames dropped because a header is truncated or invalid.
    pub const DROP_MALFORMED: u32 = 2;
    /// IPv4 fragments passed to the kernel.
    pub const PASS_FRAGMENT: u32 = 3;
    /// IPv6 packets with extension headers (or a non TCP/UDP next header) passed.
    pub const PASS_IPV6_EXT: u32 = 4;
    /// VIP packets dropped because no real server is available.
    pub const DROP_NO_REAL: u32 = 5;
    /// VIP packets dropped because the chosen real server's MAC is unresolved.
    pub const DROP_UNRESOLVED: u32 = 6;
    /// Frames forwarded with XDP_TX: not counted by the program (it would
    /// cost a map update per packet); the daemon reports the sum of the
    /// per-service packet counters under this name.
    pub const TX: u32 = 7;
    /// New connection entries created.
    pub const CONN_NEW: u32 = 8;
    /// Connection entry insert failures (map full / error).
    pub const CONN_INSERT_FAIL: u32 = 9;
    /// A SYN hit a closed entry and started a new connection (port reuse).
    pub const CONN_REUSE: u32 = 10;
    /// A new connection followed its client's persistence template.
    pub const PERSIST_HIT: u32 = 11;
    /// A persistence template was created.
    pub const PERSIST_NEW: u32 = 12;
    /// A packet of a connection whose real server was removed, with
    /// expire_nodest_conn: the entry was expired and the packet dropped.
    pub const DROP_EXPIRED_NODEST: u32 = 13;
    /// A new connection found every eligible real server over its upper
    /// threshold (-x) and was dropped.
    pub const DROP_OVERLOADED: u32 = 14;
    /// Number of counters.
    pub const COUNT: u32 = 16;

    pub const NAMES: [&str; 15] = [
        "pass_not_vip",
        "pass_not_ip",
        "drop_malformed",
        "pass_fragment",
        "pass_ipv6_ext",
        "drop_no_real",
        "drop_unresolved",
        "tx",
        "conn_new",
        "conn_insert_fail",
        "conn_reuse",
        "persist_hit",
        "persist_new",
        "drop_expired_nodest",
        "drop_overloaded",
    ];
}

/// `addr` with only its first `prefix` bits kept (persistence granularity).
#[inline(always)]
pub fn mask_addr(addr: &[u8; 16], prefix: u8) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        let start = (i * 8) as u32;
        let p = prefix as u32;
        let m: u8 = if p >= start + 8 {
            0xff
        } else if p <= start {
            0
        } else {
            0xffu8 << (8 - (p - start))
        };
        out[i] = addr[i] & m;
        i += 1;
    }
    out
}

/// The hash used for Maglev lookups, shared by the XDP program and the
/// daemon's simulator: a murmur3-style mix of the client address and port.
#[inline(always)]
pub fn flow_hash(addr: &[u8; 16], port: u16) -> u32 {
    let mut h: u32 = 0x9747_b28c;
    let mut i = 0;
    while i < 4 {
        let w = u32::from_ne_bytes([
            addr[i * 4],
            addr[i * 4 + 1],
            addr[i * 4 + 2],
            addr[i * 4 + 3],
        ]);
        let mut k = w.wrapping_mul(0xcc9e_2d51);
        k = k.rotate_left(15).wrapping_mul(0x1b87_3593);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
        i += 1;
    }
    h ^= port as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for ServiceValue {}
    unsafe impl aya::Pod for Ring {}
    unsafe impl aya::Pod for RealServer {}
    unsafe impl aya::Pod for ConnKey {}
    unsafe impl aya::Pod for ConnValue {}
    unsafe impl aya::Pod for Stats {}
    unsafe impl aya::Pod for RealLoad {}
    unsafe impl aya::Pod for DirectorConfig {}
    unsafe impl aya::Pod for LblcKey {}
    unsafe impl aya::Pod for LblcValue {}
}

#[cfg(test)]
mod tests {
    use super::{tcp_state::*, *};

    #[test]
    fn input_only_transitions_follow_ipvs() {
        // The DR life of a connection: SYN, ACK, data, FIN, ACK, then RST.
        let mut s = NONE;
        for (flags, want) in [
            (F_SYN, SYN_RECV),
            (F_ACK, ESTABLISHED),
            (F_ACK | 0x08, ESTABLISHED),
            (F_FIN | F_ACK, FIN_WAIT),
            (F_ACK, FIN_WAIT),
            (F_RST, CLOSE),
        ] {
            s = next(s, flags);
            assert_eq!(s, want, "flags {flags:#x}");
        }
        // rst > syn > fin > ack
        assert_eq!(next(ESTABLISHED, F_RST | F_SYN), CLOSE);
        assert_eq!(next(ESTABLISHED, F_SYN | F_FIN), ESTABLISHED);
        assert_eq!(next(SYN_RECV, F_FIN | F_ACK), TIME_WAIT);
        assert_eq!(next(SYN_RECV, F_RST), SYN_RECV);
        assert_eq!(next(NONE, F_ACK), CLOSE);
        // A packet with none of the four flags leaves the state alone.
        assert_eq!(next(FIN_WAIT, 0x08), FIN_WAIT);
        assert_eq!(next(200, F_SYN), 200);
        assert_eq!(DEFAULT_TIMEOUTS[ESTABLISHED as usize], 900);
        assert_eq!(DEFAULT_TIMEOUTS[UDP as usize], 300);
        assert_eq!(NAMES[UDP as usize], "UDP");
    }

    #[test]
    fn thresholds_have_ipvs_hysteresis() {
        use super::sched::overloaded_next as o;
        assert!(!o(false, 1000, 0, 0), "no upper threshold: never");
        assert!(!o(false, 9, 10, 5));
        assert!(o(false, 10, 10, 5), "reaching upper sets it");
        assert!(o(true, 6, 10, 5), "stays set down to lower");
        assert!(o(true, 5, 10, 5));
        assert!(!o(true, 4, 10, 5), "below lower clears it");
        assert!(!o(false, 8, 10, 5), "cleared: only upper sets it again");
        // No lower threshold: cleared below 3/4 of upper.
        assert!(o(true, 8, 10, 0));
        assert!(!o(true, 7, 10, 0));
    }

    #[test]
    fn dynamic_comparisons_follow_the_kernel() {
        use super::sched::*;
        // lc: overhead active*256 + inactive.
        assert!(better(LC, (0, 100, 1), (1, 0, 1)));
        assert!(!better(LC, (1, 0, 1), (1, 0, 1)), "ties keep the first");
        // wlc: 1 active at weight 3 beats 1 active at weight 1.
        assert!(better(WLC, (1, 0, 3), (1, 0, 1)));
        assert!(!better(WLC, (2, 0, 1), (1, 0, 1)));
        // sed: (active+1)/weight: (2+1)/3 = 1 beats (0+1)/1 = 1? equal: no.
        assert!(!better(SED, (2, 0, 3), (0, 0, 1)));
        assert!(better(SED, (1, 0, 3), (0, 0, 1)));
        // nq: an idle server wins whatever its weight.
        assert!(better(NQ, (0, 5, 1), (1, 0, 100)));
        assert!(!better(NQ, (1, 0, 100), (0, 0, 1)));
        // fo / ovf: the highest weight, the first of equals.
        assert!(better(FO, (100, 0, 5), (0, 0, 4)));
        assert!(!better(FO, (0, 0, 4), (0, 0, 4)));
        assert!(eligible(OVF, 2, 3) && !eligible(OVF, 3, 3) && !eligible(FO, 0, 0));
    }

    #[test]
    fn masks() {
        let a = [192, 0, 2, 77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(mask_addr(&a, 32), a);
        assert_eq!(mask_addr(&a, 24)[..4], [192, 0, 2, 0]);
        assert_eq!(mask_addr(&a, 20)[..4], [192, 0, 0, 0]);
        assert_eq!(mask_addr(&a, 0), [0; 16]);
        let v6 = [
            0x20, 0x01, 0x0d, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ];
        let m = mask_addr(&v6, 64);
        assert_eq!(&m[..8], &v6[..8]);
        assert_eq!(&m[8..], &[0; 8]);
        assert_eq!(mask_addr(&v6, 128), v6);
    }

    #[test]
    fn flow_hash_depends_on_address_and_port() {
        let a = [192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut b = a;
        b[3] = 2;
        assert_eq!(flow_hash(&a, 0), flow_hash(&a, 0));
        assert_ne!(flow_hash(&a, 0), flow_hash(&b, 0));
        assert_ne!(flow_hash(&a, 0), flow_hash(&a, 1));
    }
}
