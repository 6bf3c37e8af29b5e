//! Every map of the production object, named as in `lb_common::names::map`
//! (the statics' names are the map names the daemon opens and pins), and the
//! scratch record `lb` hands to the new-connection programs.
//!
//! All maps are pinned by name in the instance's bpffs directory so that a
//! daemon restart reuses them (and the connection table survives).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use lb_common::{
    counter, names::jump, ConnKey, ConnValue, DirectorConfig, FragKey, FragValue, LblcKey,
    LblcValue, MaglevChunk, RealLoad, RealServer, Ring, ServiceKey, ServiceValue, Stats,
    DEFAULT_MAX_CONNS, DEFAULT_MAX_MAGLEV_SLOTS, DEFAULT_MAX_REALS, DEFAULT_MAX_SERVICES,
    MAGLEV_CHUNK, VIP_FILTER_WORDS,
};

#[map]
pub(crate) static SERVICES: HashMap<ServiceKey, ServiceValue> =
    HashMap::pinned(DEFAULT_MAX_SERVICES, 0);
/// Two rings per service: index = service id * 2 + generation.
#[map]
pub(crate) static RINGS: Array<Ring> = Array::pinned(DEFAULT_MAX_SERVICES * 2, 0);
/// The VIP prefilter: bit `vip_bit(address)` is set for every VIP with a
/// service, and for addresses that connection entries still go to.
#[map]
pub(crate) static VIP_FILTER: Array<u64> = Array::pinned(VIP_FILTER_WORDS, 0);
/// Maglev tables larger than a ring (svc_flags::MAGLEV_LARGE), in chunks;
/// the daemon places each generation of each such table in a run of
/// consecutive chunks.
#[map]
pub(crate) static MAGLEV: Array<MaglevChunk> =
    Array::pinned(DEFAULT_MAX_MAGLEV_SLOTS / MAGLEV_CHUNK as u32, 0);
#[map]
pub(crate) static REALS: Array<RealServer> = Array::pinned(DEFAULT_MAX_REALS, 0);
/// One LRU for every CPU (no BPF_F_NO_COMMON_LRU): with per-CPU lists the
/// kernel splits max_entries evenly among the CPUs for good, so flows that
/// all arrive on one CPU (one RSS queue, a flood) could use only
/// max_entries / CPUs of it while the listing reports the whole size.
#[map]
pub(crate) static CONNS: LruHashMap<ConnKey, ConnValue> = LruHashMap::pinned(DEFAULT_MAX_CONNS, 0);
/// Round-robin cursor per service, shared by all CPUs so that rr and wrr
/// follow the published sequence as IPVS does. The read-modify-write is not
/// atomic (aya-build links for BPF cpu v1, which has no fetch-and-add): two
/// CPUs scheduling at the same instant may take the same slot.
#[map]
pub(crate) static CURSORS: Array<u32> = Array::pinned(DEFAULT_MAX_SERVICES, 0);
#[map]
pub(crate) static SVC_STATS: PerCpuArray<Stats> = PerCpuArray::pinned(DEFAULT_MAX_SERVICES, 0);
#[map]
pub(crate) static RS_STATS: PerCpuArray<Stats> = PerCpuArray::pinned(DEFAULT_MAX_REALS, 0);
/// Live connection counts per real server, incremented by the program...
#[map]
pub(crate) static RS_LOAD: Array<RealLoad> = Array::pinned(DEFAULT_MAX_REALS, 0);
/// ...and what the daemon found closed (expired or evicted) since.
#[map]
pub(crate) static RS_CLOSED: Array<RealLoad> = Array::pinned(DEFAULT_MAX_REALS, 0);
/// The director-wide counters (`lb_common::counter`).
#[map]
pub(crate) static GLOBAL_STATS: PerCpuArray<u64> = PerCpuArray::pinned(counter::SLOTS, 0);
#[map]
pub(crate) static CONFIG: Array<DirectorConfig> = Array::pinned(1, 0);
/// Overloaded flag per real server (thresholds -x/-y), kept by the program
/// when it considers the server and re-evaluated by the daemon's sweep.
#[map]
pub(crate) static RS_OVER: Array<u32> = Array::pinned(DEFAULT_MAX_REALS, 0);
/// lblc / lblcr: destination address -> real server (set), per service.
#[map]
pub(crate) static LBLC: LruHashMap<LblcKey, LblcValue> = LruHashMap::pinned(LBLC_ENTRIES, 0);
/// Destinations remembered by lblc/lblcr (LRU beyond that).
const LBLC_ENTRIES: u32 = 65536;
/// The new-connection programs, entered by tail call, one per slot of
/// `lb_common::names::jump`: `lb_new` ([`jump::NEW`]), and `lb_lblc`,
/// `lb_lblcr`, `lb_lblcr_grow` for lblc/lblcr services (their destination
/// cache makes programs of their own for the verifier). Each loaded object
/// has its own JUMP, filled with its own programs, so that `lb`, the
/// programs it tail-calls and SCRATCH always come from one object, also
/// while a restart swaps the program in the link. The daemon pins it under
/// a name of its own load (a prog array is emptied when no user reference
/// remains, and new connections must keep being scheduled while the daemon
/// is down) and removes its predecessors' once the swap is done.
#[map]
pub(crate) static JUMP: ProgramArray = ProgramArray::with_max_entries(jump::SLOTS, 0);
/// The packet's flow and service, handed from `lb` to `lb_new` (per CPU:
/// a tail call stays on the CPU). Per object, like JUMP.
#[map]
pub(crate) static SCRATCH: PerCpuArray<NewConn> = PerCpuArray::with_max_entries(1, 0);
/// Connection entries for lbd's sync master (see `sync`): per object, like
/// SCRATCH (events written while no daemon reads are of no use).
#[map]
pub(crate) static SYNC: RingBuf = RingBuf::with_byte_size(SYNC_BYTES, 0);
/// 4,096 events of 64 bytes (plus headers) between two reads.
const SYNC_BYTES: u32 = 512 * 1024;
/// CLOCK_MONOTONIC when the daemon last re-based the connection counts
/// (see lb_common::HEARTBEAT_STALE_NS).
#[map]
pub(crate) static HEARTBEAT: Array<u64> = Array::pinned(1, 0);

/// VLANs the director serves (1 at the VLAN id): a tagged frame of any
/// other VLAN goes to the kernel.
#[map]
pub(crate) static VLANS: Array<u32> = Array::pinned(4096, 0);
/// Fragmented datagrams: where the first fragment (the one with the ports)
/// went, for the later ones. Bounded, least recently used first out.
#[map]
pub(crate) static FRAGS: LruHashMap<FragKey, FragValue> = LruHashMap::pinned(FRAG_ENTRIES, 0);
/// Datagrams in flight remembered by FRAGS.
const FRAG_ENTRIES: u32 = 8192;

/// What `lb` found of a new connection, for the program that schedules it.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct NewConn {
    pub(crate) key: ConnKey,
    pub(crate) svc: ServiceValue,
    pub(crate) ip_len: u64,
    pub(crate) now: u64,
    pub(crate) vport: u16,
    pub(crate) tcp_flags: u8,
    /// `parse::KIND_*`: a first fragment is remembered for the later ones.
    pub(crate) kind: u8,
    /// lblcr: what lb_lblcr found of the set, for lb_lblcr_grow.
    pub(crate) lblcr_cur: u32,
    pub(crate) lblcr_max_i: u32,
    /// A first fragment's datagram id.
    pub(crate) frag_id: u32,
    /// Forward by the ring without a connection entry (a TCP packet of an
    /// mh service that is not a SYN and has no entry).
    pub(crate) stateless: u32,
}
