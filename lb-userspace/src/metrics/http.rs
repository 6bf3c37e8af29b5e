//! lbd's HTTP listener (`--metrics` / `metrics.listen`): `/metrics` for
//! Prometheus.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context as _, Result};
use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use tokio::sync::{mpsc, oneshot};

use super::{render, Snapshot};
use crate::health::CheckMetrics;

/// A scrape's request to the daemon loop: the snapshot comes back on it.
pub type SnapshotRequest = oneshot::Sender<Snapshot>;

/// The text exposition format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long a scrape waits for the daemon loop (busy with a commit or a
/// sweep of a large table) before it answers 503.
const LOOP_WAIT: Duration = Duration::from_secs(5);

/// Binds the listener before anything is touched (a taken port fails lbd's
/// start, not a scrape later).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)
        .with_context(|| format!("metrics: listening on {addr}"))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

#[derive(Clone)]
struct Ctx {
    snapshots: mpsc::Sender<SnapshotRequest>,
    checks: CheckMetrics,
}

/// Serves `listener` until lbd exits.
pub fn serve(
    listener: std::net::TcpListener,
    snapshots: mpsc::Sender<SnapshotRequest>,
    checks: CheckMetrics,
) -> Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .with_state(Ctx { snapshots, checks });
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
    match tokio::task::spawn_blocking(move || render(&s, &ctx.checks)).await {
        Ok(text) => ([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
