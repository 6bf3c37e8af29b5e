//! Loading, attaching and pinning the XDP program, and typed access to its
//! maps. Everything is pinned under one per-instance bpffs directory:
//! `<bpffs>/lb/<instance>/{SERVICES,RINGS,REALS,CONNS,...,link}`. A restart
//! of the daemon reuses the pinned maps (the connection table survives) and
//! swaps the program inside the pinned link atomically, so traffic never
//! stops while the daemon is down.

use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, MapData, MapError, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        ProgramError, TestRun, TestRunOptions, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use lb_common::{
    ConnKey, ConnValue, DirectorConfig, RealLoad, RealServer, Ring, ServiceKey, ServiceValue, Stats,
};
use tracing::{info, warn};

use crate::config::{Limits, XdpModeCfg};

/// The compiled XDP object, built by build.rs through aya-build.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb"));

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("bpffs directory {path}: {cause}")]
    PinDir { path: String, cause: std::io::Error },
    #[error("loading the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("XDP program: {0}")]
    Program(#[from] ProgramError),
    #[error("BPF map {name}: {cause}")]
    Map { name: &'static str, cause: MapError },
    #[error("BPF map {0} missing from the object")]
    MissingMap(&'static str),
    #[error("pinned map {path} has key/value sizes {found:?}, this build needs {want:?}: it was left by an incompatible version; detach and remove the instance's pins to start afresh (established connections are lost)")]
    Layout {
        path: String,
        found: (u32, u32),
        want: (u32, u32),
    },
    #[error("pinned link {path}: {msg}")]
    Link { path: String, msg: String },
    #[error("attaching to {iface} in {mode} mode: {cause}")]
    Attach {
        iface: String,
        mode: &'static str,
        cause: ProgramError,
    },
}

type Result<T> = std::result::Result<T, DataplaneError>;

fn map_err(name: &'static str) -> impl Fn(MapError) -> DataplaneError {
    move |cause| DataplaneError::Map { name, cause }
}

/// Where the instance's pins live.
pub fn instance_dir(bpffs: &Path, instance: &str) -> PathBuf {
    bpffs.join("lb").join(instance)
}

/// Which mode the program ended up attached in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    Native,
    Generic,
    /// Reused an existing pinned link (mode as it was attached originally).
    PinnedLink,
}

pub struct Dataplane {
    // Kept alive: dropping it would unload the program if nothing else holds it.
    _ebpf: Ebpf,
    pub dir: PathBuf,
    pub limits: Limits,
    pub services: HashMap<MapData, ServiceKey, ServiceValue>,
    pub rings: Array<MapData, Ring>,
    pub reals: Array<MapData, RealServer>,
    pub conns: HashMap<MapData, ConnKey, ConnValue>,
    pub svc_stats: PerCpuArray<MapData, Stats>,
    pub rs_stats: PerCpuArray<MapData, Stats>,
    pub global_stats: PerCpuArray<MapData, u64>,
    pub cursors: Array<MapData, u32>,
    pub rs_load: Array<MapData, RealLoad>,
    pub rs_closed: Array<MapData, RealLoad>,
    pub config: Array<MapData, DirectorConfig>,
    pub rs_over: Array<MapData, u32>,
    pub lblc: HashMap<MapData, lb_common::LblcKey, lb_common::LblcValue>,
    program_name: &'static str,
}

impl Dataplane {
    /// Loads the object, reusing the maps pinned in `dir` if present (pinning
    /// them there otherwise). Does not attach.
    pub fn load(dir: &Path, limits: &Limits) -> Result<Dataplane> {
        fs::create_dir_all(dir).map_err(|cause| DataplaneError::PinDir {
            path: dir.display().to_string(),
            cause,
        })?;
        let mut loader = EbpfLoader::new();
        loader
            .default_map_pin_directory(dir)
            .map_max_entries("SERVICES", limits.max_services)
            .map_max_entries("RINGS", limits.max_services * 2)
            .map_max_entries("CURSORS", limits.max_services)
            .map_max_entries("SVC_STATS", limits.max_services)
            .map_max_entries("REALS", limits.max_reals)
            .map_max_entries("RS_STATS", limits.max_reals)
            .map_max_entries("RS_LOAD", limits.max_reals)
            .map_max_entries("RS_CLOSED", limits.max_reals)
            .map_max_entries("RS_OVER", limits.max_reals)
            .map_max_entries("CONNS", limits.max_conns);
        check_pinned_layout(dir)?;
        let mut ebpf = loader.load(OBJECT)?;
        let program_name = "lb";
        {
            let prog: &mut Xdp = ebpf
                .program_mut(program_name)
                .ok_or(DataplaneError::MissingMap("program lb"))?
                .try_into()?;
            prog.load()?;
        }
        // The new-connection halves, entered by tail call through JUMP.
        {
            let mut fds = Vec::new();
            for name in ["lb_new", "lb_lblc", "lb_lblcr", "lb_lblcr_grow"] {
                let p: &mut Xdp = ebpf
                    .program_mut(name)
                    .ok_or(DataplaneError::MissingMap(name))?
                    .try_into()?;
                p.load()?;
                fds.push(p.fd()?.try_clone().map_err(|e| DataplaneError::PinDir {
                    path: format!("{name} fd"),
                    cause: e,
                })?);
            }
            let mut jump: aya::maps::ProgramArray<MapData> = ebpf
                .take_map("JUMP")
                .ok_or(DataplaneError::MissingMap("JUMP"))?
                .try_into()
                .map_err(map_err("JUMP"))?;
            for (i, fd) in fds.iter().enumerate() {
                jump.set(i as u32, fd, 0).map_err(map_err("JUMP"))?;
            }
        }
        macro_rules! take {
            ($name:literal) => {{
                let m = ebpf
                    .take_map($name)
                    .ok_or(DataplaneError::MissingMap($name))?;
                m.try_into().map_err(map_err($name))?
            }};
        }
        Ok(Dataplane {
            services: take!("SERVICES"),
            rings: take!("RINGS"),
            reals: take!("REALS"),
            conns: take!("CONNS"),
            svc_stats: take!("SVC_STATS"),
            rs_stats: take!("RS_STATS"),
            global_stats: take!("GLOBAL_STATS"),
            cursors: take!("CURSORS"),
            rs_load: take!("RS_LOAD"),
            rs_closed: take!("RS_CLOSED"),
            config: take!("CONFIG"),
            rs_over: take!("RS_OVER"),
            lblc: take!("LBLC"),
            _ebpf: ebpf,
            dir: dir.to_path_buf(),
            limits: limits.clone(),
            program_name,
        })
    }

    /// How many instructions the verifier processed loading program `name`.
    pub fn verified_instructions(&mut self, name: &'static str) -> Result<u32> {
        let prog: &mut Xdp = self
            ._ebpf
            .program_mut(name)
            .ok_or(DataplaneError::MissingMap(name))?
            .try_into()?;
        Ok(prog.info()?.verified_instruction_count().unwrap_or(0))
    }

    /// The loaded object, for the benchmark's reference programs.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self._ebpf
    }

    fn program(&mut self) -> Result<&mut Xdp> {
        Ok(self
            ._ebpf
            .program_mut(self.program_name)
            .ok_or(DataplaneError::MissingMap("program lb"))?
            .try_into()?)
    }

    /// Attaches to `iface`, or, when a pinned link exists in the instance
    /// directory, atomically replaces the program inside it.
    pub fn attach(&mut self, iface: &str, mode: XdpModeCfg) -> Result<Attached> {
        let link_path = self.dir.join("link");
        if link_path.exists() {
            let pinned = PinnedLink::from_pin(&link_path).map_err(|e| DataplaneError::Link {
                path: link_path.display().to_string(),
                msg: e.to_string(),
            })?;
            let fd_link: FdLink = pinned.into();
            let xdp_link = fd_link
                .try_into()
                .map_err(|e: aya::programs::links::LinkError| DataplaneError::Link {
                    path: link_path.display().to_string(),
                    msg: e.to_string(),
                })?;
            let prog = self.program()?;
            let id = prog.attach_to_link(xdp_link)?;
            // Keep the link alive beyond this process: it stays pinned.
            let link = prog.take_link(id)?;
            // Dropping it closes our fd; the pin keeps the link (and the program) alive.
            drop(link);
            info!(link = %link_path.display(), "replaced the program in the pinned XDP link");
            return Ok(Attached::PinnedLink);
        }
        let tries: &[(XdpMode, &'static str, Attached)] = match mode {
            XdpModeCfg::Native => &[(XdpMode::Driver, "native", Attached::Native)],
            XdpModeCfg::Generic => &[(XdpMode::Skb, "generic", Attached::Generic)],
            XdpModeCfg::Auto => &[
                (XdpMode::Driver, "native", Attached::Native),
                (XdpMode::Skb, "generic", Attached::Generic),
            ],
        };
        let mut last = None;
        for (i, (m, name, kind)) in tries.iter().enumerate() {
            let prog = self.program()?;
            match prog.attach(iface, *m) {
                Ok(id) => {
                    if i > 0 {
                        warn!(
                            iface,
                            "native XDP unavailable, attached in generic (SKB) mode: slower"
                        );
                    }
                    let link = prog.take_link(id)?;
                    let fd_link: FdLink =
                        link.try_into()
                            .map_err(|e: aya::programs::links::LinkError| DataplaneError::Link {
                                path: link_path.display().to_string(),
                                msg: format!("attachment is not a bpf_link: {e}"),
                            })?;
                    let pinned = fd_link.pin(&link_path).map_err(|e| DataplaneError::Link {
                        path: link_path.display().to_string(),
                        msg: e.to_string(),
                    })?;
                    drop(pinned); // closes our fd; the pin keeps the link
                    info!(iface, mode = name, "attached XDP program");
                    return Ok(*kind);
                }
                Err(cause) => {
                    last = Some(DataplaneError::Attach {
                        iface: iface.to_string(),
                        mode: name,
                        cause,
                    })
                }
            }
        }
        Err(last.expect("at least one attach mode"))
    }

    /// Runs the program once on `frame` (BPF_PROG_TEST_RUN). Returns the
    /// action and the output frame.
    pub fn test_run(&mut self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let mut out = vec![0u8; frame.len() + 256];
        let prog = self.program()?;
        let r = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }

    pub fn set_director_mac(&mut self, mac: [u8; 6]) -> Result<()> {
        let mut c = self.config.get(&0, 0).unwrap_or_default();
        c.mac = mac;
        self.config.set(0, c, 0).map_err(map_err("CONFIG"))
    }

    /// Director-wide flags (lb_common::dir_flags).
    pub fn set_flags(&mut self, flags: u8) -> Result<()> {
        let mut c = self.config.get(&0, 0).unwrap_or_default();
        c.flags = flags;
        self.config.set(0, c, 0).map_err(map_err("CONFIG"))
    }

    pub fn sum_stats(map: &PerCpuArray<MapData, Stats>, idx: u32) -> Stats {
        let mut s = Stats::default();
        if let Ok(v) = map.get(&idx, 0) {
            for c in v.iter() {
                s.conns += c.conns;
                s.packets += c.packets;
                s.bytes += c.bytes;
            }
        }
        s
    }

    /// The director-wide counters. `tx` is not counted on the hot path: it
    /// is the sum of the per-service packet counters.
    pub fn global_counters(&self) -> Vec<(String, u64)> {
        lb_common::counter::NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let v = if i as u32 == lb_common::counter::TX {
                    (0..self.limits.max_services)
                        .map(|id| Self::sum_stats(&self.svc_stats, id).packets)
                        .sum()
                } else {
                    self.global_stats
                        .get(&(i as u32), 0)
                        .map(|v| v.iter().sum())
                        .unwrap_or(0)
                };
                (name.to_string(), v)
            })
            .collect()
    }
}

/// Refuses pins left by a build whose map layout differs (a key or value
/// size changed): the program would read them wrongly. The message says
/// how to start afresh.
fn check_pinned_layout(dir: &Path) -> Result<()> {
    use std::mem::size_of;
    let expect: [(&str, usize, usize); 5] = [
        (
            "SERVICES",
            size_of::<ServiceKey>(),
            size_of::<ServiceValue>(),
        ),
        ("REALS", 4, size_of::<RealServer>()),
        ("CONNS", size_of::<ConnKey>(), size_of::<ConnValue>()),
        ("CONFIG", 4, size_of::<DirectorConfig>()),
        (
            "LBLC",
            size_of::<lb_common::LblcKey>(),
            size_of::<lb_common::LblcValue>(),
        ),
    ];
    for (name, k, v) in expect {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let Ok(info) = aya::maps::MapInfo::from_pin(&path) else {
            continue;
        };
        if info.key_size() as usize != k || info.value_size() as usize != v {
            return Err(DataplaneError::Layout {
                path: path.display().to_string(),
                found: (info.key_size(), info.value_size()),
                want: (k as u32, v as u32),
            });
        }
    }
    Ok(())
}

/// Attaches the `lb_pass` program (XDP_PASS) to `iface` and pins its link
/// at `pin`. A veth only delivers XDP_TX frames if its peer runs an XDP
/// program too: the lab puts this one on the director's peer.
pub fn attach_pass(iface: &str, pin: &Path) -> Result<()> {
    if let Some(dir) = pin.parent() {
        fs::create_dir_all(dir).map_err(|cause| DataplaneError::PinDir {
            path: dir.display().to_string(),
            cause,
        })?;
    }
    let mut loader = EbpfLoader::new();
    for m in [
        "SERVICES",
        "RINGS",
        "REALS",
        "CONNS",
        "CURSORS",
        "SVC_STATS",
        "RS_STATS",
        "LBLC",
    ] {
        loader.map_max_entries(m, 1);
    }
    // Private pin directory so these throwaway maps never touch an instance's.
    let scratch = pin.with_file_name("pass_maps"); // bpffs names may not contain dots
    fs::create_dir_all(&scratch).map_err(|cause| DataplaneError::PinDir {
        path: scratch.display().to_string(),
        cause,
    })?;
    loader.default_map_pin_directory(&scratch);
    let mut ebpf = loader.load(OBJECT)?;
    let prog: &mut Xdp = ebpf
        .program_mut("lb_pass")
        .ok_or(DataplaneError::MissingMap("program lb_pass"))?
        .try_into()?;
    prog.load()?;
    let id = prog
        .attach(iface, XdpMode::Driver)
        .map_err(|cause| DataplaneError::Attach {
            iface: iface.to_string(),
            mode: "native",
            cause,
        })?;
    let link = prog.take_link(id)?;
    let fd_link: FdLink = link
        .try_into()
        .map_err(|e: aya::programs::links::LinkError| DataplaneError::Link {
            path: pin.display().to_string(),
            msg: e.to_string(),
        })?;
    let pinned = fd_link.pin(pin).map_err(|e| DataplaneError::Link {
        path: pin.display().to_string(),
        msg: e.to_string(),
    })?;
    drop(pinned); // closes our fd; the pin keeps the link
    let _ = fs::remove_dir_all(&scratch);
    Ok(())
}

/// Removes an instance's pins: the pinned link (detaching the program once
/// nothing else holds it) and the maps (forgetting every connection).
pub fn unload(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    Ok(())
}
