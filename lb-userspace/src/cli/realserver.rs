//! The real-server helper (`lbadm realserver up|down|check`): sets up the
//! VIP on loopback with ARP suppression for LVS direct routing, in the order
//! the LVS documentation gives (sysctls first, then the address, so the real
//! server never answers ARP for the VIP even for an instant).

use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};

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

fn prefix(vip: &IpAddr) -> u8 {
    match vip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

async fn netlink() -> Result<rtnetlink::Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().context("netlink socket")?;
    tokio::spawn(conn);
    Ok(handle)
}

async fn ifindex(h: &rtnetlink::Handle, dev: &str) -> Result<u32> {
    let link = h
        .link()
        .get()
        .match_name(dev.to_string())
        .execute()
        .try_next()
        .await
        .with_context(|| format!("interface {dev} not found"))?
        .with_context(|| format!("interface {dev} not found"))?;
    Ok(link.header.index)
}

async fn addresses(h: &rtnetlink::Handle, idx: u32) -> Result<Vec<(IpAddr, u8)>> {
    let mut out = Vec::new();
    let mut s = h.address().get().set_link_index_filter(idx).execute();
    while let Some(m) = s.try_next().await? {
        for a in &m.attributes {
            if let AddressAttribute::Address(ip) = a {
                out.push((*ip, m.header.prefix_len));
            }
        }
    }
    Ok(out)
}

pub async fn has_vip(dev: &str, vip: &IpAddr) -> Result<bool> {
    let h = netlink().await?;
    let idx = ifindex(&h, dev).await?;
    Ok(addresses(&h, idx).await?.iter().any(|(a, _)| a == vip))
}

/// `realserver up`: sysctls, then the VIP on `dev`. Idempotent.
pub async fn up(root: &Path, vip: IpAddr, dev: &str, nics: &[String]) -> Result<Vec<String>> {
    let mut done = Vec::new();
    if vip.is_ipv4() {
        for s in arp_sysctls(root, nics) {
            if read_sysctl(&s.path)? < s.want {
                write_sysctl(&s.path, s.want)?;
                done.push(format!("set {} = {}", s.path.display(), s.want));
            }
        }
    }
    let h = netlink().await?;
    let idx = ifindex(&h, dev).await?;
    if !addresses(&h, idx).await?.iter().any(|(a, _)| *a == vip) {
        let mut req = h.address().add(idx, vip, prefix(&vip));
        if vip.is_ipv6() {
            // No duplicate address detection: the VIP is held by the director too.
            req.message_mut().header.flags = AddressHeaderFlags::Nodad;
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        req.execute()
            .await
            .with_context(|| format!("adding {vip}/{} to {dev}", prefix(&vip)))?;
        done.push(format!("added {vip}/{} to {dev}", prefix(&vip)));
    }
    Ok(done)
}

/// `realserver down`: the VIP first, then the sysctls back to the kernel
/// defaults (0) once no other address than loopback's own remains on `dev`.
pub async fn down(root: &Path, vip: IpAddr, dev: &str, nics: &[String]) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let h = netlink().await?;
    let idx = ifindex(&h, dev).await?;
    let mut s = h.address().get().set_link_index_filter(idx).execute();
    while let Some(m) = s.try_next().await? {
        if m.attributes
            .iter()
            .any(|a| matches!(a, AddressAttribute::Address(ip) if *ip == vip))
        {
            h.address()
                .del(m)
                .execute()
                .await
                .with_context(|| format!("removing {vip} from {dev}"))?;
            done.push(format!("removed {vip} from {dev}"));
            break;
        }
    }
    let others = addresses(&h, idx)
        .await?
        .into_iter()
        .filter(|(a, _)| !a.is_loopback() && a.is_ipv4())
        .count();
    if others == 0 {
        for s in arp_sysctls(root, nics) {
            if read_sysctl(&s.path)? != 0 {
                write_sysctl(&s.path, 0)?;
                done.push(format!("set {} = 0", s.path.display()));
            }
        }
    }
    Ok(done)
}

/// `realserver check`: what is missing for `vip` to work in DR mode.
pub async fn check(root: &Path, vip: IpAddr, dev: &str, nics: &[String]) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    if vip.is_ipv4() {
        missing.extend(missing_sysctls(&arp_sysctls(root, nics)));
    }
    if !has_vip(dev, &vip).await? {
        missing.push(format!("{vip}/{} is not on {dev}", prefix(&vip)));
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
        fs::remove_dir_all(&root).unwrap();
    }
}
