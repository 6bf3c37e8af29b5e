//! Driving BIRD: a task that keeps the include file and BIRD in step with
//! the daemon's latest decisions. The file is written whole (a new file
//! renamed over the old one, so BIRD never reads half of it) and BIRD
//! reloads it with `birdc configure`; a failure (BIRD down, its
//! configuration refused) is retried every 2 s and shown by `lbadm bgp`.
//! The sessions' states come from `birdc show protocols` every 5 s (every
//! second while one is not established).

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

/// Waits, off the daemon's loop, for BIRD to take decisions `gen`.
pub struct Waiter {
    status: watch::Receiver<Status>,
    want: watch::Receiver<Want>,
    gen: u64,
}

impl Waiter {
    /// The decisions and status once BIRD took `gen` (or after `within`).
    pub async fn wait(mut self, within: Duration) -> (Want, Status) {
        let gen = self.gen;
        let _ = tokio::time::timeout(within, self.status.wait_for(|s| s.applied_gen >= gen)).await;
        let want = self.want.borrow().clone();
        let status = self.status.borrow().clone();
        (want, status)
    }
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

    /// A waiter for decisions `gen`.
    pub fn waiter(&self, gen: u64) -> Waiter {
        Waiter {
            status: self.status.clone(),
            want: self.want.subscribe(),
            gen,
        }
    }

    /// Waits (at most `within`) until BIRD has taken decisions `gen`.
    pub async fn applied(&self, gen: u64, within: Duration) -> bool {
        self.waiter(gen).wait(within).await.1.applied_gen >= gen
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(mut rx: watch::Receiver<Want>, status: watch::Sender<Status>) {
    // What BIRD has loaded, and what the file holds (they differ after a
    // failed reload: the file is then rewritten even when BIRD's state is
    // wanted again, so that a later reload by anyone loads the truth).
    let mut loaded: Option<(PathBuf, String)> = None;
    let mut on_disk: Option<(PathBuf, String)> = None;
    let mut sessions_due = tokio::time::Instant::now();
    loop {
        let want = rx.borrow_and_update().clone();
        let text = (want.include.clone(), render(&want.cfg, &want.decisions));
        let mut failed = false;
        if loaded.as_ref() != Some(&text) {
            let r = reload(&want.cfg, &text.0, &text.1, &mut on_disk).await;
            match r {
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
                    loaded = Some(text);
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
            if on_disk.as_ref() != Some(&text) {
                match crate::files::write_whole(&text.0, text.1.as_bytes()) {
                    Ok(()) => on_disk = Some(text.clone()),
                    Err(e) => warn!("BGP: rewriting {}: {e}", text.0.display()),
                }
            }
            status.send_if_modified(|s| {
                let moved = s.applied_gen != want.gen || s.error.is_some();
                s.applied_gen = want.gen;
                s.error = None;
                moved
            });
        }
        if tokio::time::Instant::now() >= sessions_due {
            let sessions = sessions(&want.cfg).await;
            // Every second while a session is not established, else 5 s.
            let settled = sessions.iter().all(|s| s.info.starts_with("Established"));
            status.send_if_modified(|s| {
                let moved = s.sessions != sessions;
                s.sessions = sessions;
                moved
            });
            let every = if settled { 5 } else { 1 };
            sessions_due = tokio::time::Instant::now() + Duration::from_secs(every);
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
    reload(cfg, include, &render(cfg, &d), &mut None).await
}

/// Writes `text` to `include` (whole, by rename; `on_disk` follows) and
/// reloads BIRD. Taken: "Reconfigured", or "Reconfiguration in progress"
/// (BIRD has the new configuration and is restarting protocols); a
/// queued reload is not taken yet (tried again).
async fn reload(
    cfg: &BgpCfg,
    include: &Path,
    text: &str,
    on_disk: &mut Option<(PathBuf, String)>,
) -> Result<(), String> {
    crate::files::write_whole(include, text.as_bytes())
        .map_err(|e| format!("writing {}: {e}", include.display()))?;
    *on_disk = Some((include.to_path_buf(), text.to_string()));
    let out = birdc(cfg, &["configure"]).await?;
    if out.contains("Reconfigured") || out.contains("Reconfiguration in progress") {
        Ok(())
    } else if out.contains("queueing") {
        Err("BIRD is busy with another reconfiguration".into())
    } else {
        Err(format!(
            "birdc configure: {}",
            out.trim().replace('\n', " | ")
        ))
    }
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
    use crate::bgp::Decisions;

    /// A birdc stand-in: records its calls, "loads" the include (copies it)
    /// on `configure`, fails while a flag file exists.
    struct FakeBird {
        dir: PathBuf,
        cfg: BgpCfg,
    }

    impl FakeBird {
        fn new(tag: &str) -> FakeBird {
            use std::os::unix::fs::PermissionsExt as _;
            let dir =
                std::env::temp_dir().join(format!("lb-fakebird-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let d = dir.display();
            let script = format!(
                "#!/bin/sh\necho \"$*\" >> {d}/calls\nif [ -e {d}/fail ]; then echo 'Unable to connect to server control socket'; exit 1; fi\ncase \"$*\" in *configure*) cp {d}/lbd.bird.conf {d}/loaded; echo Reconfigured;; *) echo 'BIRD 2.0.12 ready.';; esac\n"
            );
            let birdc = dir.join("birdc");
            std::fs::write(&birdc, script).unwrap();
            std::fs::set_permissions(&birdc, std::fs::Permissions::from_mode(0o755)).unwrap();
            let cfg: BgpCfg = serde_yaml::from_str(&format!(
                "birdc: {}\ninclude: {d}/lbd.bird.conf\nannounce: [{{address: 192.0.2.100}}]\n",
                birdc.display()
            ))
            .unwrap();
            FakeBird { dir, cfg }
        }
        fn want(&self, gen: u64, why: Option<&str>) -> Want {
            let mut decisions = Decisions::new();
            decisions.insert("192.0.2.100".parse().unwrap(), why.map(String::from));
            Want {
                gen,
                cfg: self.cfg.clone(),
                include: self.dir.join("lbd.bird.conf"),
                decisions,
            }
        }
        fn read(&self, name: &str) -> String {
            std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
        }
        fn configures(&self) -> usize {
            self.read("calls")
                .lines()
                .filter(|l| l.contains("configure"))
                .count()
        }
        fn fail(&self, on: bool) {
            let f = self.dir.join("fail");
            if on {
                std::fs::write(f, "").unwrap();
            } else {
                let _ = std::fs::remove_file(f);
            }
        }
    }

    impl Drop for FakeBird {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    const ROUTE: &str = "route 192.0.2.100/32 blackhole;";

    /// BIRD takes each change once; a failed reload is retried and shown;
    /// a reason that changes nothing in the file reloads nothing; after a
    /// failure the file on disk goes back to what BIRD has loaded.
    #[tokio::test]
    async fn the_task_keeps_bird_and_the_file_in_step() {
        let b = FakeBird::new("step");
        let h = Handle::spawn(b.want(1, None));
        assert!(h.applied(1, Duration::from_secs(5)).await);
        assert!(b.read("loaded").contains(ROUTE));
        // Withdrawn, then another reason: one reload.
        h.send(b.want(2, Some("drained")));
        assert!(h.applied(2, Duration::from_secs(5)).await);
        h.send(b.want(3, Some("quorum lost")));
        assert!(h.applied(3, Duration::from_secs(5)).await);
        assert!(!b.read("loaded").contains(ROUTE));
        assert_eq!(b.configures(), 2);
        // BIRD unreachable: not taken, the error shown, retried.
        b.fail(true);
        h.send(b.want(4, None));
        assert!(!h.applied(4, Duration::from_millis(500)).await);
        assert!(h
            .status
            .borrow()
            .error
            .as_ref()
            .unwrap()
            .contains("Unable to connect"));
        assert!(
            b.read("lbd.bird.conf").contains(ROUTE),
            "the new file is written"
        );
        b.fail(false);
        assert!(h.applied(4, Duration::from_secs(5)).await, "retried");
        assert!(h.status.borrow().error.is_none());
        assert!(b.read("loaded").contains(ROUTE));
        // A failed withdrawal, then BIRD's state wanted again: no reload,
        // but the file is rewritten to what BIRD has.
        b.fail(true);
        h.send(b.want(5, Some("drained")));
        assert!(!h.applied(5, Duration::from_millis(500)).await);
        assert!(!b.read("lbd.bird.conf").contains(ROUTE));
        h.send(b.want(6, None));
        assert!(h.applied(6, Duration::from_secs(5)).await);
        assert!(b.read("lbd.bird.conf").contains(ROUTE));
        b.fail(false);
    }

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
