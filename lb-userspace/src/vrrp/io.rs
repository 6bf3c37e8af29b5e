//! VRRP on the wire: the raw IP socket that sends and receives
//! advertisements (protocol 112, IPv4 with the header built here as
//! keepalived does, IPv6 with the kernel's checksum), and the gratuitous
//! ARPs / unsolicited neighbour advertisements a new master sends on a
//! packet socket.

use std::{
    io,
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use tokio::io::unix::AsyncFd;

use super::packet::{GROUP_V4, GROUP_V6, PROTO};

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: a valid fd and a value of the size given.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            v as *const T as *const libc::c_void,
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

fn socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2); the fd is owned from here on.
    let fd = check(unsafe {
        libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, proto)
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind_device(fd: &OwnedFd, iface: &str) -> io::Result<()> {
    // SAFETY: a valid fd and the name's bytes with their length.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            iface.as_ptr() as *const libc::c_void,
            iface.len() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// One received advertisement with what the IP layer said of it.
#[derive(Debug, Clone)]
pub struct Received {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub vrrp: Vec<u8>,
}

/// The raw socket of one family on one interface.
pub struct VrrpSocket {
    fd: AsyncFd<OwnedFd>,
    v4: bool,
    ifindex: u32,
    ip_id: u16,
}

impl VrrpSocket {
    /// Opens it on `iface` (index `ifindex`), joined to the group unless
    /// only unicast peers are used.
    pub fn open(iface: &str, ifindex: u32, v4: bool, multicast: bool) -> io::Result<VrrpSocket> {
        let fd = if v4 {
            let fd = socket(libc::AF_INET, libc::SOCK_RAW, PROTO as libc::c_int)?;
            setopt(&fd, libc::IPPROTO_IP, libc::IP_HDRINCL, &1i32)?;
            setopt(&fd, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, &0i32)?;
            let mreq = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr {
                    s_addr: u32::from(GROUP_V4).to_be(),
                },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: ifindex as i32,
            };
            setopt(&fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreq)?;
            if multicast {
                setopt(&fd, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreq)?;
            }
            fd
        } else {
            let fd = socket(libc::AF_INET6, libc::SOCK_RAW, PROTO as libc::c_int)?;
            // The kernel computes and verifies the checksum at offset 6.
            setopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_CHECKSUM, &6i32)?;
            setopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &255i32)?;
            setopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &255i32)?;
            setopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, &0i32)?;
            setopt(
                &fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_IF,
                &(ifindex as i32),
            )?;
            setopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, &1i32)?;
            setopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, &1i32)?;
            setopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &0xc0i32)?;
            if multicast {
                let mreq = libc::ipv6_mreq {
                    ipv6mr_multiaddr: libc::in6_addr {
                        s6_addr: GROUP_V6.octets(),
                    },
                    ipv6mr_interface: ifindex,
                };
                setopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &mreq)?;
            }
            fd
        };
        bind_device(&fd, iface)?;
        // SAFETY: the fd is owned by the AsyncFd from here on, open until it
        // is dropped.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(VrrpSocket {
            fd,
            v4,
            ifindex,
            ip_id: 1,
        })
    }

    /// Sends one advertisement `vrrp` from `src` to `dst`.
    pub fn send(&mut self, src: IpAddr, dst: IpAddr, vrrp: &[u8]) -> io::Result<()> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut p = Vec::with_capacity(20 + vrrp.len());
                let total = (20 + vrrp.len()) as u16;
                self.ip_id = self.ip_id.wrapping_add(1).max(1);
                p.extend_from_slice(&[0x45, 0xc0]);
                p.extend_from_slice(&total.to_be_bytes());
                p.extend_from_slice(&self.ip_id.to_be_bytes());
                p.extend_from_slice(&[0, 0, 255, PROTO, 0, 0]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                p.extend_from_slice(vrrp);
                let sa = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: 0,
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(d).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: a valid fd, buffer and address.
                check(unsafe {
                    libc::sendto(
                        self.fd.get_ref().as_raw_fd(),
                        p.as_ptr() as *const libc::c_void,
                        p.len(),
                        0,
                        &sa as *const _ as *const libc::sockaddr,
                        size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    ) as libc::c_int
                })
                .map(|_| ())
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => self.send6(s, d, vrrp),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "mixed families",
            )),
        }
    }

    /// IPv6: the source and interface go in an IPV6_PKTINFO message.
    fn send6(&self, s: Ipv6Addr, d: Ipv6Addr, vrrp: &[u8]) -> io::Result<()> {
        let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sa.sin6_addr.s6_addr = d.octets();
        sa.sin6_scope_id = self.ifindex;
        let info = libc::in6_pktinfo {
            ipi6_addr: libc::in6_addr {
                s6_addr: s.octets(),
            },
            ipi6_ifindex: self.ifindex,
        };
        // SAFETY: the control buffer is sized by CMSG_SPACE for one
        // in6_pktinfo, and every pointer outlives the call.
        unsafe {
            let space = libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as usize;
            // Aligned for the cmsghdr.
            let mut control = vec![0u64; space.div_ceil(8)];
            let mut iov = libc::iovec {
                iov_base: vrrp.as_ptr() as *mut libc::c_void,
                iov_len: vrrp.len(),
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = &mut sa as *mut _ as *mut libc::c_void;
            msg.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = space;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::IPPROTO_IPV6;
            (*c).cmsg_type = libc::IPV6_PKTINFO;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut libc::in6_pktinfo, info);
            check(libc::sendmsg(self.fd.get_ref().as_raw_fd(), &msg, 0) as libc::c_int).map(|_| ())
        }
    }

    /// The next advertisement (of any VRID) that arrives.
    pub async fn recv(&self) -> io::Result<Received> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| self.recv_now(fd.get_ref())) {
                Ok(Ok(Some(r))) => return Ok(r),
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    fn recv_now(&self, fd: &OwnedFd) -> io::Result<Option<Received>> {
        let mut buf = vec![0u8; 2048];
        if self.v4 {
            // SAFETY: a valid fd and buffer.
            let n = unsafe {
                libc::recv(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            buf.truncate(n as usize);
            return Ok(parse_v4(&buf));
        }
        let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        // Aligned for the cmsghdr walk.
        let mut control = [0u64; 32];
        // SAFETY: buffers with their sizes; cmsgs are walked with the
        // kernel's macros within msg_controllen.
        unsafe {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = &mut sa as *mut _ as *mut libc::c_void;
            msg.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = std::mem::size_of_val(&control);
            let n = libc::recvmsg(fd.as_raw_fd(), &mut msg, 0);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            buf.truncate(n as usize);
            let mut ttl = 0u8;
            let mut dst = None;
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::IPPROTO_IPV6 {
                    if (*c).cmsg_type == libc::IPV6_HOPLIMIT {
                        ttl = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const i32) as u8;
                    } else if (*c).cmsg_type == libc::IPV6_PKTINFO {
                        let info = std::ptr::read_unaligned(
                            libc::CMSG_DATA(c) as *const libc::in6_pktinfo
                        );
                        dst = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
            let Some(dst) = dst else { return Ok(None) };
            Ok(Some(Received {
                src: IpAddr::V6(Ipv6Addr::from(sa.sin6_addr.s6_addr)),
                dst,
                ttl,
                vrrp: buf,
            }))
        }
    }
}

/// An IPv4 packet as a raw socket gives it: header, then VRRP.
fn parse_v4(p: &[u8]) -> Option<Received> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let ihl = (p[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([p[2], p[3]]) as usize;
    if ihl < 20 || p.len() < ihl || total < ihl || p[9] != PROTO {
        return None;
    }
    let end = total.min(p.len());
    Some(Received {
        src: IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15])),
        dst: IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19])),
        ttl: p[8],
        vrrp: p[ihl..end].to_vec(),
    })
}

/// A gratuitous ARP (a request for the VIP from the VIP, as keepalived
/// sends it) or an unsolicited neighbour advertisement for `vip`.
pub fn announcement(vip: IpAddr, mac: [u8; 6]) -> Vec<u8> {
    match vip {
        IpAddr::V4(v) => {
            let mut f = vec![0xff; 6];
            f.extend_from_slice(&mac);
            f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
            f.extend_from_slice(&mac);
            f.extend_from_slice(&v.octets());
            f.extend_from_slice(&[0xff; 6]);
            f.extend_from_slice(&v.octets());
            f
        }
        IpAddr::V6(v) => {
            let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
            // ICMPv6 neighbour advertisement, Override, target = VIP, with
            // the target link-layer address option.
            let mut icmp = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
            icmp.extend_from_slice(&v.octets());
            icmp.extend_from_slice(&[2, 1]);
            icmp.extend_from_slice(&mac);
            let mut ph = Vec::new();
            ph.extend_from_slice(&v.octets());
            ph.extend_from_slice(&all_nodes.octets());
            ph.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
            ph.extend_from_slice(&[0, 0, 0, 58]);
            ph.extend_from_slice(&icmp);
            let mut sum: u32 = ph
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
                .sum();
            while sum >> 16 != 0 {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            icmp[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
            let mut f = vec![0x33, 0x33, 0, 0, 0, 1];
            f.extend_from_slice(&mac);
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
            f.extend_from_slice(&[58, 255]);
            f.extend_from_slice(&v.octets());
            f.extend_from_slice(&all_nodes.octets());
            f.extend_from_slice(&icmp);
            f
        }
    }
}

/// Sends one Ethernet frame out of interface `ifindex`.
pub fn send_frame(ifindex: u32, frame: &[u8]) -> io::Result<()> {
    let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: a valid fd, frame and address.
    check(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr() as *const libc::c_void,
            frame.len(),
            0,
            &sll as *const _ as *const libc::sockaddr,
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        ) as libc::c_int
    })
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_received_ipv4_packet_is_split_at_its_header() {
        let mut p = vec![
            0x45, 0xc0, 0, 32, 0, 1, 0, 0, 255, 112, 0, 0, 10, 0, 0, 1, 224, 0, 0, 18,
        ];
        p.extend_from_slice(&[
            0x31, 0x33, 0x64, 0x01, 0x00, 0x64, 0x75, 0x73, 10, 0, 0, 100,
        ]);
        let r = parse_v4(&p).unwrap();
        assert_eq!(
            (r.src, r.dst, r.ttl, r.vrrp.len()),
            ("10.0.0.1".parse().unwrap(), IpAddr::V4(GROUP_V4), 255, 12)
        );
        assert!(parse_v4(&p[..19]).is_none());
        let mut other = p.clone();
        other[9] = 6;
        assert!(parse_v4(&other).is_none());
    }

    #[test]
    fn announcements_are_what_keepalived_sends() {
        let mac = [2, 0, 0, 0, 0, 2];
        let arp = announcement("192.0.2.100".parse().unwrap(), mac);
        assert_eq!(arp.len(), 42);
        assert_eq!(&arp[12..14], &[0x08, 0x06]);
        assert_eq!(&arp[20..22], &[0, 1], "a request");
        assert_eq!(&arp[28..32], &arp[38..42], "for the VIP, from the VIP");
        let na = announcement("2001:db8::100".parse().unwrap(), mac);
        assert_eq!(na.len(), 14 + 40 + 32);
        assert_eq!((na[20], na[21], na[54]), (58, 255, 136));
        // The ICMPv6 checksum verifies (sum over pseudo-header and message).
        let mut ph = Vec::new();
        ph.extend_from_slice(&na[22..54]);
        ph.extend_from_slice(&32u32.to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, 58]);
        ph.extend_from_slice(&na[54..]);
        let mut sum: u32 = ph
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
            .sum();
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }
}
