//! The director-wide counters (per-CPU array GLOBAL_STATS): each declared
//! once, with its index, its name and the count derived from the one list,
//! so the three cannot drift apart.

macro_rules! counters {
    ($($(#[$doc:meta])* $konst:ident => $name:literal,)*) => {
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[repr(u32)]
        enum Index { $($konst,)* Count }
        $( $(#[$doc])* pub const $konst: u32 = Index::$konst as u32; )*
        /// Number of counters (GLOBAL_STATS' size).
        pub const COUNT: u32 = Index::Count as u32;
        /// Names as `lbadm counters` prints them, indexed like the constants.
        pub const NAMES: [&str; COUNT as usize] = [$($name,)*];
    };
}

counters! {
    /// Frames passed to the kernel because they are not for a virtual service.
    PASS_NOT_VIP => "pass_not_vip",
    /// Frames passed because the ethertype is neither IPv4 nor IPv6 (ARP, LLDP...).
    PASS_NOT_IP => "pass_not_ip",
    /// Frames dropped because a header is truncated or invalid.
    DROP_MALFORMED => "drop_malformed",
    /// A later fragment (no ports) forwarded to the real server its
    /// datagram's first fragment went to.
    FRAG_FORWARDED => "frag_forwarded",
    /// IPv6 packets passed because of an extension header the program does
    /// not walk (ESP, no next header, or more than it walks).
    PASS_IPV6_EXT => "pass_ipv6_ext",
    /// VIP packets dropped because no real server is available.
    DROP_NO_REAL => "drop_no_real",
    /// VIP packets dropped because the chosen real server's MAC is unresolved.
    DROP_UNRESOLVED => "drop_unresolved",
    /// Frames forwarded with XDP_TX: not counted by the program (it would
    /// cost a map update per packet); the daemon reports the sum of the
    /// per-service packet counters under this name.
    TX => "tx",
    /// New connection entries created.
    CONN_NEW => "conn_new",
    /// Connection entry insert failures (map full / error).
    CONN_INSERT_FAIL => "conn_insert_fail",
    /// A SYN hit a closed entry and started a new connection (port reuse).
    CONN_REUSE => "conn_reuse",
    /// A new connection followed its client's persistence template.
    PERSIST_HIT => "persist_hit",
    /// A persistence template was created.
    PERSIST_NEW => "persist_new",
    /// A packet of a connection whose real server was removed, with
    /// expire_nodest_conn: the entry was expired and the packet dropped.
    DROP_EXPIRED_NODEST => "drop_expired_nodest",
    /// A new connection found every eligible real server over its upper
    /// threshold (-x) and was dropped.
    DROP_OVERLOADED => "drop_overloaded",
    /// Frames passed because their destination MAC is not the director's.
    PASS_OTHER_MAC => "pass_other_mac",
    /// VLAN-tagged frames passed because the director does not serve
    /// their VLAN.
    PASS_VLAN => "pass_vlan",
    /// TCP packets to a virtual service that are not a SYN and belong to no
    /// connection entry, passed (IPVS with sloppy_tcp=0).
    PASS_TCP_NO_CONN => "pass_tcp_no_conn",
    /// TCP packets without a connection entry forwarded by an mh service's
    /// ring (consistent hashing), without creating an entry.
    FWD_STATELESS => "fwd_stateless",
    /// ICMP errors about a known connection forwarded to its real server.
    ICMP_FORWARDED => "icmp_forwarded",
    /// ICMP to a VIP passed: not an error, or about no known connection.
    PASS_ICMP => "pass_icmp",
    /// A later fragment whose first fragment was not seen (or is
    /// forgotten), passed to the kernel: the director's own traffic is its;
    /// for a virtual service the datagram is lost, as if the fragment were.
    PASS_FRAG_UNKNOWN => "pass_frag_unknown",
    /// Packets to a VIP this director is a VRRP backup for, passed to the
    /// kernel (the master forwards them).
    PASS_STANDBY => "pass_standby",
    /// Sync events lost because the SYNC ring buffer was full (the daemon
    /// did not read it fast enough); the periodic refresh sends them later.
    SYNC_LOST => "sync_lost",
    /// Frames passed because their destination address is no VIP's (the
    /// VIP prefilter: no connection or service lookup).
    PASS_NOT_VIP_ADDRESS => "pass_not_vip_address",
}

/// GLOBAL_STATS' size: room for counters added later without a new map
/// layout (the pinned map keeps its size across versions).
pub const SLOTS: u32 = 64;
const _: () = assert!(COUNT <= SLOTS);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_follow_the_names() {
        assert_eq!(NAMES.len() as u32, COUNT);
        assert_eq!(NAMES[PASS_NOT_VIP as usize], "pass_not_vip");
        assert_eq!(NAMES[TX as usize], "tx");
        assert_eq!(NAMES[PASS_FRAG_UNKNOWN as usize], "pass_frag_unknown");
        assert_eq!(NAMES[SYNC_LOST as usize], "sync_lost");
        assert_eq!(NAMES[PASS_NOT_VIP_ADDRESS as usize], "pass_not_vip_address");
        // New counters go at the end: the pinned map keeps its indices.
        assert_eq!(PASS_NOT_VIP_ADDRESS, COUNT - 1);
    }
}
