//! tcp: connect, optionally send and expect (Piranha nanny's send/expect).

use std::net::SocketAddr;

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    time::timeout,
};

use super::{secs, unescape, CheckSpec, Outcome};
use std::time::Duration;

pub(super) async fn connect(spec: &CheckSpec, target: SocketAddr) -> Result<TcpStream, String> {
    let sock = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| format!("socket: {e}"))?;
    if let Some(src) = spec.source {
        sock.bind(SocketAddr::new(src, 0))
            .map_err(|e| format!("bind {src}: {e}"))?;
    }
    match timeout(Duration::from_secs_f64(spec.timeout), sock.connect(target)).await {
        Err(_) => Err(format!("connect timeout {}", secs(spec.timeout))),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err("connection refused".into())
        }
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Ok(Ok(s)) => Ok(s),
    }
}

pub(super) async fn read_some<S: AsyncRead + Unpin>(
    s: &mut S,
    limit: u64,
) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    s.take(limit)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| format!("reading the reply: {e}"))?;
    Ok(buf)
}

pub(super) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// One tcp probe.
pub(super) async fn probe(spec: &CheckSpec, target: SocketAddr) -> Outcome {
    let mut s = match connect(spec, target).await {
        Ok(s) => s,
        Err(e) => return Outcome::fail(e),
    };
    if let Some(send) = &spec.send {
        if let Err(e) = s.write_all(&unescape(send).unwrap_or_default()).await {
            return Outcome::fail(format!("send: {e}"));
        }
    }
    if let Some(expect) = &spec.expect {
        let want = unescape(expect).unwrap_or_default();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !contains(&got, &want) {
            match s.read(&mut buf).await {
                Ok(0) => return Outcome::fail(format!("reply lacks {expect:?}")),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Outcome::fail(format!("receive: {e}")),
            }
            if got.len() > 1 << 16 {
                return Outcome::fail(format!("reply lacks {expect:?}"));
            }
        }
    }
    Outcome::ok()
}
