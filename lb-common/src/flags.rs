//! Flag bits of services, real servers and the director.

/// Service flags ([`crate::ServiceValue::flags`]).
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
    /// ([`crate::ServiceValue::fwmark`]), so the group shares persistence.
    pub const FWMARK: u32 = 1 << 4;
    /// At least one real server has connection thresholds (-x/-y): the
    /// scheduler checks the overloaded state of the servers it considers.
    pub const THRESHOLDS: u32 = 1 << 5;
    /// The director is a VRRP backup for this service's VIP: new
    /// connections go to the kernel (which does not hold the VIP), counted
    /// as `pass_standby`.
    pub const STANDBY: u32 = 1 << 6;
    /// mh with a table larger than RING_SIZE: the ring slot holds a header,
    /// `reals[0]` = first MAGLEV chunk, `reals[1]` = table size; the table
    /// is in consecutive MAGLEV chunks from there.
    pub const MAGLEV_LARGE: u32 = 1 << 7;
}

/// Director-wide flags ([`crate::DirectorConfig::flags`]).
pub mod dir_flags {
    /// IPVS expire_nodest_conn: a packet of a connection whose real server
    /// was removed expires the entry and is dropped (the client's
    /// retransmission is scheduled afresh), instead of continuing to the
    /// removed server.
    pub const EXPIRE_NODEST_CONN: u8 = 1 << 0;
    /// IPVS sloppy_tcp: any TCP packet (not only a SYN) without a connection
    /// entry starts a connection (for a director taking over mid-stream).
    pub const SLOPPY_TCP: u8 = 1 << 1;
    /// A sync master runs: connection entries that IPVS would sync are
    /// written to the SYNC ring buffer.
    pub const SYNC: u8 = 1 << 2;
}

/// Connection entry flags ([`crate::ConnValue::flags`]).
pub mod conn_flags {
    /// Made by the sync daemon from a peer's record (a backup's copy): not
    /// sent back to the peer by refreshes, and replaced by the peer's newer
    /// records. The program clears it on the entry's first packet here:
    /// from then on this director serves the connection.
    pub const SYNCED: u8 = 1 << 0;
}

/// Real server flags ([`crate::RealServer::flags`]).
pub mod rs_flags {
    /// The slot is allocated to a real server.
    pub const IN_USE: u16 = 1 << 0;
    /// The MAC address has been resolved through the neighbour table.
    pub const MAC_VALID: u16 = 1 << 1;
    /// The real server was removed from its service: established connections
    /// continue (IPVS expire_nodest_conn=0), no new connection is scheduled.
    pub const REMOVED: u16 = 1 << 2;
    /// The slot's service is on standby (VRRP backup): packets of its
    /// connections are not forwarded either.
    pub const STANDBY: u16 = 1 << 3;
}
