//! lbd's side of the join API: the listener, TLS, authentication; the
//! requests that pass go to the daemon loop.

use std::{net::IpAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use tokio::{
    io::{
        AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _,
        BufReader,
    },
    sync::{mpsc, oneshot},
};
use tracing::{info, warn};

use super::{same_token, JoinCfg, JoinOp, JoinRequest, JoinResponse, JOIN_VERSION};

/// An authenticated request, for the daemon loop.
pub struct JoinJob {
    /// The connection's source: the real server that asks.
    pub peer: IpAddr,
    pub op: JoinOp,
    pub reply: oneshot::Sender<JoinResponse>,
}

/// The API ready to serve: bound, certificates and token read.
pub struct Prepared {
    listener: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    token: Option<String>,
}

/// A request line is small: anything longer is refused unread.
const MAX_LINE: usize = 16 * 1024;
/// The TLS handshake and the request line within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// One exchange, the daemon's answer included, within this.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);
/// Connections served at once (more wait for a slot), and from one source.
const CONCURRENT: usize = 32;
const PER_SOURCE: usize = 4;

/// Binds and reads everything the API needs, before lbd touches anything
/// (a bad certificate or a taken port fails the start).
pub fn prepare(cfg: &JoinCfg) -> Result<Prepared> {
    cfg.check().map_err(|(f, m)| anyhow::anyhow!("{f}: {m}"))?;
    let token = cfg.token()?;
    let tls = match &cfg.tls {
        None => None,
        Some(t) => Some(crate::listen::tls_acceptor(t, "join.tls")?),
    };
    let listener = std::net::TcpListener::bind(cfg.listen)
        .with_context(|| format!("join: listening on {}", cfg.listen))?;
    listener.set_nonblocking(true)?;
    Ok(Prepared {
        listener,
        tls,
        token,
    })
}

/// Serves until lbd exits; authenticated requests go to `jobs`.
pub fn serve(p: Prepared, jobs: mpsc::Sender<JoinJob>) -> Result<()> {
    let listener = tokio::net::TcpListener::from_std(p.listener)?;
    let addr = listener.local_addr()?;
    info!(%addr, tls = p.tls.is_some(), "serving the join API");
    if addr.ip().is_unspecified() {
        warn!(
            %addr,
            "join API: listening on every address, the VIPs' included (the XDP program passes ports no service uses): prefer a management address"
        );
    }
    let token = Arc::new(p.token);
    let bounds = crate::listen::Bounds {
        concurrent: CONCURRENT,
        per_source: PER_SOURCE,
        handshake: REQUEST_TIMEOUT,
    };
    let log = Arc::new(crate::listen::RefusalLog::new("join API"));
    crate::listen::serve(listener, p.tls, bounds, log, move |stream, peer| {
        let (token, jobs) = (token.clone(), jobs.clone());
        async move {
            // The handshake had REQUEST_TIMEOUT of the exchange's time:
            // the whole within EXCHANGE_TIMEOUT, which the client waits.
            let left = EXCHANGE_TIMEOUT - REQUEST_TIMEOUT;
            tokio::time::timeout(left, exchange(stream, peer.ip(), &token, jobs))
                .await
                .unwrap_or_else(|_| Err("timed out".into()))
        }
    });
    Ok(())
}

/// One request and its answer. Err: why it was refused (logged by the
/// caller; the client got an error line when there was a channel to say
/// it on).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    peer: IpAddr,
    token: &Option<String>,
    jobs: mpsc::Sender<JoinJob>,
) -> Result<(), String> {
    let mut r = BufReader::new(s);
    let mut line = Vec::new();
    let mut limited = (&mut r).take(MAX_LINE as u64 + 1);
    let n = tokio::time::timeout(REQUEST_TIMEOUT, limited.read_until(b'\n', &mut line))
        .await
        .map_err(|_| "no request line in time".to_string())?
        .map_err(|e| format!("reading the request: {e}"))?;
    let mut s = r.into_inner();
    let refuse = |why: String| JoinResponse::Error { message: why };
    let answer = if n > MAX_LINE {
        Err(format!("request longer than {MAX_LINE} bytes"))
    } else {
        match serde_json::from_slice::<JoinRequest>(&line) {
            Err(e) => Err(format!("malformed request: {e}")),
            Ok(req) if req.version != JOIN_VERSION => Err(format!(
                "protocol version {} (this lbd speaks {JOIN_VERSION})",
                req.version
            )),
            Ok(req) => match token {
                Some(t) if !req.token.as_deref().is_some_and(|x| same_token(x, t)) => {
                    Err("wrong or missing token".to_string())
                }
                _ => Ok(req.op),
            },
        }
    };
    let (resp, refused) = match answer {
        Err(why) => (refuse(why.clone()), Some(why)),
        Ok(op) => {
            let (tx, rx) = oneshot::channel();
            let sent = jobs
                .send(JoinJob {
                    peer,
                    op,
                    reply: tx,
                })
                .await;
            match (sent, rx.await) {
                (Ok(()), Ok(resp)) => (resp, None),
                _ => {
                    let why = "lbd is stopping".to_string();
                    (refuse(why.clone()), Some(why))
                }
            }
        }
    };
    let mut out = serde_json::to_vec(&resp).map_err(|e| e.to_string())?;
    out.push(b'\n');
    let _ = s.write_all(&out).await;
    let _ = s.shutdown().await;
    match refused {
        Some(why) => Err(why),
        None => Ok(()),
    }
}
