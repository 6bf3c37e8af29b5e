//! The console's reading side and its logins: `/api/session`, `/api/login`,
//! `/api/logout`, `/api/state`, `/api/config`, `/api/config.yaml`.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{ConnectInfo, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use serde_json::json;

use super::{
    auth::{LoginError, COOKIE},
    guard::cookie_session,
    view, Console, Ctx, Refusal, LOOP_WAIT,
};
use crate::{
    config::{config_version, Config, ConfigError},
    control::{Request, Response as Answer},
    daemon::Job,
};

impl Console {
    /// Sends a request to the daemon loop and waits for its answer.
    pub(super) async fn ask(
        &self,
        req: Request,
        parsed: Option<Result<Config, ConfigError>>,
    ) -> Answer {
        Job::ask(&self.jobs, req, parsed, Some(LOOP_WAIT)).await
    }

    /// The running configuration as YAML (`lbadm export`), its
    /// `console:` section included.
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

    /// The running configuration without the console's own section (its
    /// password hashes never reach a browser, and the console cannot
    /// change it), and its version (of the whole export, as `if_unchanged`
    /// compares).
    async fn config(&self, h: &HeaderMap) -> Result<(serde_yaml::Value, String), Refusal> {
        self.logged_in(h)?;
        let yaml = self.export().await?;
        // A YAML mapping keeps the export's order of keys.
        let mut v: serde_yaml::Value = serde_yaml::from_str(&yaml)
            .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        if let Some(m) = v.as_mapping_mut() {
            m.remove("console");
        }
        Ok((v, config_version(&yaml)))
    }
}

pub(super) async fn session(State(c): Ctx, h: HeaderMap) -> Response {
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
pub(super) struct LoginBody {
    user: String,
    password: String,
}

pub(super) async fn login(
    State(c): Ctx,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(b): Json<LoginBody>,
) -> Response {
    if !c.auth.has_users() {
        return Refusal(
            StatusCode::FORBIDDEN,
            "no console.users: nobody can log in".into(),
        )
        .into_response();
    }
    if b.user.len() > 64 || b.password.len() > 1024 {
        return Refusal(StatusCode::UNAUTHORIZED, LoginError::Wrong.to_string()).into_response();
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
            // A locked-out source's further attempts are not logged (its
            // lockout was, with the refusals that led to it).
            if e == LoginError::Wrong {
                c.refusals
                    .refused(from, &format!("login refused for user {user:?}: {e}"));
            }
            let code = match e {
                LoginError::Locked(..) => StatusCode::TOO_MANY_REQUESTS,
                LoginError::Wrong => StatusCode::UNAUTHORIZED,
            };
            Refusal(code, e.to_string()).into_response()
        }
        Err(e) => Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

pub(super) async fn logout(State(c): Ctx, h: HeaderMap) -> Response {
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

pub(super) async fn state(State(c): Ctx, h: HeaderMap) -> Response {
    if let Err(r) = c.viewer(&h) {
        return r.into_response();
    }
    let view = match c.last_state.get() {
        Some(v) => v,
        None => match crate::metrics::take_snapshot(&c.snapshots).await {
            Some(s) => {
                let v = Arc::new(view::View::of(&s));
                c.last_state.put(v.clone());
                v
            }
            None => {
                return Refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "lbd's daemon loop did not answer in time".into(),
                )
                .into_response()
            }
        },
    };
    // Who changed what (user names, their addresses) is for users only.
    if c.session(&h, false).is_some() {
        Json(&*view).into_response()
    } else {
        Json(view::View {
            history: Vec::new(),
            ..view::View::clone(&view)
        })
        .into_response()
    }
}

pub(super) async fn config(State(c): Ctx, h: HeaderMap) -> Response {
    match c.config(&h).await {
        Ok((config, version)) => {
            Json(json!({ "ok": true, "config": config, "version": version })).into_response()
        }
        Err(r) => r.into_response(),
    }
}

/// The same as YAML, as a download; its version in `X-Config-Version`.
pub(super) async fn config_yaml(State(c): Ctx, h: HeaderMap) -> Response {
    let (config, version) = match c.config(&h).await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let text = match serde_yaml::to_string(&config) {
        Ok(t) => t,
        Err(e) => return Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
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
            (header::HeaderName::from_static("x-config-version"), version),
        ],
        text,
    )
        .into_response()
}
