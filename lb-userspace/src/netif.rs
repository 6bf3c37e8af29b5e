//! Interfaces and their addresses through rtnetlink: what `lbadm
//! realserver` (the VIP on a real server's loopback) and VRRP (the VIPs a
//! master holds) both need.

use std::net::IpAddr;

use anyhow::{Context as _, Result};
use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};

/// A netlink connection (spawned on the current tokio runtime).
pub async fn netlink() -> Result<rtnetlink::Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().context("netlink socket")?;
    tokio::spawn(conn);
    Ok(handle)
}

/// The index of interface `dev`.
pub async fn ifindex(h: &rtnetlink::Handle, dev: &str) -> Result<u32> {
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

/// The MAC address of interface `idx`.
pub async fn mac(h: &rtnetlink::Handle, idx: u32) -> Result<[u8; 6]> {
    use rtnetlink::packet_route::link::LinkAttribute;
    let mut links = h.link().get().match_index(idx).execute();
    while let Some(l) = links.try_next().await? {
        for a in l.attributes {
            if let LinkAttribute::Address(m) = a {
                if let Ok(mac) = <[u8; 6]>::try_from(m.as_slice()) {
                    return Ok(mac);
                }
            }
        }
    }
    anyhow::bail!("interface {idx} has no Ethernet address")
}

/// The addresses (with prefix lengths) of interface `idx`.
pub async fn addresses(h: &rtnetlink::Handle, idx: u32) -> Result<Vec<(IpAddr, u8)>> {
    Ok(all_addresses(h)
        .await?
        .into_iter()
        .filter(|(i, _, _)| *i == idx)
        .map(|(_, a, p)| (a, p))
        .collect())
}

/// Every address of every interface: (interface index, address, prefix
/// length).
pub async fn all_addresses(h: &rtnetlink::Handle) -> Result<Vec<(u32, IpAddr, u8)>> {
    let mut out = Vec::new();
    let mut s = h.address().get().execute();
    while let Some(m) = s.try_next().await? {
        for a in &m.attributes {
            if let AddressAttribute::Address(ip) = a {
                out.push((m.header.index, *ip, m.header.prefix_len));
            }
        }
    }
    Ok(out)
}

/// Whether `a` is inside `net/len`.
pub fn in_prefix(a: &IpAddr, net: &IpAddr, len: u8) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            u32::from(*a) & m == u32::from(*n) & m
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            u128::from(*a) & m == u128::from(*n) & m
        }
        _ => false,
    }
}

/// A host prefix: /32 or /128.
pub fn host_prefix(a: &IpAddr) -> u8 {
    match a {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Adds `a` as a host address to interface `idx` (named `dev` in errors),
/// IPv6 without duplicate address detection (a VIP is held elsewhere too).
/// Returns false if it was there already.
pub async fn add_host_address(
    h: &rtnetlink::Handle,
    idx: u32,
    dev: &str,
    a: IpAddr,
) -> Result<bool> {
    if addresses(h, idx).await?.iter().any(|(x, _)| *x == a) {
        return Ok(false);
    }
    let mut req = h.address().add(idx, a, host_prefix(&a));
    if a.is_ipv6() {
        req.message_mut().header.flags = AddressHeaderFlags::Nodad;
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    req.execute()
        .await
        .with_context(|| format!("adding {a}/{} to {dev}", host_prefix(&a)))?;
    Ok(true)
}

/// Removes address `a` from interface `idx`; returns false if it was not
/// there.
pub async fn del_address(h: &rtnetlink::Handle, idx: u32, dev: &str, a: IpAddr) -> Result<bool> {
    let mut s = h.address().get().set_link_index_filter(idx).execute();
    while let Some(m) = s.try_next().await? {
        if m.attributes
            .iter()
            .any(|x| matches!(x, AddressAttribute::Address(ip) if *ip == a))
        {
            h.address()
                .del(m)
                .execute()
                .await
                .with_context(|| format!("removing {a} from {dev}"))?;
            return Ok(true);
        }
    }
    Ok(false)
}
