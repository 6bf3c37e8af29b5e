//! Real-server MAC resolution through the kernel's neighbour table
//! (rtnetlink): a dump when asked, and the table's notifications as they
//! come (neighbour entries and the NIC's link state). A missing entry is
//! provoked by sending one UDP datagram to the discard port of the real
//! server through the director's NIC, which makes the kernel ARP (or ND) for
//! it; the answer arrives as a notification.

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
};

use futures::{StreamExt, TryStreamExt};
use rtnetlink::{
    packet_core::NetlinkPayload,
    packet_route::{
        link::LinkAttribute,
        link::{LinkFlags, LinkMessage},
        neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
        },
        AddressFamily, RouteNetlinkMessage,
    },
    Handle, MulticastGroup,
};
use tokio::sync::mpsc;
use tracing::debug;

#[derive(Debug, thiserror::Error)]
pub enum NeighError {
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("interface {0} not found")]
    NoInterface(String),
    #[error("interface {0} has no Ethernet address")]
    NoMac(String),
}

/// What the kernel's neighbour table says of one address on the NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Neigh {
    /// Resolved: reachable, stale, delay, probe, permanent or noarp.
    Usable([u8; 6]),
    /// Being resolved (incomplete).
    Pending,
    /// Resolution failed: nobody answers for the address.
    Failed,
    /// No entry: never made, deleted, or flushed with the link.
    Missing,
}

/// The MAC to forward to, from the last-known one and the table's word: a
/// usable entry wins, a failed resolution clears it, and a missing or
/// pending entry keeps the last-known MAC (stale until confirmed) so that a
/// flushed table, a link flap or a restart does not empty the rings.
pub fn follow(known: Option<[u8; 6]>, seen: Neigh) -> Option<[u8; 6]> {
    match seen {
        Neigh::Usable(mac) => Some(mac),
        Neigh::Failed => None,
        Neigh::Pending | Neigh::Missing => known,
    }
}

/// A notification from the kernel about the NIC or its neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighEvent {
    Seen(IpAddr, Neigh),
    /// The NIC's link: administratively up with carrier, or not.
    Link(bool),
    /// Notifications were lost (socket overrun): dump the table again.
    Resync,
}

#[derive(Clone)]
pub struct Resolver {
    handle: Handle,
    pub iface: String,
    pub ifindex: u32,
}

impl Resolver {
    /// Opens a netlink connection (spawned on the current tokio runtime).
    pub async fn new(iface: &str) -> Result<Resolver, NeighError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        let link = handle
            .link()
            .get()
            .match_name(iface.to_string())
            .execute()
            .try_next()
            .await
            .map_err(|_| NeighError::NoInterface(iface.to_string()))?
            .ok_or_else(|| NeighError::NoInterface(iface.to_string()))?;
        Ok(Resolver {
            handle,
            iface: iface.to_string(),
            ifindex: link.header.index,
        })
    }

    async fn link(&self) -> Result<LinkMessage, NeighError> {
        let mut links = self.handle.link().get().match_index(self.ifindex).execute();
        links
            .try_next()
            .await?
            .ok_or_else(|| NeighError::NoInterface(self.iface.clone()))
    }

    /// The XDP program attached to the NIC as the kernel reports it: its
    /// mode ("native", "generic", "offload", "multi") and program id.
    pub async fn xdp(&self) -> Result<Option<(&'static str, u32)>, NeighError> {
        use rtnetlink::packet_route::link::{LinkXdp, XdpAttached};
        let mut mode = None;
        let mut id = 0;
        for attr in self.link().await?.attributes {
            let LinkAttribute::Xdp(xdp) = attr else {
                continue;
            };
            for x in xdp {
                match x {
                    LinkXdp::Attached(a) => {
                        mode = match a {
                            XdpAttached::Driver => Some("native"),
                            XdpAttached::SocketBuffer => Some("generic"),
                            XdpAttached::Hardware => Some("offload"),
                            XdpAttached::Multiple => Some("multi"),
                            _ => None,
                        }
                    }
                    LinkXdp::ProgId(p) => id = p,
                    // Several programs (multi): the driver's is the one
                    // that sees the frames first.
                    LinkXdp::DrvProgId(p) | LinkXdp::SkbProgId(p) if id == 0 => id = p,
                    _ => {}
                }
            }
        }
        Ok(mode.map(|m| (m, id)))
    }

    /// The neighbour entries of `wanted` on the NIC, as `lbadm diagnose`
    /// shows them (state, MAC, seconds since confirmed).
    pub async fn neighbour_info(
        &self,
        wanted: &BTreeSet<IpAddr>,
    ) -> Result<std::collections::BTreeMap<IpAddr, crate::diagnose::director::NeighInfo>, NeighError>
    {
        let mut out = std::collections::BTreeMap::new();
        let mut dump = self.handle.neighbours().get().execute();
        while let Some(msg) = dump.try_next().await? {
            if msg.header.ifindex != self.ifindex {
                continue;
            }
            let Some((a, n)) = entry(&msg) else {
                continue;
            };
            if !wanted.contains(&a) {
                continue;
            }
            // USER_HZ ticks (100 a second).
            let confirmed_s = msg.attributes.iter().find_map(|x| match x {
                NeighbourAttribute::CacheInfo(c) => Some(u64::from(c.confirmed) / 100),
                _ => None,
            });
            let mac = match n {
                Neigh::Usable(m) => Some(crate::director::codec::fmt_mac(&m)),
                _ => None,
            };
            let state = format!("{:?}", msg.header.state).to_uppercase();
            out.insert(
                a,
                crate::diagnose::director::NeighInfo {
                    state,
                    mac,
                    confirmed_s,
                },
            );
        }
        Ok(out)
    }

    /// Every address of the director: (interface index, address, prefix).
    pub async fn all_addresses(&self) -> anyhow::Result<Vec<(u32, IpAddr, u8)>> {
        crate::netif::all_addresses(&self.handle).await
    }

    /// The NIC's own MAC (source MAC of forwarded frames).
    pub async fn own_mac(&self) -> Result<[u8; 6], NeighError> {
        for attr in self.link().await?.attributes {
            if let LinkAttribute::Address(a) = attr {
                if let Ok(mac) = <[u8; 6]>::try_from(a.as_slice()) {
                    return Ok(mac);
                }
            }
        }
        Err(NeighError::NoMac(self.iface.clone()))
    }

    /// Whether the NIC is up with carrier now.
    pub async fn link_up(&self) -> Result<bool, NeighError> {
        Ok(is_up(&self.link().await?))
    }

    /// What the neighbour table says of each of `wanted`. With `probe`,
    /// resolution is provoked for every address without a usable entry,
    /// and for usable ones the kernel has not confirmed lately (STALE: the
    /// director's own forwarding never confirms them, so a server that
    /// moved or died would otherwise keep its entry for good).
    pub async fn resolve(
        &self,
        wanted: &BTreeSet<IpAddr>,
        probe: bool,
    ) -> Result<Vec<(IpAddr, Neigh)>, NeighError> {
        let mut table: HashMap<IpAddr, (Neigh, bool)> = HashMap::new();
        let mut dump = self.handle.neighbours().get().execute();
        while let Some(msg) = dump.try_next().await? {
            if msg.header.ifindex == self.ifindex {
                if let Some((a, n)) = entry(&msg) {
                    table.insert(a, (n, msg.header.state == NeighbourState::Stale));
                }
            }
        }
        let mut out = Vec::new();
        for a in wanted {
            let (n, unconfirmed) = table.get(a).copied().unwrap_or((Neigh::Missing, false));
            if probe && (unconfirmed || !matches!(n, Neigh::Usable(_))) {
                self.provoke(*a);
            }
            out.push((*a, n));
        }
        Ok(out)
    }

    /// Sends one datagram to the real server's discard port through the NIC,
    /// so that the kernel resolves its link-layer address.
    pub fn provoke(&self, a: IpAddr) {
        let bind: SocketAddr = match a {
            IpAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
            IpAddr::V6(_) => "[::]:0".parse().expect("literal"),
        };
        let Ok(sock) = UdpSocket::bind(bind) else {
            return;
        };
        let name = self.iface.as_bytes();
        // SAFETY: valid socket and buffer for SO_BINDTODEVICE.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                name.as_ptr() as *const libc::c_void,
                name.len() as libc::socklen_t,
            );
        }
        let r = sock.send_to(b"lbd neighbour probe", SocketAddr::new(a, 9));
        debug!(real = %a, ok = r.is_ok(), "provoked neighbour resolution");
    }

    /// Subscribes to the kernel's neighbour and link notifications for the
    /// NIC. The channel closes if the netlink socket fails.
    pub fn watch(&self) -> Result<mpsc::UnboundedReceiver<NeighEvent>, NeighError> {
        let (conn, _handle, mut messages) =
            rtnetlink::new_multicast_connection(&[MulticastGroup::Neigh, MulticastGroup::Link])?;
        tokio::spawn(conn);
        let (tx, rx) = mpsc::unbounded_channel();
        let ifindex = self.ifindex;
        tokio::spawn(async move {
            while let Some((msg, _)) = messages.next().await {
                let ev = match msg.payload {
                    NetlinkPayload::Overrun(_) => Some(NeighEvent::Resync),
                    NetlinkPayload::InnerMessage(m) => event(m, ifindex),
                    _ => None,
                };
                if let Some(ev) = ev {
                    if tx.send(ev).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// The event a notification means for the NIC with `ifindex`, if any.
fn event(m: RouteNetlinkMessage, ifindex: u32) -> Option<NeighEvent> {
    match m {
        RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == ifindex => {
            entry(&n).map(|(a, s)| NeighEvent::Seen(a, s))
        }
        RouteNetlinkMessage::DelNeighbour(n) if n.header.ifindex == ifindex => {
            entry(&n).map(|(a, _)| NeighEvent::Seen(a, Neigh::Missing))
        }
        RouteNetlinkMessage::NewLink(l) if l.header.index == ifindex => {
            Some(NeighEvent::Link(is_up(&l)))
        }
        RouteNetlinkMessage::DelLink(l) if l.header.index == ifindex => {
            Some(NeighEvent::Link(false))
        }
        _ => None,
    }
}

fn is_up(l: &LinkMessage) -> bool {
    l.header.flags.contains(LinkFlags::Up | LinkFlags::LowerUp)
}

/// The address of a neighbour entry and what it says: IPv4 and IPv6
/// entries only (not a bridge's FDB), and not proxy entries.
fn entry(msg: &NeighbourMessage) -> Option<(IpAddr, Neigh)> {
    if !matches!(
        msg.header.family,
        AddressFamily::Inet | AddressFamily::Inet6
    ) || msg.header.flags.contains(NeighbourFlags::Proxy)
    {
        return None;
    }
    let mut dst = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                dst = Some(IpAddr::V4(*a))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                dst = Some(IpAddr::V6(*a))
            }
            NeighbourAttribute::LinkLayerAddress(l) => mac = <[u8; 6]>::try_from(l.as_slice()).ok(),
            _ => {}
        }
    }
    let n = match (msg.header.state, mac) {
        (
            NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp,
            Some(mac),
        ) => Neigh::Usable(mac),
        (NeighbourState::Incomplete, _) => Neigh::Pending,
        (NeighbourState::Failed, _) => Neigh::Failed,
        _ => Neigh::Missing,
    };
    Some((dst?, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn a_flushed_or_pending_entry_keeps_the_last_known_mac() {
        assert_eq!(follow(Some(A), Neigh::Missing), Some(A));
        assert_eq!(follow(Some(A), Neigh::Pending), Some(A));
        assert_eq!(follow(None, Neigh::Missing), None);
    }

    #[test]
    fn a_usable_entry_wins_and_a_failed_one_clears() {
        assert_eq!(follow(Some(A), Neigh::Usable(B)), Some(B));
        assert_eq!(follow(None, Neigh::Usable(A)), Some(A));
        assert_eq!(follow(Some(A), Neigh::Failed), None);
    }
}
