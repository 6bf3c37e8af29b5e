//! lbd's HTTP listener (`--metrics` / `metrics.listen`): `/metrics` for
//! Prometheus.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore},
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
const MAX_CONNECTIONS: usize = 16;
/// A connection lives at most this long (a client that sends nothing holds
/// no slot for longer).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Scrapes within this of the last one get its text (a burst of scrapes
/// costs the daemon loop one snapshot).
const REUSE: Duration = Duration::from_secs(1);

/// Binds the listener before anything is touched (a taken port fails lbd's
/// start, not a scrape later).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)
        .with_context(|| format!("metrics: listening on {addr}"))?;
    l.set_nonblocking(true)?;
    if addr.ip().is_unspecified() {
        tracing::warn!(
            %addr,
            "metrics: listening on every address, the VIPs' included (the XDP program passes ports no service uses): /metrics has no authentication, prefer a management address"
        );
    }
    Ok(l)
}

/// The TCP listener with a bound on connections and their lifetime.
struct Limited {
    inner: TcpListener,
    slots: Arc<Semaphore>,
}

/// An accepted connection holding its slot until it closes or its time
/// is up.
struct Conn {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Conn {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        std::future::Future::poll(self.deadline.as_mut(), cx).is_ready()
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "connection lifetime over")
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl axum::serve::Listener for Limited {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let deadline = Box::pin(tokio::time::sleep(CONNECTION_LIFETIME));
                    return (
                        Conn {
                            stream,
                            _slot: slot,
                            deadline,
                        },
                        addr,
                    );
                }
                // Out of descriptors and the like: wait, do not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

#[derive(Clone)]
struct Ctx {
    snapshots: mpsc::Sender<SnapshotRequest>,
    checks: CheckMetrics,
    /// The last scrape's text and when it was made.
    last: Arc<Mutex<Option<Rendered>>>,
}

/// A scrape's text and when it was rendered.
type Rendered = (Instant, Arc<String>);

/// Serves `listener` until lbd exits.
pub fn serve(
    listener: std::net::TcpListener,
    snapshots: mpsc::Sender<SnapshotRequest>,
    checks: CheckMetrics,
) -> Result<()> {
    let listener = Limited {
        inner: TcpListener::from_std(listener)?,
        slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    };
    let app = Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .with_state(Ctx {
            snapshots,
            checks,
            last: Default::default(),
        });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics listener stopped: {e}");
        }
    });
    Ok(())
}

async fn index() -> &'static str {
    "lbd: /metrics (Prometheus text format)\n"
}

async fn metrics(State(ctx): State<Ctx>) -> Response {
    let ok = |text: Arc<String>| {
        ([(header::CONTENT_TYPE, TEXT_FORMAT)], text.to_string()).into_response()
    };
    let recent = ctx.last.lock().ok().and_then(|g| {
        g.as_ref()
            .filter(|(t, _)| t.elapsed() < REUSE)
            .map(|(_, s)| s.clone())
    });
    if let Some(text) = recent {
        return ok(text);
    }
    let (tx, rx) = oneshot::channel();
    let snapshot = async {
        ctx.snapshots.send(tx).await.ok()?;
        rx.await.ok()
    };
    let Ok(Some(s)) = tokio::time::timeout(LOOP_WAIT, snapshot).await else {
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
            if let Ok(mut g) = ctx.last.lock() {
                *g = Some((Instant::now(), text.clone()));
            }
            ok(text)
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
