//! The data plane: loading the XDP object with its limits and pins,
//! attaching it, and typed operations on its maps. This room is the only
//! one that touches aya maps and programs.
//!
//! Everything is pinned under one per-instance bpffs directory,
//! `<bpffs>/lb/<instance>/{SERVICES,RINGS,REALS,CONNS,...,link}`. A restart
//! of the daemon reuses the pinned maps (the connection table survives) and
//! swaps the program inside the pinned link atomically, so traffic never
//! stops while the daemon is down.

mod attach;
pub mod batch;
mod faulty;
mod limits;
mod maps;
mod mem;
mod ops;
mod pins;
mod place;

use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, MapData, MapError, PerCpuArray},
    programs::{ProgramError, Xdp},
    Ebpf, EbpfLoader,
};
use lb_common::{
    names::{self, map, prog},
    ConnKey, ConnValue, DirectorConfig, LblcKey, LblcValue, RealLoad, RealServer, Ring, ServiceKey,
    ServiceValue, Stats,
};

pub use attach::{
    attach_floor_lb, attach_pass, floor_lb_entries, instance_dir, lock_instance, unload,
    unload_held, Attached, InstanceLock,
};
pub use faulty::{snapshot, AfterWrite, Faulty};
pub use limits::{AttachMode, Limits};
pub use mem::{MemMaps, MemState};
pub use ops::{sum, Maps, MapsError, Slot, Value, Write};
pub use pins::pinned_limits;
pub use place::{check_bpffs, check_instance, check_interface, BadName};

/// The production XDP object, built by build.rs through aya-build.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb"));
/// The second object: the lab's XDP_PASS program and the benchmark's
/// reference programs (never attached to a director's NIC by lbd).
pub static TOOLS_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-tools"));

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("bpffs directory {path}: {cause}")]
    PinDir { path: String, cause: std::io::Error },
    #[error("loading the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("XDP program: {0}")]
    Program(#[from] ProgramError),
    #[error(transparent)]
    Map(#[from] MapsError),
    #[error("{0} missing from the object")]
    Missing(&'static str),
    #[error("pinned map {path} {what}: it was left by another version or other limits; start with the limits it was made with, or detach and remove the instance's pins to start afresh with `lbd --interface IF --instance NAME --unload` (established connections are lost)")]
    Layout { path: String, what: String },
    #[error("reading the XDP object: {0}")]
    Object(String),
    #[error("pinned link {path}: {msg}")]
    Link { path: String, msg: String },
    #[error("instance {dir} is in use by another lbd (it holds the lock on that pin directory): stop it first, or give this one another --instance")]
    Busy { dir: String },
    #[error("attaching to {iface} in {mode} mode: {cause}")]
    Attach {
        iface: String,
        mode: &'static str,
        cause: ProgramError,
    },
}

type Result<T> = std::result::Result<T, DataplaneError>;

fn map_err(name: &'static str) -> impl Fn(MapError) -> MapsError {
    move |cause| MapsError::Map { name, cause }
}

/// The loaded object and its maps.
pub struct Dataplane {
    // Kept alive: dropping it would unload the program if nothing else holds it.
    ebpf: Ebpf,
    dir: PathBuf,
    limits: Limits,
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    rings: Array<MapData, Ring>,
    maglev: Array<MapData, lb_common::MaglevChunk>,
    vip_filter: Array<MapData, u64>,
    reals: Array<MapData, RealServer>,
    conns: HashMap<MapData, ConnKey, ConnValue>,
    svc_stats: PerCpuArray<MapData, Stats>,
    rs_stats: PerCpuArray<MapData, Stats>,
    global_stats: PerCpuArray<MapData, u64>,
    rs_load: Array<MapData, RealLoad>,
    rs_closed: Array<MapData, RealLoad>,
    config: Array<MapData, DirectorConfig>,
    rs_over: Array<MapData, u32>,
    heartbeat: Array<MapData, u64>,
    vlans: Array<MapData, u32>,
    // Held so the map lives as long as the programs using it.
    _frags: HashMap<MapData, lb_common::FragKey, lb_common::FragValue>,
    lblc: HashMap<MapData, LblcKey, LblcValue>,
    _cursors: Array<MapData, u32>,
    /// This load's JUMP, until `attach` pins it under `jump_pin`.
    jump: Option<aya::maps::ProgramArray<MapData>>,
    /// The entries to sync, until the sync master takes it.
    sync: Option<aya::maps::RingBuf<MapData>>,
    jump_pin: PathBuf,
}

impl Dataplane {
    /// Loads the object, reusing the maps pinned in `dir` if present (pinning
    /// them there otherwise), and fills JUMP with the tail-called programs.
    /// Does not attach.
    pub fn load(dir: &Path, limits: &Limits) -> Result<Dataplane> {
        fs::create_dir_all(dir).map_err(|cause| DataplaneError::PinDir {
            path: dir.display().to_string(),
            cause,
        })?;
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(dir);
        for (name, size) in names::MAPS {
            if let Some(n) = limits.entries(size) {
                loader.map_max_entries(name, n);
            }
        }
        pins::check(dir, limits)?;
        let mut ebpf = loader.load(OBJECT)?;
        program(&mut ebpf, prog::LB)?.load()?;
        // The new-connection halves, entered by tail call through JUMP.
        let mut fds = Vec::new();
        for name in names::jump::PROGRAMS {
            let p = program(&mut ebpf, name)?;
            p.load()?;
            fds.push(
                p.fd()?
                    .try_clone()
                    .map_err(|cause| DataplaneError::PinDir {
                        path: format!("{name} fd"),
                        cause,
                    })?,
            );
        }
        // This object's own JUMP (not the running one's: it is pinned under
        // a name of this load's only when the link is swapped, see attach).
        let mut jump: aya::maps::ProgramArray<MapData> = take(&mut ebpf, map::JUMP)?;
        for (slot, fd) in fds.iter().enumerate() {
            jump.set(slot as u32, fd, 0).map_err(map_err(map::JUMP))?;
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let jump_pin = dir.join(format!("jump_{}_{stamp}", std::process::id()));
        Ok(Dataplane {
            jump: Some(jump),
            jump_pin,
            services: take(&mut ebpf, map::SERVICES)?,
            rings: take(&mut ebpf, map::RINGS)?,
            maglev: take(&mut ebpf, map::MAGLEV)?,
            vip_filter: take(&mut ebpf, map::VIP_FILTER)?,
            reals: take(&mut ebpf, map::REALS)?,
            conns: take(&mut ebpf, map::CONNS)?,
            svc_stats: take(&mut ebpf, map::SVC_STATS)?,
            rs_stats: take(&mut ebpf, map::RS_STATS)?,
            global_stats: take(&mut ebpf, map::GLOBAL_STATS)?,
            rs_load: take(&mut ebpf, map::RS_LOAD)?,
            rs_closed: take(&mut ebpf, map::RS_CLOSED)?,
            config: take(&mut ebpf, map::CONFIG)?,
            rs_over: take(&mut ebpf, map::RS_OVER)?,
            heartbeat: take(&mut ebpf, map::HEARTBEAT)?,
            vlans: take(&mut ebpf, map::VLANS)?,
            lblc: take(&mut ebpf, map::LBLC)?,
            _cursors: take(&mut ebpf, map::CURSORS)?,
            _frags: take(&mut ebpf, map::FRAGS)?,
            sync: Some(take(&mut ebpf, map::SYNC)?),
            ebpf,
            dir: dir.to_path_buf(),
            limits: limits.clone(),
        })
    }

    /// The instance's pin directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many instructions the verifier processed loading program `name`.
    pub fn verified_instructions(&mut self, name: &'static str) -> Result<u32> {
        Ok(program(&mut self.ebpf, name)?
            .info()?
            .verified_instruction_count()
            .unwrap_or(0))
    }

    /// The `lb` program.
    pub fn program(&mut self) -> Result<&mut Xdp> {
        program(&mut self.ebpf, prog::LB)
    }

    /// The kernel's id of this load's program (as `ip link` and bpftool
    /// show it), None if the kernel does not say.
    pub fn program_id(&mut self) -> Option<u32> {
        self.program().ok()?.info().ok().map(|i| i.id())
    }

    /// The ring buffer of entries to sync (once: the sync master keeps it).
    pub fn take_sync(&mut self) -> Option<aya::maps::RingBuf<MapData>> {
        self.sync.take()
    }

    /// Number of entries in the connection table (reads it).
    pub fn conn_count(&self) -> usize {
        Maps::conns(self).len()
    }

    /// The connection table read in batches (see [`batch`]).
    pub fn conns_batch(&self) -> std::io::Result<Vec<(ConnKey, ConnValue)>> {
        use aya::maps::IterableMap as _;
        use std::os::fd::AsFd as _;
        batch::lookup_all(self.conns.map().fd().as_fd())
    }

    /// The connection table read by key (BPF_MAP_GET_NEXT_KEY and a lookup
    /// per entry): the fallback of kernels without batch operations, and
    /// the reference the batch read is measured and tested against.
    pub fn conns_by_key(&self) -> Vec<(ConnKey, ConnValue)> {
        // Entries deleted during the walk show up as errors: skipped.
        self.conns.iter().filter_map(|r| r.ok()).collect()
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp> {
    Ok(ebpf
        .program_mut(name)
        .ok_or(DataplaneError::Missing(name))?
        .try_into()?)
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let m = ebpf.take_map(name).ok_or(DataplaneError::Missing(name))?;
    Ok(T::try_from(m).map_err(map_err(name))?)
}
