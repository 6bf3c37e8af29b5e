//! udp (payload, expected reply) and dns (a query answered with NOERROR).

use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

use super::{rand_u16, tcp::contains, unescape, CheckSpec, Outcome};

pub(super) fn qtype_code(t: &str) -> Result<u16, String> {
    Ok(match t.to_ascii_uppercase().as_str() {
        "A" => 1,
        "NS" => 2,
        "SOA" => 6,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        other => return Err(format!("unsupported DNS query type {other}")),
    })
}

/// A DNS query packet (RFC 1035), recursion desired.
pub fn dns_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        if label.len() > 63 {
            return Err(format!("DNS label too long in {name}"));
        }
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    Ok(p)
}

async fn udp_exchange(
    spec: &CheckSpec,
    target: SocketAddr,
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    let bind = SocketAddr::new(
        spec.source.unwrap_or(if target.is_ipv4() {
            IpAddr::from([0u8; 4])
        } else {
            IpAddr::from([0u16; 8])
        }),
        0,
    );
    let sock = UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("bind: {e}"))?;
    sock.connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    sock.send(payload).await.map_err(|e| format!("send: {e}"))?;
    let mut buf = vec![0u8; 4096];
    match sock.recv(&mut buf).await {
        Ok(n) => {
            buf.truncate(n);
            Ok(buf)
        }
        // ICMP port unreachable comes back as ECONNREFUSED on a connected socket.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err("port unreachable".into())
        }
        Err(e) => Err(format!("receive: {e}")),
    }
}

/// One udp probe.
pub(super) async fn probe(spec: &CheckSpec, target: SocketAddr) -> Outcome {
    let payload = unescape(spec.send.as_deref().unwrap_or("")).unwrap_or_default();
    match udp_exchange(spec, target, &payload).await {
        Ok(reply) => match &spec.expect {
            Some(e) if !contains(&reply, &unescape(e).unwrap_or_default()) => {
                Outcome::fail(format!("UDP reply lacks {e:?}"))
            }
            _ => Outcome::ok(),
        },
        Err(e) => Outcome::fail(e),
    }
}

/// One dns probe.
pub(super) async fn probe_dns(spec: &CheckSpec, target: SocketAddr) -> Outcome {
    let id = rand_u16();
    let q = dns_query(id, &spec.name, qtype_code(&spec.qtype).unwrap_or(6)).unwrap_or_default();
    match udp_exchange(spec, target, &q).await {
        Ok(r) if r.len() < 12 => Outcome::fail("DNS: short reply"),
        Ok(r) if r[0..2] != id.to_be_bytes() => Outcome::fail("DNS: reply id mismatch"),
        Ok(r) if r[2] & 0x80 == 0 => Outcome::fail("DNS: not a response"),
        Ok(r) if r[3] & 0x0f != 0 => Outcome::fail(format!("DNS rcode {}", r[3] & 0x0f)),
        Ok(r) if u16::from_be_bytes([r[6], r[7]]) == 0 => Outcome::fail("DNS: no answer"),
        Ok(_) => Outcome::ok(),
        Err(e) => Outcome::fail(format!("DNS: {e}")),
    }
}
