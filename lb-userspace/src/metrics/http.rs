//! lbd's HTTP listener (`--metrics` / `metrics.listen`, HTTPS with
//! `metrics.tls`): `/metrics` for Prometheus, and the web console when
//! `console:` is configured.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use axum::{
    extract::{ConnectInfo, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
};

use super::{render, Snapshot};
use crate::health::CheckMetrics;

/// A scrape's request to the daemon loop: the snapshot comes back on it.
pub type SnapshotRequest = oneshot::Sender<Snapshot>;

/// The text exposition format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long a scrape waits for the daemon loop (busy with a commit or a
/// sweep of a large table) before it answers 503.
const LOOP_WAIT: Duration = Duration::from_secs(5);

/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 64;
/// Connections from one address at once; more are closed at once (a
/// browser uses a few, a scraper one: one host cannot take every slot).
const PER_SOURCE: usize = 8;
/// A connection lives at most this long (a client that sends nothing holds
/// no slot for longer).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Scrapes within this of the last one get its text (a burst of scrapes
/// costs the daemon loop one snapshot).
const REUSE: Duration = Duration::from_secs(1);

/// The listener, bound, and its TLS acceptor (`metrics.tls`).
pub struct Prepared {
    pub listener: std::net::TcpListener,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Binds the listener and reads its certificate before anything is
/// touched (a taken port or a bad key fails lbd's start, not a scrape
/// later).
pub fn prepare(addr: SocketAddr, tls: Option<&crate::listen::TlsCfg>) -> Result<Prepared> {
    let tls = tls
        .map(|t| crate::listen::tls_acceptor(t, "metrics.tls"))
        .transpose()?;
    let l = std::net::TcpListener::bind(addr)
        .with_context(|| format!("metrics: listening on {addr}"))?;
    l.set_nonblocking(true)?;
    if addr.ip().is_unspecified() {
        tracing::warn!(
            %addr,
            "metrics: listening on every address, the VIPs' included (the XDP program passes ports no service uses): /metrics has no authentication, prefer a management address"
        );
    }
    Ok(Prepared { listener: l, tls })
}

#[derive(Clone)]
struct Ctx {
    snapshots: mpsc::Sender<SnapshotRequest>,
    checks: CheckMetrics,
    /// The last scrape's text.
    last: Arc<Recent<String>>,
}

/// An answer rendered less than REUSE ago: requests within it share it
/// (a burst costs the daemon loop one snapshot).
pub struct Recent<T>(Mutex<Option<(Instant, Arc<T>)>>);

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Recent(Mutex::new(None))
    }
}

impl<T> Recent<T> {
    pub fn get(&self) -> Option<Arc<T>> {
        let g = self.0.lock().ok()?;
        g.as_ref()
            .filter(|(t, _)| t.elapsed() < REUSE)
            .map(|(_, s)| s.clone())
    }

    /// Forgets the answer (what it showed has changed).
    pub fn clear(&self) {
        if let Ok(mut g) = self.0.lock() {
            *g = None;
        }
    }

    pub fn put(&self, s: Arc<T>) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some((Instant::now(), s));
        }
    }
}

/// Serves `listener` until lbd exits: each connection in its own task,
/// at most MAX_CONNECTIONS at once, each for at most CONNECTION_LIFETIME
/// (then it is closed after the response in progress).
pub fn serve(
    prepared: Prepared,
    snapshots: mpsc::Sender<SnapshotRequest>,
    checks: CheckMetrics,
    console: Option<Router>,
) -> Result<()> {
    let listener = TcpListener::from_std(prepared.listener)?;
    let mut app = Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .with_state(Ctx {
            snapshots,
            checks,
            last: Default::default(),
        });
    if let Some(console) = console {
        app = app.merge(console);
    }
    let bounds = crate::listen::Bounds {
        concurrent: MAX_CONNECTIONS,
        per_source: PER_SOURCE,
        handshake: HANDSHAKE,
    };
    let log = Arc::new(crate::listen::RefusalLog::new("HTTP listener"));
    crate::listen::serve(listener, prepared.tls, bounds, log, move |stream, peer| {
        connection(stream, peer, app.clone())
    });
    Ok(())
}

/// How long a TLS handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// How long a connection past its lifetime may take to finish the
/// response in progress.
const LAST_RESPONSE: Duration = Duration::from_secs(10);

/// Serves HTTP/1.1 on one connection; the peer's address reaches handlers
/// as `ConnectInfo`.
async fn connection(
    io: Box<dyn crate::listen::Stream>,
    peer: SocketAddr,
    app: Router,
) -> Result<(), String> {
    let deadline = tokio::time::sleep(CONNECTION_LIFETIME);
    use tower::ServiceExt as _;
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc);
    tokio::pin!(conn, deadline);
    tokio::select! {
        _ = conn.as_mut() => return Ok(()),
        _ = &mut deadline => {}
    }
    // Lifetime over: no keep-alive after the response in progress (a
    // browser then opens a new connection instead of finding this one
    // cut under its next request).
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(LAST_RESPONSE, conn).await;
    Ok(())
}

/// A snapshot from the daemon loop (None if it did not answer in time).
pub async fn take_snapshot(snapshots: &mpsc::Sender<SnapshotRequest>) -> Option<Snapshot> {
    let (tx, rx) = oneshot::channel();
    let snapshot = async {
        snapshots.send(tx).await.ok()?;
        rx.await.ok()
    };
    tokio::time::timeout(LOOP_WAIT, snapshot)
        .await
        .ok()
        .flatten()
}

async fn index() -> &'static str {
    "lbd: /metrics (Prometheus text format); /console (the web console, when configured)\n"
}

async fn metrics(State(ctx): State<Ctx>) -> Response {
    let ok = |text: Arc<String>| {
        ([(header::CONTENT_TYPE, TEXT_FORMAT)], text.to_string()).into_response()
    };
    if let Some(text) = ctx.last.get() {
        return ok(text);
    }
    let Some(s) = take_snapshot(&ctx.snapshots).await else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "lbd's daemon loop did not answer in time\n",
        )
            .into_response();
    };
    // Thousands of series: encoded off the async workers.
    let checks = ctx.checks.clone();
    match tokio::task::spawn_blocking(move || render(&s, &checks)).await {
        Ok(text) => {
            let text = Arc::new(text);
            ctx.last.put(text.clone());
            ok(text)
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
