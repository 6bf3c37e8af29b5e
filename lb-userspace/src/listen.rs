//! lbd's TCP listeners (the HTTP one of `/metrics` and the console, the
//! join API): TLS from the configuration, a bound on connections at once
//! and from one address, a handshake deadline, and refusals logged at a
//! bounded rate.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::Semaphore,
};

/// A listener's TLS (`metrics.tls`, `join.tls`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCfg {
    /// The director's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA certificates (PEM) that sign the real servers' client
    /// certificates: with it, a client without such a certificate is
    /// refused during the handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
}

/// A TLS acceptor for `t` (`what` names the section in errors: a bad
/// certificate or key fails lbd's start).
pub fn tls_acceptor(t: &TlsCfg, what: &str) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use anyhow::Context as _;
    use rustls::pki_types::{pem::PemObject as _, PrivateKeyDer};
    let chain = read_certs(&t.cert, &format!("{what}.cert"))?;
    let key = PrivateKeyDer::from_pem_file(&t.key)
        .with_context(|| format!("{what}.key: {}", t.key.display()))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &t.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca, &format!("{what}.client_ca"))? {
                roots
                    .add(c)
                    .with_context(|| format!("{what}.client_ca: {}", ca.display()))?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                std::sync::Arc::new(roots),
                provider,
            )
            .build()
            .with_context(|| format!("{what}.client_ca"))?;
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .with_context(|| format!("{what}: the key does not match the certificate"))?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

/// The certificates of a PEM file (at least one; `what` names it in
/// errors).
pub fn read_certs(
    p: &Path,
    what: &str,
) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use anyhow::Context as _;
    use rustls::pki_types::{pem::PemObject as _, CertificateDer};
    let v: Vec<_> = CertificateDer::pem_file_iter(p)
        .with_context(|| format!("{what}: {}", p.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{what}: {}", p.display()))?;
    if v.is_empty() {
        anyhow::bail!("{what}: {}: no certificate in it", p.display());
    }
    Ok(v)
}
/// Refusal lines, rate-limited: a flood of bad requests cannot flood the
/// log (then one line a minute says how many were not logged).
pub struct RefusalLog {
    what: &'static str,
    /// (window start, logged in it, not logged in it)
    state: Mutex<(Instant, u32, u64)>,
}

/// Refusal lines logged per minute at most.
const LOGGED_PER_MINUTE: u32 = 20;

impl RefusalLog {
    /// `what` starts each line (`join API`, `console`).
    pub fn new(what: &'static str) -> RefusalLog {
        RefusalLog {
            what,
            state: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    /// Logs `why` (a refusal of `peer`'s) unless this minute's lines are
    /// used up.
    pub fn refused(&self, peer: IpAddr, why: &str) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now.duration_since(s.0) >= Duration::from_secs(60) {
            if s.2 > 0 {
                tracing::warn!(
                    not_logged = s.2,
                    "{}: more requests were refused than logged",
                    self.what
                );
            }
            *s = (now, 0, 0);
        }
        if s.1 < LOGGED_PER_MINUTE {
            s.1 += 1;
            tracing::warn!(%peer, "{}: {why}", self.what);
        } else {
            s.2 += 1;
        }
    }
}

/// How much a listener takes.
pub struct Bounds {
    /// Connections served at once (more wait to be accepted).
    pub concurrent: usize,
    /// Connections from one address at once (more are closed at once).
    pub per_source: usize,
    /// For the TLS handshake.
    pub handshake: Duration,
}

/// A connection's stream: TCP, or TLS over it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// One connection counted against its source address while it lives.
struct Source {
    map: Arc<Mutex<std::collections::HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Source {
    fn take(
        map: &Arc<Mutex<std::collections::HashMap<IpAddr, usize>>>,
        ip: IpAddr,
        max: usize,
    ) -> Option<Source> {
        let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Source {
            map: map.clone(),
            ip,
        })
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Accepts on `listener` until lbd exits: each connection in its own
/// task, within `bounds`, its TLS handshake done, handed to `handle` with
/// its peer (an IPv4-mapped address as IPv4). A refusal (too many
/// connections, a failed handshake, `handle`'s `Err`) goes to `log`.
pub fn serve<H, F>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    bounds: Bounds,
    log: Arc<RefusalLog>,
    handle: H,
) where
    H: Fn(Box<dyn Stream>, SocketAddr) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let handle = Arc::new(handle);
    let slots = Arc::new(Semaphore::new(bounds.concurrent));
    let sources: Arc<Mutex<std::collections::HashMap<IpAddr, usize>>> = Default::default();
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                // Out of descriptors and the like: wait, do not spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
            let Some(source) = Source::take(&sources, peer.ip(), bounds.per_source) else {
                log.refused(peer.ip(), "refused: too many connections from this address");
                continue; // dropped: closed, its slot free again
            };
            let (tls, handle, log) = (tls.clone(), handle.clone(), log.clone());
            let handshake = bounds.handshake;
            tokio::spawn(async move {
                let _held = (slot, source);
                let r = match tls {
                    None => handle(Box::new(stream), peer).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => handle(Box::new(s), peer).await,
                            Ok(Err(e)) => Err(format!("TLS handshake: {e}")),
                            Err(_) => Err("no TLS handshake in time".into()),
                        }
                    }
                };
                if let Err(why) = r {
                    log.refused(peer.ip(), &format!("refused: {why}"));
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// Three connections from one address with room for two: the third is
    /// closed unserved, and a slot freed by a closed one serves again.
    #[test]
    fn one_address_gets_per_source_connections() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = l.local_addr().unwrap();
                let bounds = Bounds {
                    concurrent: 8,
                    per_source: 2,
                    handshake: Duration::from_secs(1),
                };
                serve(
                    l,
                    None,
                    bounds,
                    Arc::new(RefusalLog::new("test")),
                    |mut s, _| async move {
                        // Echo one byte per connection, then hold it open.
                        let mut b = [0u8; 1];
                        if s.read_exact(&mut b).await.is_ok() {
                            let _ = s.write_all(&b).await;
                            let _ = s.read(&mut b).await;
                        }
                        Ok(())
                    },
                );
                let echo = |mut c: tokio::net::TcpStream| async move {
                    c.write_all(b"x").await.ok()?;
                    let mut b = [0u8; 1];
                    let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut b))
                        .await
                        .ok()?
                        .ok()?;
                    (n == 1).then_some(c)
                };
                let c = || tokio::net::TcpStream::connect(addr);
                let a = echo(c().await.unwrap()).await.expect("first served");
                let _b = echo(c().await.unwrap()).await.expect("second served");
                assert!(echo(c().await.unwrap()).await.is_none(), "third closed");
                drop(a);
                // The freed slot serves again (once its task has seen the close).
                let mut served = false;
                for _ in 0..50 {
                    if echo(c().await.unwrap()).await.is_some() {
                        served = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                assert!(served);
            });
    }
}
