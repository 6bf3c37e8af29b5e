//! icmp: an echo request over a raw socket (the daemon runs as root).

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use super::{rand_u16, secs, CheckSpec, Outcome};

fn icmp_checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// ICMP echo over a raw socket (the daemon runs as root).
fn icmp_echo(target: IpAddr, limit: Duration, source: Option<IpAddr>) -> Result<(), String> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let (domain, proto, ty) = match target {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128u8),
    };
    let sock =
        Socket::new(domain, Type::RAW, Some(proto)).map_err(|e| format!("ICMP socket: {e}"))?;
    if let Some(src) = source {
        sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))
            .map_err(|e| format!("bind {src}: {e}"))?;
    }
    let ident = (std::process::id() & 0xffff) as u16;
    let seq: u16 = rand_u16();
    let mut pkt = vec![ty, 0, 0, 0];
    pkt.extend_from_slice(&ident.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(b"lbd-health-check");
    if target.is_ipv4() {
        let c = icmp_checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
    }
    sock.send_to(&pkt, &SockAddr::from(SocketAddr::new(target, 0)))
        .map_err(|e| format!("ICMP send: {e}"))?;
    let deadline = std::time::Instant::now() + limit;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!("no echo reply in {}", secs(limit.as_secs_f64())));
        }
        sock.set_read_timeout(Some(left)).ok();
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("no echo reply in {}", secs(limit.as_secs_f64())))
            }
            Err(e) => return Err(format!("ICMP receive: {e}")),
        };
        // SAFETY: recv_from initialised the first n bytes.
        let data: Vec<u8> = buf[..n]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        if from.as_socket().map(|s| s.ip()) != Some(target) {
            continue;
        }
        // IPv4 raw sockets deliver the IP header too.
        let icmp = if target.is_ipv4() {
            let ihl = (data.first().copied().unwrap_or(0x45) & 0x0f) as usize * 4;
            data.get(ihl..).unwrap_or(&[])
        } else {
            &data[..]
        };
        let reply = if target.is_ipv4() { 0 } else { 129 };
        if icmp.len() >= 8
            && icmp[0] == reply
            && icmp[4..6] == ident.to_be_bytes()
            && icmp[6..8] == seq.to_be_bytes()
        {
            return Ok(());
        }
    }
}

/// One icmp probe.
pub(super) async fn probe(spec: &CheckSpec, target: SocketAddr) -> Outcome {
    let limit = Duration::from_secs_f64(spec.timeout);
    let (ip, src) = (target.ip(), spec.source);
    match tokio::task::spawn_blocking(move || icmp_echo(ip, limit, src)).await {
        Ok(Ok(())) => Outcome::ok(),
        Ok(Err(e)) => Outcome::fail(e),
        Err(e) => Outcome::fail(format!("ICMP task: {e}")),
    }
}
