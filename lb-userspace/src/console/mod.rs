//! The web console (docs/console.md): Piranha's panels served by lbd on its
//! HTTP listener. Monitoring (a page that polls `/api/state`) and
//! configuration (forms over the exported configuration, every change
//! planned and applied by the daemon's one apply path, as `lbadm apply`).
//!
//! The assets (one page, one script, one style sheet) are compiled into
//! lbd. Logins check argon2 hashes from `console.users`; a session is a
//! cookie (HttpOnly, SameSite=Strict, Secure over TLS) and every change
//! carries the session's CSRF token in `X-CSRF-Token`.

mod api;
mod auth;
mod change;
mod config;
mod guard;
mod view;

use std::{sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::json;
use tokio::sync::mpsc;

use self::auth::Auth;
pub use self::{
    auth::{check_hash, hash_password},
    config::{ConsoleCfg, ConsoleUser},
};
use crate::{
    daemon::Job,
    metrics::{Recent, SnapshotRequest},
};

/// What the console's handlers share.
pub struct Console {
    cfg: ConsoleCfg,
    auth: Auth,
    jobs: mpsc::Sender<Job>,
    snapshots: mpsc::Sender<SnapshotRequest>,
    /// Served over TLS (the cookie is then Secure).
    tls: bool,
    /// The last `/api/state`: polls within a second share it (a flood of
    /// them costs the daemon loop one snapshot a second).
    last_state: Recent<view::View>,
    /// Refused logins, logged at a bounded rate.
    refusals: crate::listen::RefusalLog,
}

type Ctx = State<Arc<Console>>;

/// Bodies of changes (a whole configuration) are at most this big.
const MAX_BODY: usize = 4 << 20;
/// How long a request waits for the daemon loop.
const LOOP_WAIT: Duration = Duration::from_secs(10);

/// The console's routes on the HTTP listener.
pub fn routes(
    cfg: ConsoleCfg,
    jobs: mpsc::Sender<Job>,
    snapshots: mpsc::Sender<SnapshotRequest>,
    tls: bool,
) -> Router {
    let idle = Duration::from_secs(u64::from(cfg.session_idle));
    let c = Arc::new(Console {
        auth: Auth::new(cfg.users.clone(), idle),
        cfg,
        jobs,
        snapshots,
        tls,
        last_state: Recent::default(),
        refusals: crate::listen::RefusalLog::new("console"),
    });
    // Authenticated before the body is read.
    let editor = || axum::middleware::from_fn_with_state(c.clone(), guard::require_editor);
    Router::new()
        .route("/console", get(page))
        .route("/console/app.js", get(script))
        .route("/console/app.css", get(style))
        .route("/api/session", get(api::session))
        .route("/api/login", post(api::login))
        .route("/api/logout", post(api::logout))
        .route("/api/state", get(api::state))
        .route("/api/config", get(api::config))
        .route("/api/config.yaml", get(api::config_yaml))
        .route("/api/plan", post(change::plan).layer(editor()))
        .route("/api/apply", post(change::apply).layer(editor()))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            c.clone(),
            guard::same_site,
        ))
        .layer(axum::middleware::map_response(headers))
        .with_state(c)
}

/// Every answer: no caching, no framing, no sniffing, only our own
/// scripts.
async fn headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, header::CACHE_CONTROL, "no-store");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    );
    r
}

async fn page() -> Response {
    asset(
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    )
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    )
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/app.css"))
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// A refusal: its status, and its message as `{"ok": false, "error"}`.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "ok": false, "error": self.1 }))).into_response()
    }
}

/// A change that could not be made (a plan's answer, status 200): the
/// whole message, and the field it names with the message alone.
fn failed(error: String, field: Option<String>, message: Option<String>) -> Response {
    Json(json!({ "ok": false, "error": error, "field": field, "message": message })).into_response()
}

#[cfg(test)]
mod tests;
