//! Attaching the program to the NIC through a pinned bpf_link (replaced in
//! place on restart), running it on a test frame, and the lab's XDP_PASS
//! helper.

use std::{
    fs,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        links::{FdLink, LinkError, PinnedLink},
        TestRun, TestRunOptions, Xdp, XdpMode,
    },
    EbpfLoader,
};
use lb_common::names::tools;
use tracing::{info, warn};

use super::{program, AttachMode, Dataplane, DataplaneError, Result, TOOLS_OBJECT};

/// Where an instance's pins live.
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

fn link_err(path: &Path) -> impl Fn(LinkError) -> DataplaneError + '_ {
    move |e| DataplaneError::Link {
        path: path.display().to_string(),
        msg: e.to_string(),
    }
}

/// Attaches `prog` to `iface` in `mode` and pins the link at `pin`.
fn attach_pinned(prog: &mut Xdp, iface: &str, mode: XdpMode, pin: &Path) -> Result<()> {
    let id = prog
        .attach(iface, mode)
        .map_err(|cause| DataplaneError::Attach {
            iface: iface.to_string(),
            mode: if mode == XdpMode::Skb {
                "generic"
            } else {
                "native"
            },
            cause,
        })?;
    let link = prog.take_link(id)?;
    let fd_link: FdLink = link.try_into().map_err(link_err(pin))?;
    // Dropping the pinned link closes our fd; the pin keeps the link.
    drop(fd_link.pin(pin).map_err(|e| DataplaneError::Link {
        path: pin.display().to_string(),
        msg: e.to_string(),
    })?);
    Ok(())
}

impl Dataplane {
    /// Attaches to `iface`, or, when a pinned link exists in the instance
    /// directory, atomically replaces the program inside it. This load's
    /// JUMP is pinned first (so it keeps its programs after the daemon
    /// exits); call [`Dataplane::retire_old_jumps`] a moment later.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<Attached> {
        if let Some(jump) = self.jump.take() {
            jump.pin(&self.jump_pin).map_err(|e| DataplaneError::Link {
                path: self.jump_pin.display().to_string(),
                msg: e.to_string(),
            })?;
        }
        let r = self.attach_link(iface, mode);
        if r.is_err() {
            // The running program keeps its own JUMP; this one goes.
            let _ = fs::remove_file(&self.jump_pin);
        }
        r
    }

    /// Removes the JUMP pins of earlier loads, once the link runs this
    /// load's program (call it after in-flight packets of the old program
    /// are done: the old programs' tail calls fail once their JUMP goes).
    pub fn retire_old_jumps(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            // "JUMP": pinned by name by versions before per-load JUMPs.
            let old = name == "JUMP" || name.starts_with("jump_");
            if old && e.path() != self.jump_pin {
                match fs::remove_file(e.path()) {
                    Ok(()) => {
                        info!(pin = %e.path().display(), "retired the previous program's JUMP")
                    }
                    Err(err) => warn!(pin = %e.path().display(), "removing an old JUMP pin: {err}"),
                }
            }
        }
    }

    fn attach_link(&mut self, iface: &str, mode: AttachMode) -> Result<Attached> {
        let link_path = self.dir.join("link");
        if link_path.exists() {
            let pinned = PinnedLink::from_pin(&link_path).map_err(|e| DataplaneError::Link {
                path: link_path.display().to_string(),
                msg: e.to_string(),
            })?;
            let fd_link: FdLink = pinned.into();
            let xdp_link = fd_link.try_into().map_err(link_err(&link_path))?;
            let prog = self.program()?;
            let id = prog.attach_to_link(xdp_link)?;
            // Dropping our handle closes its fd; the pin keeps the link
            // (and the program) alive beyond this process.
            drop(prog.take_link(id)?);
            info!(link = %link_path.display(), "replaced the program in the pinned XDP link");
            return Ok(Attached::PinnedLink);
        }
        let tries: &[(XdpMode, &'static str, Attached)] = match mode {
            AttachMode::Native => &[(XdpMode::Driver, "native", Attached::Native)],
            AttachMode::Generic => &[(XdpMode::Skb, "generic", Attached::Generic)],
            AttachMode::Auto => &[
                (XdpMode::Driver, "native", Attached::Native),
                (XdpMode::Skb, "generic", Attached::Generic),
            ],
        };
        let mut last = None;
        for (i, (m, name, kind)) in tries.iter().enumerate() {
            match attach_pinned(self.program()?, iface, *m, &link_path) {
                Ok(()) => {
                    if i > 0 {
                        warn!(
                            iface,
                            "native XDP unavailable, attached in generic (SKB) mode: slower"
                        );
                    }
                    info!(iface, mode = name, "attached XDP program");
                    return Ok(*kind);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attach mode"))
    }

    /// Runs the program once on `frame` (BPF_PROG_TEST_RUN). Returns the
    /// action and the output frame.
    pub fn test_run(&mut self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let mut out = vec![0u8; frame.len() + 256];
        let r = self.program()?.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }
}

/// The tools object loaded, with the directory of `pin` (where its link
/// goes) made.
fn tools_object(pin: &Path) -> Result<aya::Ebpf> {
    if let Some(dir) = pin.parent() {
        fs::create_dir_all(dir).map_err(|cause| DataplaneError::PinDir {
            path: dir.display().to_string(),
            cause,
        })?;
    }
    Ok(EbpfLoader::new().load(TOOLS_OBJECT)?)
}

/// Attaches the lab's XDP_PASS program to `iface` and pins its link at
/// `pin`. A veth only delivers XDP_TX frames if its peer runs an XDP
/// program too: the lab puts this one on the director's peer.
pub fn attach_pass(iface: &str, pin: &Path) -> Result<()> {
    let mut ebpf = tools_object(pin)?;
    let prog = program(&mut ebpf, tools::PASS)?;
    prog.load()?;
    attach_pinned(prog, iface, XdpMode::Driver, pin)
}

/// The floor load balancer's table: slot 0 the VIP, the port (network
/// order; 0: every port) and how many real servers follow, then their
/// MACs.
pub fn floor_lb_entries(
    vip: std::net::Ipv4Addr,
    port: u16,
    macs: &[[u8; 6]],
) -> Vec<(u32, [u8; 8])> {
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&vip.octets());
    head[4..6].copy_from_slice(&port.to_be_bytes());
    head[6] = macs.len() as u8;
    let mut v = vec![(0, head)];
    for (i, m) in macs.iter().enumerate() {
        let mut e = [0u8; 8];
        e[..6].copy_from_slice(m);
        v.push((1 + i as u32, e));
    }
    v
}

/// The lab's floor load balancer for the benchmark: the tools object's
/// stateless forwarder on `iface` (link pinned at `pin`), TCP to
/// `vip`:`port` spread over `macs` by source port. Not a director: no
/// connection state, no health, no scheduling; what forwarding alone costs.
pub fn attach_floor_lb(
    iface: &str,
    pin: &Path,
    vip: std::net::Ipv4Addr,
    port: u16,
    macs: &[[u8; 6]],
) -> Result<()> {
    if macs.is_empty() || macs.len() > 16 {
        return Err(DataplaneError::Link {
            path: pin.display().to_string(),
            msg: format!(
                "the floor program takes 1 to 16 real servers, not {}",
                macs.len()
            ),
        });
    }
    let mut ebpf = tools_object(pin)?;
    {
        let name = tools::MAP_FLOOR_LB;
        let map = ebpf
            .map_mut(name)
            .ok_or(DataplaneError::Missing(tools::MAP_FLOOR_LB))?;
        let mut a: aya::maps::Array<&mut aya::maps::MapData, [u8; 8]> =
            aya::maps::Array::try_from(map).map_err(super::map_err(name))?;
        // The head (slot 0) last: the program forwards only once every MAC
        // is in.
        for (slot, v) in floor_lb_entries(vip, port, macs).into_iter().rev() {
            a.set(slot, v, 0).map_err(super::map_err(name))?;
        }
    }
    let prog = program(&mut ebpf, tools::FLOOR_LB)?;
    prog.load()?;
    attach_pinned(prog, iface, XdpMode::Driver, pin)
}

/// The lock one daemon holds on its instance (an exclusive flock on the
/// pin directory), released when it exits, however it exits.
#[derive(Debug)]
pub struct InstanceLock(#[allow(dead_code)] fs::File);

/// Takes the instance's lock, creating its pin directory if needed; refused
/// while another lbd runs the instance.
pub fn lock_instance(dir: &Path) -> Result<InstanceLock> {
    fs::create_dir_all(dir).map_err(|cause| DataplaneError::PinDir {
        path: dir.display().to_string(),
        cause,
    })?;
    let f = fs::File::open(dir).map_err(|cause| DataplaneError::PinDir {
        path: dir.display().to_string(),
        cause,
    })?;
    // SAFETY: flock on a valid fd we own.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        return Err(DataplaneError::Busy {
            dir: dir.display().to_string(),
        });
    }
    Ok(InstanceLock(f))
}

/// Removes an instance's pins: the pinned link (detaching the program once
/// nothing else holds it) and the maps (forgetting every connection).
/// Refused while an lbd runs the instance.
pub fn unload(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    unload_held(dir, lock_instance(dir)?)
}

/// [`unload`] with the instance's lock already held (what must happen
/// before the pins go is done under it).
pub fn unload_held(dir: &Path, lock: InstanceLock) -> Result<()> {
    let left = super::place::remove_own_pins(dir).map_err(|cause| DataplaneError::PinDir {
        path: dir.display().to_string(),
        cause,
    })?;
    drop(lock);
    if !left.is_empty() {
        warn!(dir = %dir.display(), ?left, "left files that are not lbd's pins (and so the directory)");
    }
    Ok(())
}
