//! The web console (docs/console.md): Piranha's panels served by lbd on its
//! HTTP listener. Monitoring (a page that polls `/api/state`) and
//! configuration (forms over the exported configuration, every change
//! planned and applied by the daemon's one apply path, as `lbadm apply`).
//!
//! The assets (one page, one script, one style sheet) are compiled into
//! lbd. Logins check argon2 hashes from `console.users`; a session is a
//! cookie (HttpOnly, SameSite=Strict, Secure over TLS) and every change
//! carries the session's CSRF token in `X-CSRF-Token`.

mod auth;
mod view;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::{ConnectInfo, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

pub use self::auth::{check_hash, hash_password};
use self::auth::{Auth, LoginError, Session, COOKIE};
use crate::{
    config::ConfigError,
    control::{Request, Response as Answer},
    daemon::{parse_off_loop, Job},
    metrics::SnapshotRequest,
};

/// `console:` in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleCfg {
    /// Monitoring only: no change is taken from the console, whoever asks.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// Who may log in to change the configuration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<ConsoleUser>,
    /// The monitoring panel needs a login too (default: it is open to
    /// whoever reaches the listener).
    #[serde(default, skip_serializing_if = "is_false")]
    pub login_to_view: bool,
    /// Seconds a session may stay unused before it ends (default 1800).
    #[serde(default = "default_idle")]
    pub session_idle: u32,
    /// Host names the console answers to, besides IP addresses and
    /// localhost (a page of another name is refused: DNS rebinding).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleUser {
    pub name: String,
    /// An argon2 hash in PHC form (`lbadm console-password` makes one).
    pub password_hash: String,
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn default_idle() -> u32 {
    1800
}

impl ConsoleCfg {
    /// Semantic checks: (field, message).
    pub fn check(&self) -> Result<(), (String, String)> {
        if self.login_to_view && self.users.is_empty() {
            return Err((
                "console.login_to_view".into(),
                "needs at least one entry in console.users".into(),
            ));
        }
        if !(60..=7 * 86400).contains(&self.session_idle) {
            return Err((
                "console.session_idle".into(),
                format!("{} s out of range (60..=604800)", self.session_idle),
            ));
        }
        for (i, u) in self.users.iter().enumerate() {
            let ok = |c: char| c.is_ascii_alphanumeric() || "._-@".contains(c);
            if u.name.is_empty() || u.name.len() > 64 || !u.name.chars().all(ok) {
                return Err((
                    format!("console.users[{i}].name"),
                    "1 to 64 of the characters A-Z a-z 0-9 . _ - @".into(),
                ));
            }
            if self.users[..i].iter().any(|o| o.name == u.name) {
                return Err((
                    format!("console.users[{i}].name"),
                    format!("user {} is listed twice", u.name),
                ));
            }
            check_hash(&u.password_hash)
                .map_err(|m| (format!("console.users[{i}].password_hash"), m))?;
        }
        Ok(())
    }
}

/// The version of an exported configuration: what a change made in the
/// console was made against (`Request::Apply::if_unchanged`).
pub fn config_version(yaml: &str) -> String {
    use md5::Digest as _;
    md5::Md5::digest(yaml.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the console's handlers share.
pub struct Console {
    cfg: ConsoleCfg,
    auth: Auth,
    jobs: mpsc::Sender<Job>,
    snapshots: mpsc::Sender<SnapshotRequest>,
    /// Served over TLS (the cookie is then Secure).
    tls: bool,
    /// The last `/api/state` and when it was made: polls within a second
    /// share it (a flood of them costs the daemon loop one snapshot a
    /// second).
    last_state: std::sync::Mutex<Option<(std::time::Instant, Arc<String>)>>,
}

/// Bodies of changes (a whole configuration) are at most this big.
const MAX_BODY: usize = 4 << 20;

type Ctx = State<Arc<Console>>;

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
        last_state: Default::default(),
    });
    // Authenticated before the body is read.
    let editor = || axum::middleware::from_fn_with_state(c.clone(), require_editor);
    Router::new()
        .route("/console", get(page))
        .route("/console/app.js", get(script))
        .route("/console/app.css", get(style))
        .route("/api/session", get(session))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/state", get(state))
        .route("/api/config", get(config))
        .route("/api/config.yaml", get(config_yaml))
        .route("/api/plan", post(plan).layer(editor()))
        .route("/api/apply", post(apply).layer(editor()))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(c.clone(), same_site))
        .layer(axum::middleware::map_response(headers))
        .with_state(c)
}

/// The host part of a Host header (`192.0.2.2:9469` -> `192.0.2.2`,
/// `[2001:db8::2]:9469` -> `2001:db8::2`).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

impl Console {
    /// Whether a request names this director as the console knows it: an
    /// IP address, localhost or one of `console.hosts` (a page served
    /// under another name that resolves here, DNS rebinding, is refused);
    /// a change must come from a page of the same origin.
    fn same_site(&self, method: &axum::http::Method, h: &HeaderMap) -> Result<(), Refusal> {
        let host = h
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let name = host_name(host);
        let known = name.parse::<std::net::IpAddr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || self.cfg.hosts.iter().any(|n| n.eq_ignore_ascii_case(name));
        if !known {
            return Err(Refusal(
                StatusCode::MISDIRECTED_REQUEST,
                format!("this console answers to its IP addresses, localhost and console.hosts, not to '{name}'"),
            ));
        }
        if method != axum::http::Method::GET {
            let origin = h.get(header::ORIGIN).and_then(|v| v.to_str().ok());
            if let Some(o) = origin {
                let o_host = o.split_once("://").map(|(_, r)| r).unwrap_or("");
                if !o_host.eq_ignore_ascii_case(host) {
                    return Err(Refusal(
                        StatusCode::FORBIDDEN,
                        format!("a change from another origin ({o}) is refused"),
                    ));
                }
            }
        }
        Ok(())
    }
}

async fn same_site(
    State(c): Ctx,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match c.same_site(req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(r) => r.into_response(),
    }
}

/// Plan and apply: a session, its CSRF token, a console that takes
/// changes; checked before the body is read.
async fn require_editor(
    State(c): Ctx,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match c.editor(req.headers()) {
        Ok(s) => {
            req.extensions_mut().insert(s);
            next.run(req).await
        }
        Err(r) => r.into_response(),
    }
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

fn refuse(code: StatusCode, message: impl Into<String>) -> Response {
    Refusal(code, message.into()).into_response()
}

fn cookie_session(h: &HeaderMap) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

impl Console {
    /// The request's session; `touch` for what a user does (not polls).
    fn session(&self, h: &HeaderMap, touch: bool) -> Option<Session> {
        self.auth.session(&cookie_session(h)?, touch)
    }

    fn can_edit(&self) -> bool {
        !self.cfg.read_only && self.auth.has_users()
    }

    /// The session of a request that may look at the monitoring panel.
    fn viewer(&self, h: &HeaderMap) -> Result<Option<Session>, Refusal> {
        let s = self.session(h, false);
        if self.cfg.login_to_view && s.is_none() {
            return Err(Refusal(
                StatusCode::UNAUTHORIZED,
                "log in to see this director".into(),
            ));
        }
        Ok(s)
    }

    /// The session of a request that may change the configuration: logged
    /// in, with the session's CSRF token, on a console that takes changes.
    fn editor(&self, h: &HeaderMap) -> Result<Session, Refusal> {
        if self.cfg.read_only {
            return Err(Refusal(
                StatusCode::FORBIDDEN,
                "the console is read-only (console.read_only): change the configuration with lbadm"
                    .into(),
            ));
        }
        let s = self.session(h, true).ok_or_else(|| {
            Refusal(
                StatusCode::UNAUTHORIZED,
                "log in first (or the session ended)".into(),
            )
        })?;
        self.csrf(h, &s)?;
        Ok(s)
    }

    fn csrf(&self, h: &HeaderMap, s: &Session) -> Result<(), Refusal> {
        let sent = h.get("x-csrf-token").and_then(|v| v.to_str().ok());
        match sent {
            Some(t) if auth::same(t, &s.csrf) => Ok(()),
            _ => Err(Refusal(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token (X-CSRF-Token): reload the page".into(),
            )),
        }
    }

    /// Sends a request to the daemon loop and waits for its answer.
    async fn ask(
        &self,
        req: Request,
        parsed: Option<Result<crate::config::Config, ConfigError>>,
    ) -> Answer {
        let (reply, rx) = oneshot::channel();
        let asked = async {
            self.jobs.send(Job { req, parsed, reply }).await.ok()?;
            rx.await.ok()
        };
        match tokio::time::timeout(LOOP_WAIT, asked).await {
            Ok(Some(a)) => a,
            Ok(None) => Answer::Error {
                message: "lbd is shutting down".into(),
            },
            Err(_) => Answer::Error {
                message: format!(
                    "lbd's daemon loop did not answer in {} s: a change may still be applied; reload to see what runs",
                    LOOP_WAIT.as_secs()
                ),
            },
        }
    }

    /// The running configuration as YAML (`lbadm export`).
    async fn export(&self) -> Result<String, Refusal> {
        match self.ask(Request::Export, None).await {
            Answer::Export { yaml } => Ok(yaml),
            Answer::Error { message } => Err(Refusal(StatusCode::SERVICE_UNAVAILABLE, message)),
            other => Err(Refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("unexpected answer {other:?}"),
            )),
        }
    }
}

async fn session(State(c): Ctx, h: HeaderMap) -> Response {
    let s = c.session(&h, false);
    Json(json!({
        "user": s.as_ref().map(|s| s.user.clone()),
        "csrf": s.as_ref().map(|s| s.csrf.clone()),
        "can_edit": c.can_edit(),
        "read_only": c.cfg.read_only,
        "login_to_view": c.cfg.login_to_view,
        "logins": c.auth.has_users(),
        "version": env!("CARGO_PKG_VERSION"),
        "director": std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim(),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct LoginBody {
    user: String,
    password: String,
}

async fn login(
    State(c): Ctx,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(b): Json<LoginBody>,
) -> Response {
    if !c.auth.has_users() {
        return refuse(StatusCode::FORBIDDEN, "no console.users: nobody can log in");
    }
    if b.user.len() > 64 || b.password.len() > 1024 {
        return refuse(StatusCode::UNAUTHORIZED, LoginError::Wrong.to_string());
    }
    let from = peer.ip();
    let user = b.user.clone();
    let c2 = c.clone();
    // Argon2 costs tens of milliseconds and 19 MiB: off the async workers.
    let r = tokio::task::spawn_blocking(move || c2.auth.login(from, &b.user, &b.password)).await;
    match r {
        Ok(Ok((id, s))) => {
            tracing::info!(user = %s.user, %from, "console: logged in");
            // A session cookie (gone with the browser); lbd ends the
            // session itself when idle.
            let cookie = format!(
                "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{}",
                if c.tls { "; Secure" } else { "" }
            );
            (
                [(header::SET_COOKIE, cookie)],
                Json(
                    json!({ "ok": true, "user": s.user, "csrf": s.csrf, "can_edit": c.can_edit() }),
                ),
            )
                .into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(user = %user, %from, "console: login refused: {e}");
            let code = match e {
                LoginError::Locked(..) => StatusCode::TOO_MANY_REQUESTS,
                LoginError::Wrong => StatusCode::UNAUTHORIZED,
            };
            refuse(code, e.to_string())
        }
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn logout(State(c): Ctx, h: HeaderMap) -> Response {
    let Some(s) = c.session(&h, false) else {
        return Json(json!({ "ok": true })).into_response();
    };
    if let Err(r) = c.csrf(&h, &s) {
        return r.into_response();
    }
    if let Some(id) = cookie_session(&h) {
        c.auth.logout(&id);
    }
    tracing::info!(user = %s.user, "console: logged out");
    let gone = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, gone)], Json(json!({ "ok": true }))).into_response()
}

async fn state(State(c): Ctx, h: HeaderMap) -> Response {
    if let Err(r) = c.viewer(&h) {
        return r.into_response();
    }
    let json = |body: Arc<String>| {
        (
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    };
    let recent = c.last_state.lock().ok().and_then(|g| {
        g.as_ref()
            .filter(|(t, _)| t.elapsed() < Duration::from_secs(1))
            .map(|(_, s)| s.clone())
    });
    if let Some(body) = recent {
        return json(body);
    }
    match crate::metrics::take_snapshot(&c.snapshots).await {
        Some(s) => {
            let body = Arc::new(serde_json::to_string(&view::View::of(&s)).unwrap_or_default());
            if let Ok(mut g) = c.last_state.lock() {
                *g = Some((std::time::Instant::now(), body.clone()));
            }
            json(body)
        }
        None => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "lbd's daemon loop did not answer in time",
        ),
    }
}

/// The running configuration without the console's own section (its
/// password hashes never reach a browser, and the console cannot change
/// it).
fn without_console(yaml: &str) -> Result<Value, String> {
    let mut v: Value = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
    if let Some(m) = v.as_object_mut() {
        m.remove("console");
    }
    Ok(v)
}

async fn config(State(c): Ctx, h: HeaderMap) -> Response {
    if c.session(&h, true).is_none() {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "log in first (or the session ended)",
        );
    }
    let yaml = match c.export().await {
        Ok(y) => y,
        Err(r) => return r.into_response(),
    };
    match without_console(&yaml) {
        Ok(config) => Json(json!({
            "ok": true,
            "config": config,
            "version": config_version(&yaml),
        }))
        .into_response(),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `lbadm export` without the `console:` section, as a download; its
/// version (of the whole export) in `X-Config-Version`.
async fn config_yaml(State(c): Ctx, h: HeaderMap) -> Response {
    if c.session(&h, true).is_none() {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "log in first (or the session ended)",
        );
    }
    let yaml = match c.export().await {
        Ok(y) => y,
        Err(r) => return r.into_response(),
    };
    let text = match without_console(&yaml)
        .and_then(|v| serde_yaml::to_string(&v).map_err(|e| e.to_string()))
    {
        Ok(t) => t,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    (
        [
            (
                header::CONTENT_TYPE,
                "application/yaml; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"lbd.yaml\"".to_string(),
            ),
            (
                header::HeaderName::from_static("x-config-version"),
                config_version(&yaml),
            ),
        ],
        text,
    )
        .into_response()
}

/// A change: the whole configuration as the console's forms hold it
/// (`config`, JSON) or as YAML text (`yaml`), and the version it was made
/// against.
#[derive(Deserialize)]
struct Change {
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    yaml: Option<String>,
    version: String,
}

/// The file name the console's changes carry in the loader's messages.
const FILE: &str = "console";

impl Console {
    /// The YAML the loader reads for `ch`: the text as given (so its line
    /// numbers are the user's), then the running console section.
    fn yaml_of(&self, ch: &Change) -> Result<String, String> {
        let text = match (&ch.yaml, &ch.config) {
            (Some(y), None) => y.clone(),
            (None, Some(v)) => serde_yaml::to_string(v).map_err(|e| e.to_string())?,
            _ => return Err("send either config or yaml".into()),
        };
        // Unreadable text goes on to the loader, whose message names the
        // place; readable text must not hold the console's section.
        let parsed: serde_yaml::Value =
            serde_yaml::from_str(&text).unwrap_or(serde_yaml::Value::Null);
        if parsed.get("console").is_some() || text.lines().any(|l| l.starts_with("console:")) {
            return Err("console: the console's own section is changed in lbd's configuration file (and needs a restart), not here".into());
        }
        let console =
            serde_yaml::to_string(&json!({ "console": self.cfg })).map_err(|e| e.to_string())?;
        Ok(format!("{}\n{console}", text.trim_end()))
    }

    async fn change(&self, s: Session, peer: SocketAddr, ch: Change, dry_run: bool) -> Response {
        let yaml = match self.yaml_of(&ch) {
            Ok(y) => y,
            Err(e) => {
                return Json(json!({ "ok": false, "error": e, "field": Value::Null }))
                    .into_response()
            }
        };
        let parsed = parse_off_loop(yaml.clone(), FILE.into()).await;
        if let Err(e) = &parsed {
            let (field, msg) = field_of(e);
            return Json(
                json!({ "ok": false, "error": e.to_string(), "field": field, "message": msg }),
            )
            .into_response();
        }
        let by = format!("console user {} from {}", s.user, peer.ip());
        let req = Request::Apply {
            yaml,
            file: FILE.into(),
            dry_run,
            by: Some(by),
            if_unchanged: Some(ch.version),
        };
        match self.ask(req, Some(parsed)).await {
            Answer::Applied { changes } => {
                Json(json!({ "ok": true, "changes": changes })).into_response()
            }
            Answer::Error { message } => {
                Json(json!({ "ok": false, "error": message, "field": Value::Null })).into_response()
            }
            other => refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("unexpected answer {other:?}"),
            ),
        }
    }
}

/// The field a loader error names, and its message without the location.
fn field_of(e: &ConfigError) -> (Option<String>, String) {
    match e {
        ConfigError::Invalid { field, msg, .. } => (Some(field.clone()), msg.clone()),
        ConfigError::Syntax { msg, .. } => {
            // serde's messages start with the path: `services[0].port: invalid ...`.
            match msg.split_once(": ") {
                Some((p, rest))
                    if !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_.[]".contains(c)) =>
                {
                    (Some(p.to_string()), rest.to_string())
                }
                _ => (None, msg.clone()),
            }
        }
        ConfigError::Read { .. } => (None, e.to_string()),
    }
}

async fn plan(
    State(c): Ctx,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(s): axum::Extension<Session>,
    Json(ch): Json<Change>,
) -> Response {
    c.change(s, peer, ch, true).await
}

async fn apply(
    State(c): Ctx,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(s): axum::Extension<Session>,
    Json(ch): Json<Change>,
) -> Response {
    c.change(s, peer, ch, false).await
}

#[cfg(test)]
mod tests;
