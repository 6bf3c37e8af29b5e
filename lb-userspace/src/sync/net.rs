//! The sync daemon's UDP sockets: the master's (multicast out of one
//! interface, TTL as configured, no loop back) and the backup's (bound to
//! the port on the interface, joined to the group).

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

fn ip_mreqn(group: Ipv4Addr, ifindex: u32) -> libc::ip_mreqn {
    libc::ip_mreqn {
        imr_multiaddr: libc::in_addr {
            s_addr: u32::from(group).to_be(),
        },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: ifindex as i32,
    }
}

fn setopt<T>(s: &Socket, level: i32, name: i32, v: &T) -> io::Result<()> {
    // SAFETY: a valid socket and a value of the size given.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            v as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The master's socket: sends out of `iface` (index `ifindex`).
pub fn sender(iface: &str, ifindex: u32, group: IpAddr, ttl: u8) -> io::Result<UdpSocket> {
    let v4 = group.is_ipv4();
    let s = Socket::new(
        if v4 { Domain::IPV4 } else { Domain::IPV6 },
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    s.bind_device(Some(iface.as_bytes()))?;
    if v4 {
        if let IpAddr::V4(g) = group {
            setopt(
                &s,
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_IF,
                &ip_mreqn(g, ifindex),
            )?;
        }
        s.set_multicast_ttl_v4(ttl as u32)?;
        s.set_multicast_loop_v4(false)?;
        s.bind(&SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).into())?;
    } else {
        s.set_multicast_if_v6(ifindex)?;
        s.set_multicast_hops_v6(ttl as u32)?;
        s.set_multicast_loop_v6(false)?;
        s.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).into())?;
    }
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

/// The backup's socket: the port on `iface`, joined to `group` unless
/// `unicast`.
pub fn receiver(
    iface: &str,
    ifindex: u32,
    group: IpAddr,
    port: u16,
    unicast: bool,
) -> io::Result<UdpSocket> {
    let v4 = group.is_ipv4();
    let s = Socket::new(
        if v4 { Domain::IPV4 } else { Domain::IPV6 },
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    s.set_reuse_address(true)?;
    s.bind_device(Some(iface.as_bytes()))?;
    // Multicast: bound to the group, so that nothing sent to the
    // director's own addresses (from anywhere) reaches it.
    let at = if !unicast {
        group
    } else if v4 {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    s.bind(&SocketAddr::new(at, port).into())?;
    if !unicast {
        match group {
            IpAddr::V4(g) => setopt(
                &s,
                libc::IPPROTO_IP,
                libc::IP_ADD_MEMBERSHIP,
                &ip_mreqn(g, ifindex),
            )?,
            IpAddr::V6(g) => s.join_multicast_v6(&g, ifindex)?,
        }
    }
    // A refresh arrives in bursts: a large buffer (SO_RCVBUFFORCE, lbd has
    // CAP_NET_ADMIN), else whatever the kernel grants.
    let size: libc::c_int = 4 << 20;
    if setopt(&s, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &size).is_err() {
        s.set_recv_buffer_size(size as usize).ok();
    }
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}
