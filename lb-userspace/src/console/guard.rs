//! Who may do what: the Host a request names (DNS rebinding), its Origin,
//! its session, its CSRF token.

use axum::{
    extract::State,
    http::{header, HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
};

use super::{
    auth::{Session, COOKIE},
    Console, Ctx, Refusal,
};

/// The host part of a Host header (`192.0.2.2:9469` -> `192.0.2.2`,
/// `[2001:db8::2]:9469` -> `2001:db8::2`).
pub(super) fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The session id the request's cookie carries.
pub(super) fn cookie_session(h: &HeaderMap) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn unauthorized() -> Refusal {
    Refusal(
        StatusCode::UNAUTHORIZED,
        "log in first (or the session ended)".into(),
    )
}

impl Console {
    /// Whether a request names this director as the console knows it: an
    /// IP address, localhost or one of `console.hosts` (a page served
    /// under another name that resolves here, DNS rebinding, is refused);
    /// a change must come from a page of the same origin.
    pub(super) fn same_site(&self, method: &Method, h: &HeaderMap) -> Result<(), Refusal> {
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
        if method != Method::GET {
            if let Some(o) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
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

    /// The request's session; `touch` for what a user does (not polls).
    pub(super) fn session(&self, h: &HeaderMap, touch: bool) -> Option<Session> {
        self.auth.session(&cookie_session(h)?, touch)
    }

    /// The session of a logged-in user's request.
    pub(super) fn logged_in(&self, h: &HeaderMap) -> Result<Session, Refusal> {
        self.session(h, true).ok_or_else(unauthorized)
    }

    pub(super) fn can_edit(&self) -> bool {
        !self.cfg.read_only && self.auth.has_users()
    }

    /// Whether the request may look at the monitoring panel.
    pub(super) fn viewer(&self, h: &HeaderMap) -> Result<(), Refusal> {
        if self.cfg.login_to_view && self.session(h, false).is_none() {
            return Err(Refusal(
                StatusCode::UNAUTHORIZED,
                "log in to see this director".into(),
            ));
        }
        Ok(())
    }

    /// The session of a request that may change the configuration: logged
    /// in, with the session's CSRF token, on a console that takes changes.
    pub(super) fn editor(&self, h: &HeaderMap) -> Result<Session, Refusal> {
        if self.cfg.read_only {
            return Err(Refusal(
                StatusCode::FORBIDDEN,
                "the console is read-only (console.read_only): change the configuration with lbadm"
                    .into(),
            ));
        }
        let s = self.logged_in(h)?;
        self.csrf(h, &s)?;
        Ok(s)
    }

    pub(super) fn csrf(&self, h: &HeaderMap, s: &Session) -> Result<(), Refusal> {
        let sent = h.get("x-csrf-token").and_then(|v| v.to_str().ok());
        match sent {
            Some(t) if crate::join::same_token(t, &s.csrf) => Ok(()),
            _ => Err(Refusal(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token (X-CSRF-Token): reload the page".into(),
            )),
        }
    }
}

/// Every console request: a Host it knows, a same-origin change.
pub(super) async fn same_site(
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
pub(super) async fn require_editor(
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
