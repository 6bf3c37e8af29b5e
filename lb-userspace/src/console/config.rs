//! `console:` in lbd's configuration.

use serde::{Deserialize, Serialize};

use super::check_hash;

/// `console:` in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleCfg {
    /// Monitoring only: no change is taken from the console, whoever asks.
    #[serde(default, skip_serializing_if = "crate::config::is_false")]
    pub read_only: bool,
    /// Who may log in to change the configuration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<ConsoleUser>,
    /// The monitoring panel needs a login too (default: it is open to
    /// whoever reaches the listener).
    #[serde(default, skip_serializing_if = "crate::config::is_false")]
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
