//! Every name the XDP object and the daemon must agree on, declared once:
//! the maps (with how the daemon sizes each at load time), the programs and
//! the slots of the JUMP program array. lb-ebpf names its `#[map]` statics
//! and `#[xdp]` functions after these; a packet test loads the object and
//! checks that it holds exactly these maps and programs.

/// How the daemon sets a map's `max_entries` when it loads the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// As declared in the object.
    Fixed,
    /// `limits.max_services`.
    Services,
    /// Two per service (the double-buffered rings).
    TwicePerService,
    /// `limits.max_reals`.
    Reals,
    /// `limits.max_conns`.
    Conns,
    /// `limits.max_maglev_slots` / MAGLEV_CHUNK (rounded up).
    MaglevChunks,
}

/// Map names (the `#[map]` statics of the production object).
pub mod map {
    pub const SERVICES: &str = "SERVICES";
    pub const RINGS: &str = "RINGS";
    pub const REALS: &str = "REALS";
    pub const CONNS: &str = "CONNS";
    pub const CURSORS: &str = "CURSORS";
    pub const SVC_STATS: &str = "SVC_STATS";
    pub const RS_STATS: &str = "RS_STATS";
    pub const RS_LOAD: &str = "RS_LOAD";
    pub const RS_CLOSED: &str = "RS_CLOSED";
    pub const GLOBAL_STATS: &str = "GLOBAL_STATS";
    pub const CONFIG: &str = "CONFIG";
    pub const RS_OVER: &str = "RS_OVER";
    pub const LBLC: &str = "LBLC";
    pub const JUMP: &str = "JUMP";
    pub const SCRATCH: &str = "SCRATCH";
    pub const HEARTBEAT: &str = "HEARTBEAT";
    pub const VLANS: &str = "VLANS";
    pub const FRAGS: &str = "FRAGS";
    pub const SYNC: &str = "SYNC";
    pub const MAGLEV: &str = "MAGLEV";
    pub const VIP_FILTER: &str = "VIP_FILTER";
}

/// Every map of the production object and how it is sized.
pub const MAPS: [(&str, Size); 21] = [
    (map::SERVICES, Size::Services),
    (map::RINGS, Size::TwicePerService),
    (map::REALS, Size::Reals),
    (map::CONNS, Size::Conns),
    (map::CURSORS, Size::Services),
    (map::SVC_STATS, Size::Services),
    (map::RS_STATS, Size::Reals),
    (map::RS_LOAD, Size::Reals),
    (map::RS_CLOSED, Size::Reals),
    (map::GLOBAL_STATS, Size::Fixed),
    (map::CONFIG, Size::Fixed),
    (map::RS_OVER, Size::Reals),
    (map::LBLC, Size::Fixed),
    (map::JUMP, Size::Fixed),
    (map::SCRATCH, Size::Fixed),
    (map::HEARTBEAT, Size::Fixed),
    (map::VLANS, Size::Fixed),
    (map::FRAGS, Size::Fixed),
    (map::SYNC, Size::Fixed),
    (map::MAGLEV, Size::MaglevChunks),
    (map::VIP_FILTER, Size::Fixed),
];

/// Program names of the production object.
pub mod prog {
    /// The entry point attached to the NIC.
    pub const LB: &str = "lb";
    /// New connections (tail call, [`super::jump::NEW`]).
    pub const NEW: &str = "lb_new";
    /// New connections of lblc services ([`super::jump::LBLC`]).
    pub const LBLC: &str = "lb_lblc";
    /// New connections of lblcr services: the set ([`super::jump::LBLCR`]).
    pub const LBLCR: &str = "lb_lblcr";
    /// lblcr when the set must grow: the wlc scan ([`super::jump::LBLCR_GROW`]).
    pub const LBLCR_GROW: &str = "lb_lblcr_grow";
    /// Every program of the production object.
    pub const ALL: [&str; 5] = [LB, NEW, LBLC, LBLCR, LBLCR_GROW];
}

/// Slots of the JUMP program array (tail calls). The new-connection code is
/// one function instantiated per slot, so a slot is also its mode.
pub mod jump {
    pub const NEW: u32 = 0;
    pub const LBLC: u32 = 1;
    pub const LBLCR: u32 = 2;
    pub const LBLCR_GROW: u32 = 3;
    /// JUMP's size.
    pub const SLOTS: u32 = 4;
    /// The program each slot holds, by slot.
    pub const PROGRAMS: [&str; SLOTS as usize] = [
        super::prog::NEW,
        super::prog::LBLC,
        super::prog::LBLCR,
        super::prog::LBLCR_GROW,
    ];
}

/// Programs of the second object (`lb-tools`): the lab's XDP_PASS program
/// and the benchmark's reference programs. lbd never attaches these to a
/// director's NIC.
pub mod tools {
    /// XDP_PASS, for veth peers (a veth delivers XDP_TX frames only if its
    /// peer runs an XDP program).
    pub const PASS: &str = "lb_pass";
    /// Bounds check, MAC swap, XDP_TX: the floor of any forwarding program.
    pub const FLOOR: &str = "bench_floor";
    /// The floor plus one hash lookup: the minimal load balancer.
    pub const MINIMAL_LB: &str = "bench_minimal_lb";
    /// Counts and drops (the lab benchmark's receiver).
    pub const SINK: &str = "bench_sink";
    /// The live-frames traffic generator.
    pub const GEN: &str = "bench_gen";
    /// The minimal LB with the director's connection key (40 bytes, an
    /// LRU hash) and real-server array instead of its 8-byte table.
    pub const CONN_LOOKUP: &str = "bench_conn_lookup";
    /// `bench_conn_lookup` plus the director's two per-CPU statistics
    /// updates (service and real server).
    pub const CONN_STATS: &str = "bench_conn_stats";
    /// `bench_conn_lookup` with a 16-byte IPv4 key.
    pub const CONN4_LOOKUP: &str = "bench_conn4_lookup";
    /// The minimal LB plus a new connection entry (LRU insert).
    pub const CONN_INSERT: &str = "bench_conn_insert";
    /// The lab's floor load balancer (`lbd --floor-program`): stateless,
    /// the real server picked by the source port.
    pub const FLOOR_LB: &str = "bench_floor_lb";
    /// Its VIP, port and real servers' MACs.
    pub const MAP_FLOOR_LB: &str = "FLOOR_LB";
    /// The minimal LB's table.
    pub const MAP_BACKENDS: &str = "BENCH_BACKENDS";
    /// `bench_conn_*`: connection entries, real servers' MACs, statistics.
    pub const MAP_CONNS: &str = "BENCH_CONNS";
    pub const MAP_REALS: &str = "BENCH_REALS";
    pub const MAP_STATS: &str = "BENCH_STATS";
    pub const MAP_CONNS4: &str = "BENCH_CONNS4";
    pub const MAP_NEW_CONNS: &str = "BENCH_NEW_CONNS";
    /// The sink's counter.
    pub const MAP_SINK_COUNT: &str = "BENCH_SINK_COUNT";
}
