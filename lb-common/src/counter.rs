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
    /// IPv4 fragments passed to the kernel.
    PASS_FRAGMENT => "pass_fragment",
    /// IPv6 packets with extension headers (or a non TCP/UDP next header) passed.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_follow_the_names() {
        assert_eq!(NAMES.len() as u32, COUNT);
        assert_eq!(NAMES[PASS_NOT_VIP as usize], "pass_not_vip");
        assert_eq!(NAMES[TX as usize], "tx");
        assert_eq!(NAMES[DROP_OVERLOADED as usize], "drop_overloaded");
        assert_eq!(DROP_OVERLOADED, COUNT - 1);
    }
}
