//! Real-server MAC resolution through the kernel's neighbour table
//! (rtnetlink). A missing entry is provoked by sending one UDP datagram to the
//! discard port of the real server through the director's NIC, which makes the
//! kernel ARP (or ND) for it; the answer shows up in the table.

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
};

use futures::TryStreamExt;
use rtnetlink::{
    packet_route::{
        link::LinkAttribute,
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState},
    },
    Handle,
};
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

    /// The NIC's own MAC (source MAC of forwarded frames).
    pub async fn own_mac(&self) -> Result<[u8; 6], NeighError> {
        let mut links = self.handle.link().get().match_index(self.ifindex).execute();
        while let Some(msg) = links.try_next().await? {
            for attr in msg.attributes {
                if let LinkAttribute::Address(a) = attr {
                    if let Ok(mac) = <[u8; 6]>::try_from(a.as_slice()) {
                        return Ok(mac);
                    }
                }
            }
        }
        Err(NeighError::NoMac(self.iface.clone()))
    }

    /// Looks up `wanted` in the neighbour table of the NIC. Usable entries
    /// (reachable, stale, delay, probe, permanent) give a MAC; missing,
    /// incomplete and failed ones give `None` and provoke a resolution.
    pub async fn resolve(
        &self,
        wanted: &BTreeSet<IpAddr>,
    ) -> Result<Vec<(IpAddr, Option<[u8; 6]>)>, NeighError> {
        let mut table: HashMap<IpAddr, (NeighbourState, Option<[u8; 6]>)> = HashMap::new();
        let mut dump = self.handle.neighbours().get().execute();
        while let Some(msg) = dump.try_next().await? {
            if msg.header.ifindex != self.ifindex {
                continue;
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
                    NeighbourAttribute::LinkLayerAddress(l) => {
                        mac = <[u8; 6]>::try_from(l.as_slice()).ok()
                    }
                    _ => {}
                }
            }
            if let Some(d) = dst {
                table.insert(d, (msg.header.state, mac));
            }
        }
        let mut out = Vec::new();
        for a in wanted {
            let usable = match table.get(a) {
                Some((
                    NeighbourState::Reachable
                    | NeighbourState::Stale
                    | NeighbourState::Delay
                    | NeighbourState::Probe
                    | NeighbourState::Permanent
                    | NeighbourState::Noarp,
                    Some(mac),
                )) => Some(*mac),
                _ => None,
            };
            if usable.is_none() {
                self.provoke(*a);
            }
            out.push((*a, usable));
        }
        Ok(out)
    }

    /// Sends one datagram to the real server's discard port through the NIC,
    /// so that the kernel resolves its link-layer address.
    fn provoke(&self, a: IpAddr) {
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
}
