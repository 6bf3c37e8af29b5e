//! The real-server helper (`lbadm realserver up|down|check`): sets up the
//! VIP on loopback with ARP suppression for LVS direct routing, in the order
//! the LVS documentation gives (sysctls first, then the address, so the real
//! server never answers ARP for the VIP even for an instant).

use std::{
    collections::BTreeMap,
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

use crate::netif::{add_host_address, addresses, del_address, host_prefix, ifindex, netlink};
use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

/// One sysctl the helper manages, with the value it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    pub path: PathBuf,
    pub want: u32,
}

fn conf_dir(root: &Path, iface: &str) -> PathBuf {
    root.join("net/ipv4/conf").join(iface)
}

/// The sysctls for ARP suppression: arp_ignore=1 and arp_announce=2 on `all`
/// and on each NIC (the kernel applies the maximum of the two).
pub fn arp_sysctls(root: &Path, nics: &[String]) -> Vec<Sysctl> {
    let mut v = Vec::new();
    for i in std::iter::once("all").chain(nics.iter().map(String::as_str)) {
        v.push(Sysctl {
            path: conf_dir(root, i).join("arp_ignore"),
            want: 1,
        });
        v.push(Sysctl {
            path: conf_dir(root, i).join("arp_announce"),
            want: 2,
        });
    }
    v
}

/// Every interface but loopback (and the pseudo entries all/default).
pub fn default_nics(root: &Path) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for e in fs::read_dir(root.join("net/ipv4/conf")).context("reading net/ipv4/conf")? {
        let name = e?.file_name().to_string_lossy().to_string();
        if !matches!(name.as_str(), "all" | "default" | "lo") {
            v.push(name);
        }
    }
    v.sort();
    Ok(v)
}

fn read_sysctl(p: &Path) -> Result<u32> {
    let s = fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    s.trim()
        .parse()
        .with_context(|| format!("{}: not a number", p.display()))
}

fn write_sysctl(p: &Path, v: u32) -> Result<()> {
    fs::write(p, format!("{v}\n")).with_context(|| format!("writing {}", p.display()))
}

/// What `check` finds missing (empty = all set).
pub fn missing_sysctls(list: &[Sysctl]) -> Vec<String> {
    list.iter()
        .filter_map(|s| match read_sysctl(&s.path) {
            Ok(v) if v >= s.want => None,
            Ok(v) => Some(format!("{} is {v}, needs {}", s.path.display(), s.want)),
            Err(e) => Some(format!("{e:#}")),
        })
        .collect()
}

/// What is missing for ARP suppression as the kernel applies it: on each
/// NIC the maximum of `all`'s value and its own must reach arp_ignore=1
/// and arp_announce=2 (a NIC at 0 is fine while `all` is set).
pub fn missing_arp(root: &Path, nics: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (name, want) in [("arp_ignore", 1), ("arp_announce", 2)] {
        let all = match read_sysctl(&conf_dir(root, "all").join(name)) {
            Ok(v) => v,
            Err(e) => {
                out.push(format!("{e:#}"));
                continue;
            }
        };
        for nic in nics {
            match read_sysctl(&conf_dir(root, nic).join(name)) {
                Ok(v) if all.max(v) >= want => {}
                Ok(v) => out.push(format!(
                    "net.ipv4.conf.{nic}.{name} in force is {} (the maximum of all's {all} and {nic}'s {v}), needs {want}",
                    all.max(v)
                )),
                Err(e) => out.push(format!("{e:#}")),
            }
        }
    }
    out
}

pub async fn has_vip(dev: &str, vip: &IpAddr) -> Result<bool> {
    let h = netlink().await?;
    let idx = ifindex(&h, dev).await?;
    Ok(addresses(&h, idx).await?.iter().any(|(a, _)| a == vip))
}

/// What `realserver up` changed, kept (one file per network namespace) so
/// that `down` can put things back: the sysctls it wrote with the values it
/// found, and the VIPs it added.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RsState {
    /// sysctl path -> (value found, value written).
    pub sysctls: BTreeMap<PathBuf, (u32, u32)>,
    /// (VIP, device) pairs set up.
    pub vips: Vec<(IpAddr, String)>,
}

impl RsState {
    /// The state file of the current network namespace in `dir`, named
    /// by the namespace's cookie (SO_NETNS_COOKIE, never reused while the
    /// system runs, unlike the namespace's inode), or its inode on kernels
    /// before 5.14.
    pub fn file(dir: &Path) -> Result<PathBuf> {
        use std::os::{fd::AsRawFd, unix::fs::MetadataExt};
        const SO_NETNS_COOKIE: libc::c_int = 71;
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").ok();
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        let ok = sock.as_ref().is_some_and(|s| {
            // SAFETY: a valid socket, and a u64 with its length.
            unsafe {
                libc::getsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    SO_NETNS_COOKIE,
                    &mut cookie as *mut u64 as *mut libc::c_void,
                    &mut len,
                ) == 0
            }
        });
        let name = if ok {
            format!("realserver-netns-cookie{cookie}.json")
        } else {
            let ino = fs::metadata("/proc/self/ns/net")
                .context("identifying the network namespace (/proc/self/ns/net)")?
                .ino();
            format!("realserver-netns{ino}.json")
        };
        Ok(dir.join(name))
    }

    /// An exclusive lock on the state file (held while it is read, changed
    /// and written back): two `up`s at once cannot lose each other's VIP.
    fn lock(p: &Path) -> Result<fs::File> {
        use std::os::fd::AsRawFd;
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let lock = p.with_extension("lock");
        let f = fs::File::create(&lock).with_context(|| format!("opening {}", lock.display()))?;
        // SAFETY: flock on a file we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "locking {}: {}",
                lock.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(f)
    }

    fn load(p: &Path) -> Result<RsState> {
        match fs::read_to_string(p) {
            Ok(t) => {
                serde_json::from_str(&t).with_context(|| format!("{}: unreadable", p.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RsState::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    fn save(&self, p: &Path) -> Result<()> {
        if self.sysctls.is_empty() && self.vips.is_empty() {
            return match fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).with_context(|| format!("removing {}", p.display()))
                }
                _ => Ok(()),
            };
        }
        crate::files::write_whole(p, serde_json::to_string_pretty(self)?.as_bytes())
            .with_context(|| format!("writing {}", p.display()))
    }

    /// Records the sysctls of `list` that need writing (with what they
    /// hold now) and returns them; one recorded earlier keeps its first
    /// value found.
    fn plan_up(&mut self, list: &[Sysctl]) -> Result<Vec<Sysctl>> {
        let mut writes = Vec::new();
        for s in list {
            let now = read_sysctl(&s.path)?;
            if now < s.want {
                let found = self.sysctls.get(&s.path).map_or(now, |r| r.0);
                self.sysctls.insert(s.path.clone(), (found, s.want));
                writes.push(s.clone());
            }
        }
        Ok(writes)
    }

    /// The sysctls to put back once no VIP remains: those still holding the
    /// value `up` wrote (one changed since by someone else is left alone).
    fn plan_restore(&mut self) -> Vec<(PathBuf, u32)> {
        std::mem::take(&mut self.sysctls)
            .into_iter()
            .filter(|(p, (_, set))| read_sysctl(p).is_ok_and(|v| v == *set))
            .map(|(p, (found, _))| (p, found))
            .collect()
    }
}

/// `realserver up`: sysctls (their values recorded in the state file
/// `state` first), then the VIP on `dev`. Idempotent.
pub async fn up(
    root: &Path,
    state: &Path,
    vip: IpAddr,
    dev: &str,
    nics: &[String],
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let _lock = RsState::lock(state)?;
    let mut st = RsState::load(state)?;
    let writes = if vip.is_ipv4() {
        st.plan_up(&arp_sysctls(root, nics))?
    } else {
        Vec::new()
    };
    if !st.vips.contains(&(vip, dev.to_string())) {
        st.vips.push((vip, dev.to_string()));
    }
    st.save(state)?;
    for s in writes {
        write_sysctl(&s.path, s.want)?;
        done.push(format!("set {} = {}", s.path.display(), s.want));
    }
    let h = netlink().await?;
    let idx = ifindex(&h, dev).await?;
    if add_host_address(&h, idx, dev, vip).await? {
        done.push(format!("added {vip}/{} to {dev}", host_prefix(&vip)));
    }
    Ok(done)
}

/// `realserver down`: the VIP first; then, once no VIP `up` set up remains
/// (on any device), the sysctls back to the values `up` found.
pub async fn down(state: &Path, vip: IpAddr, dev: &str) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let h = netlink().await?;
    let idx = ifindex(&h, dev).await?;
    if del_address(&h, idx, dev, vip).await? {
        done.push(format!("removed {vip} from {dev}"));
    }
    let _lock = RsState::lock(state)?;
    let mut st = RsState::load(state)?;
    st.vips.retain(|(a, d)| !(*a == vip && d == dev));
    // VIPs still set up (one removed by hand meanwhile does not count).
    let mut remaining = Vec::new();
    for (a, d) in &st.vips {
        if let Ok(i) = ifindex(&h, d).await {
            if addresses(&h, i).await?.iter().any(|(x, _)| x == a) {
                remaining.push((*a, d.clone()));
            }
        }
    }
    st.vips = remaining;
    // Addresses someone else put on the device (or on lo) need the
    // suppression as much as ours.
    let mut others = Vec::new();
    for d in [dev, "lo"] {
        if let Ok(i) = ifindex(&h, d).await {
            others.extend(
                addresses(&h, i)
                    .await?
                    .into_iter()
                    .filter(|(a, _)| a.is_ipv4() && !a.is_loopback())
                    .map(|(a, _)| format!("{a} on {d}")),
            );
        }
    }
    others.sort();
    others.dedup();
    if st.vips.is_empty() && !others.is_empty() {
        done.push(format!(
            "ARP suppression kept: {} still there (not set up by realserver up)",
            others.join(", ")
        ));
    } else if st.vips.is_empty() {
        for (p, v) in st.plan_restore() {
            write_sysctl(&p, v)?;
            done.push(format!(
                "set {} = {v} (as found before `realserver up`)",
                p.display()
            ));
        }
    } else {
        done.push(format!(
            "ARP suppression kept: {} VIP(s) still set up",
            st.vips.len()
        ));
    }
    st.save(state)?;
    Ok(done)
}

/// `realserver check`: what is missing for `vip` to work in DR mode.
pub async fn check(root: &Path, vip: IpAddr, dev: &str, nics: &[String]) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    if vip.is_ipv4() {
        missing.extend(missing_arp(root, nics));
    }
    if !has_vip(dev, &vip).await? {
        missing.push(format!("{vip}/{} is not on {dev}", host_prefix(&vip)));
    }
    Ok(missing)
}

pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("realserver up/down must run as root");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_list_and_check_against_a_fake_proc_tree() {
        let root = std::env::temp_dir().join(format!("lb-rs-test-{}", std::process::id()));
        for i in ["all", "eth0", "lo", "default"] {
            let d = conf_dir(&root, i);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("arp_ignore"), "0\n").unwrap();
            fs::write(d.join("arp_announce"), "0\n").unwrap();
        }
        let nics = default_nics(&root).unwrap();
        assert_eq!(nics, vec!["eth0".to_string()]);
        let list = arp_sysctls(&root, &nics);
        assert_eq!(list.len(), 4);
        assert_eq!(missing_sysctls(&list).len(), 4);
        for s in &list {
            write_sysctl(&s.path, s.want).unwrap();
        }
        assert!(missing_sysctls(&list).is_empty());
        // a higher value (arp_ignore=2) also suppresses
        write_sysctl(&list[0].path, 2).unwrap();
        assert!(missing_sysctls(&list).is_empty());
        assert!(missing_arp(&root, &nics).is_empty());
        // What is in force is the maximum of all and the NIC: eth0 at 0 is
        // fine while all says 2 and 2; all at 0 is fine while eth0 says so.
        let eth0 = |n: &str| conf_dir(&root, "eth0").join(n);
        let all = |n: &str| conf_dir(&root, "all").join(n);
        write_sysctl(&eth0("arp_ignore"), 0).unwrap();
        write_sysctl(&eth0("arp_announce"), 0).unwrap();
        assert!(missing_arp(&root, &nics).is_empty());
        write_sysctl(&all("arp_announce"), 1).unwrap();
        assert_eq!(
            missing_arp(&root, &nics),
            ["net.ipv4.conf.eth0.arp_announce in force is 1 (the maximum of all's 1 and eth0's 0), needs 2"]
        );
        write_sysctl(&eth0("arp_announce"), 2).unwrap();
        write_sysctl(&all("arp_ignore"), 0).unwrap();
        write_sysctl(&eth0("arp_ignore"), 1).unwrap();
        assert!(missing_arp(&root, &nics).is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn down_puts_back_what_up_found_and_leaves_what_others_changed() {
        let root = std::env::temp_dir().join(format!("lb-rs-state-{}", std::process::id()));
        for i in ["all", "eth0"] {
            let d = conf_dir(&root, i);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("arp_ignore"), "0\n").unwrap();
            fs::write(d.join("arp_announce"), "0\n").unwrap();
        }
        let list = arp_sysctls(&root, &["eth0".to_string()]);
        // Found: all/arp_ignore already 2 (kept), eth0/arp_announce 1.
        write_sysctl(&list[0].path, 2).unwrap();
        write_sysctl(&list[3].path, 1).unwrap();
        let mut st = RsState::default();
        let writes = st.plan_up(&list).unwrap();
        assert_eq!(writes.len(), 3, "{writes:?}");
        for w in &writes {
            write_sysctl(&w.path, w.want).unwrap();
        }
        // A second `up` records nothing new and keeps the first values found.
        assert!(st.plan_up(&list).unwrap().is_empty());
        assert_eq!(st.sysctls[&list[3].path], (1, 2));
        // Someone sets all/arp_announce to 1 meanwhile: theirs stays.
        write_sysctl(&list[1].path, 1).unwrap();
        let back = st.plan_restore();
        assert_eq!(
            back,
            vec![(list[3].path.clone(), 1), (list[2].path.clone(), 0)]
                .into_iter()
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect::<Vec<_>>()
        );
        assert!(st.sysctls.is_empty());
        fs::remove_dir_all(&root).unwrap();
    }
}
