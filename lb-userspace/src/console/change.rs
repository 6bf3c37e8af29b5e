//! `/api/plan` and `/api/apply`: a change made in the console, validated
//! and applied by the daemon's one apply path (as `lbadm apply`).

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Extension, Json,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{auth::Session, failed, Console, Ctx, Refusal};
use crate::{
    config::ConfigError,
    control::{Request, Response as Answer},
    daemon::parse_off_loop,
};

/// A change: the whole configuration as the console's forms hold it
/// (`config`, JSON) or as YAML text (`yaml`), and the version it was made
/// against.
#[derive(Deserialize)]
pub(super) struct Change {
    #[serde(default)]
    pub config: Option<Value>,
    #[serde(default)]
    pub yaml: Option<String>,
    pub version: String,
}

/// The file name the console's changes carry in the loader's messages.
pub(super) const FILE: &str = "console";

impl Console {
    /// Reads `ch` as the YAML loader does (off the async workers; YAML
    /// text keeps its own line numbers), refuses a `console:` section and
    /// puts the running one in.
    pub(super) async fn parse(&self, ch: &Change) -> Result<crate::config::Config, Response> {
        let text = match (&ch.yaml, &ch.config) {
            (Some(y), None) => y.clone(),
            (None, Some(v)) => {
                serde_yaml::to_string(v).map_err(|e| failed(e.to_string(), None, None))?
            }
            _ => return Err(failed("send either config or yaml".into(), None, None)),
        };
        let mut c = parse_off_loop(text, FILE.into()).await.map_err(|e| {
            let (field, msg) = field_of(&e);
            failed(e.to_string(), field, Some(msg))
        })?;
        if c.console.is_some() {
            return Err(failed(
                "console: the console's own section is changed in lbd's configuration file (and needs a restart), not here".into(),
                Some("console".into()),
                None,
            ));
        }
        c.console = Some(self.cfg.clone());
        Ok(c)
    }

    async fn change(&self, s: Session, peer: SocketAddr, ch: Change, dry_run: bool) -> Response {
        let parsed = match self.parse(&ch).await {
            Ok(c) => c,
            Err(r) => return r,
        };
        let req = Request::Apply {
            // Parsed already: the daemon takes `parsed`.
            yaml: String::new(),
            file: FILE.into(),
            dry_run,
            by: Some(format!("console user {} from {}", s.user, peer.ip())),
            if_unchanged: Some(ch.version),
        };
        match self.ask(req, Some(Ok(parsed))).await {
            Answer::Applied { changes } => {
                if !dry_run {
                    // The monitor shows the change at its next poll.
                    self.last_state.clear();
                }
                Json(json!({ "ok": true, "changes": changes })).into_response()
            }
            Answer::Error { message } => failed(message, None, None),
            other => Refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("unexpected answer {other:?}"),
            )
            .into_response(),
        }
    }
}

/// The field a loader error names, and its message without the location.
pub(super) fn field_of(e: &ConfigError) -> (Option<String>, String) {
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

pub(super) async fn plan(
    State(c): Ctx,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(s): Extension<Session>,
    Json(ch): Json<Change>,
) -> Response {
    c.change(s, peer, ch, true).await
}

pub(super) async fn apply(
    State(c): Ctx,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(s): Extension<Session>,
    Json(ch): Json<Change>,
) -> Response {
    c.change(s, peer, ch, false).await
}
