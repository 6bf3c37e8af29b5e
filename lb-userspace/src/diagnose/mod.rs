//! `lbadm diagnose`: what is wrong with a director or a real server, each
//! finding a sentence and the command that fixes it.
//!
//! The judgements are pure functions of facts gathered elsewhere (lbd
//! gathers the director's, lbadm the real server's), so each rule is tested
//! on its own, and the whole in the namespace lab by breaking each thing.

pub mod director;
pub mod realserver;

use serde::{Deserialize, Serialize};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// As it should be (shown so that the operator sees what was checked).
    Ok,
    /// Works, but worse than it could, or will break on the next change.
    Warning,
    /// Traffic is lost or misrouted now.
    Error,
}

/// One thing checked: what was found, and the command that fixes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub level: Level,
    pub what: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(what: impl Into<String>) -> Finding {
        Finding {
            level: Level::Ok,
            what: what.into(),
            fix: None,
        }
    }

    pub fn warning(what: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            level: Level::Warning,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn error(what: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            level: Level::Error,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The findings as lbadm prints them: problems first (errors, then
/// warnings), then what is fine; a fix under each problem. `verbose` shows
/// the fine ones too.
pub fn render(findings: &[Finding], verbose: bool) -> String {
    let mut sorted: Vec<&Finding> = findings
        .iter()
        .filter(|f| verbose || f.level != Level::Ok)
        .collect();
    sorted.sort_by_key(|f| std::cmp::Reverse(f.level));
    let mut out = String::new();
    for f in sorted {
        let tag = match f.level {
            Level::Ok => "ok     ",
            Level::Warning => "WARNING",
            Level::Error => "ERROR  ",
        };
        out.push_str(&format!("{tag} {}\n", f.what));
        if let Some(fix) = &f.fix {
            out.push_str(&format!("        fix: {fix}\n"));
        }
    }
    let (e, w) = (
        findings.iter().filter(|f| f.level == Level::Error).count(),
        findings
            .iter()
            .filter(|f| f.level == Level::Warning)
            .count(),
    );
    let ok = findings.len() - e - w;
    out.push_str(&format!(
        "{e} error(s), {w} warning(s), {ok} check(s) fine{}\n",
        if verbose || ok == 0 {
            ""
        } else {
            " (-v lists them)"
        }
    ));
    out
}
