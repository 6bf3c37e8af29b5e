//! Driving BIRD: a task that keeps the include file and BIRD in step with
//! the daemon's latest decisions. The file is written whole (a new file
//! renamed over the old one, so BIRD never reads half of it) and BIRD
//! reloads it with `birdc configure`; a failure (BIRD down, its
//! configuration refused) is retried every 2 s and shown by `lbadm bgp`.
//! The sessions' states come from `birdc show protocols` every 5 s.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::{process::Command, sync::watch, task::JoinHandle};
use tracing::{info, warn};

use super::{render, BgpCfg, Decisions, Session};

/// What BIRD should announce: decisions numbered by `gen`.
#[derive(Debug, Clone)]
pub struct Want {
    pub gen: u64,
    pub cfg: BgpCfg,
    pub include: PathBuf,
    pub decisions: Decisions,
}

/// What the task last did.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// The latest `gen` BIRD has taken.
    pub applied_gen: u64,
    pub error: Option<String>,
    pub reloads: u64,
    pub sessions: Vec<Session>,
}

pub struct Handle {
    want: watch::Sender<Want>,
    pub status: watch::Receiver<Status>,
    task: JoinHandle<()>,
}

const TIMEOUT: Duration = Duration::from_secs(10);

impl Handle {
    pub fn spawn(first: Want) -> Handle {
        let (want, rx) = watch::channel(first);
        let (tx, status) = watch::channel(Status::default());
        let task = tokio::spawn(run(rx, tx));
        Handle { want, status, task }
    }

    pub fn want(&self) -> Want {
        self.want.borrow().clone()
    }

    pub fn send(&self, w: Want) {
        self.want.send_replace(w);
    }

    /// Waits (at most `within`) until BIRD has taken decisions `gen`.
    pub async fn applied(&self, gen: u64, within: Duration) -> bool {
        let mut st = self.status.clone();
        tokio::time::timeout(within, st.wait_for(|s| s.applied_gen >= gen))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(mut rx: watch::Receiver<Want>, status: watch::Sender<Status>) {
    let mut applied: Option<(PathBuf, String)> = None;
    let mut sessions_due = tokio::time::Instant::now();
    loop {
        let want = rx.borrow_and_update().clone();
        let text = render(&want.cfg, &want.decisions);
        let mut failed = false;
        if applied.as_ref() != Some(&(want.include.clone(), text.clone())) {
            match reload(&want.cfg, &want.include, &text).await {
                Ok(()) => {
                    let announced: Vec<String> = want
                        .decisions
                        .iter()
                        .filter(|(_, why)| why.is_none())
                        .map(|(a, _)| a.to_string())
                        .collect();
                    info!(
                        include = %want.include.display(),
                        announced = announced.join(","),
                        "BGP: BIRD reloaded"
                    );
                    applied = Some((want.include.clone(), text));
                    status.send_modify(|s| {
                        s.applied_gen = want.gen;
                        s.error = None;
                        s.reloads += 1;
                    });
                }
                Err(e) => {
                    if status.borrow().error.as_ref() != Some(&e) {
                        warn!("BGP: {e} (retrying every 2 s)");
                    }
                    failed = true;
                    status.send_modify(|s| s.error = Some(e));
                }
            }
        } else {
            status.send_if_modified(|s| {
                let moved = s.applied_gen != want.gen;
                s.applied_gen = want.gen;
                moved
            });
        }
        if tokio::time::Instant::now() >= sessions_due {
            let sessions = sessions(&want.cfg).await;
            status.send_if_modified(|s| {
                let moved = s.sessions != sessions;
                s.sessions = sessions;
                moved
            });
            sessions_due = tokio::time::Instant::now() + Duration::from_secs(5);
        }
        let wait = if failed {
            Duration::from_secs(2)
        } else {
            sessions_due.saturating_duration_since(tokio::time::Instant::now())
        };
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Withdraws every VIP of `cfg` (the include file keeps empty protocols
/// for BIRD's configuration that includes it): `lbd --unload`.
pub async fn withdraw_all(cfg: &BgpCfg, include: &Path) -> Result<(), String> {
    let d: Decisions = cfg
        .announce
        .iter()
        .map(|a| (a.address, Some("lbd --unload".to_string())))
        .collect();
    reload(cfg, include, &render(cfg, &d)).await
}

/// Writes `text` to `include` (whole, by rename) and reloads BIRD.
async fn reload(cfg: &BgpCfg, include: &Path, text: &str) -> Result<(), String> {
    write_whole(include, text).map_err(|e| format!("writing {}: {e}", include.display()))?;
    let out = birdc(cfg, &["configure"]).await?;
    if out.contains("Reconfigured")
        || out.contains("Reconfiguration in progress")
        || out.contains("queueing")
    {
        Ok(())
    } else {
        Err(format!(
            "birdc configure: {}",
            out.trim().replace('\n', " | ")
        ))
    }
}

fn write_whole(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Runs birdc with `args`; its output (stdout and stderr).
async fn birdc(cfg: &BgpCfg, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(&cfg.birdc);
    if let Some(s) = &cfg.control_socket {
        cmd.arg("-s").arg(s);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| format!("running {}: {e}", cfg.birdc.display()))?;
    match tokio::time::timeout(TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(o)) => {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            Ok(s)
        }
        Ok(Err(e)) => Err(format!("birdc: {e}")),
        Err(_) => Err(format!(
            "birdc {} took more than {TIMEOUT:?}",
            args.join(" ")
        )),
    }
}

/// The speaker's BGP sessions (none when birdc fails).
async fn sessions(cfg: &BgpCfg) -> Vec<Session> {
    birdc(cfg, &["show", "protocols"])
        .await
        .map(|o| parse_protocols(&o))
        .unwrap_or_default()
}

/// The BGP rows of `birdc show protocols`: name, state and the info
/// column (what follows the "since" time, which may be one or two words).
pub fn parse_protocols(out: &str) -> Vec<Session> {
    out.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.len() < 4 || w[1] != "BGP" {
                return None;
            }
            let mut rest = &w[4..];
            while let Some(first) = rest.first() {
                if first.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                    rest = &rest[1..];
                } else {
                    break;
                }
            }
            Some(Session {
                name: w[0].to_string(),
                state: w[3].to_string(),
                info: rest.join(" "),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bgp_rows_of_show_protocols() {
        let out = "BIRD 2.0.12 ready.\nName       Proto      Table      State  Since         Info\ndevice1    Device     ---        up     07:49:08.397  \nd1         BGP        ---        up     07:49:12.472  Established   \nd2         BGP        ---        start  2026-11-29 07:49:08  Active        Socket: Connection refused\n";
        let s = parse_protocols(out);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].name.as_str(), s[0].state.as_str(), s[0].info.as_str()),
            ("d1", "up", "Established")
        );
        assert_eq!(s[1].info, "Active Socket: Connection refused");
    }
}
