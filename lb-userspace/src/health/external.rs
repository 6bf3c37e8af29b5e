//! external: a program (keepalived's MISC_CHECK): exit 0 up, 1 down,
//! 2..255 up with weight code - 2. It runs in a process group of its own
//! with a minimal environment (PATH, and the real server in
//! LB_REAL_ADDRESS / LB_REAL_PORT); at its timeout, or if the check is
//! dropped, the whole group is killed, so nothing it started outlives a
//! timeout. What a program that exits in time leaves running on purpose is
//! its own (as with keepalived's MISC_CHECK).

use std::{net::SocketAddr, time::Duration};

use tokio::time::timeout;

use super::{secs, CheckSpec, Outcome, WeightChange};

/// The PATH external checks get.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Kills a process group when dropped, unless disarmed (its leader was
/// reaped, so the id may no longer be its).
struct GroupKill(Option<i32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            // SAFETY: kill(2) on a process group we created; the leader is
            // not reaped yet, so the id is still that group's.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

/// One run of the program.
pub(super) async fn probe(spec: &CheckSpec, target: SocketAddr) -> Outcome {
    let limit = Duration::from_secs_f64(spec.timeout);
    let args: Vec<String> = spec
        .command
        .iter()
        .map(|a| {
            a.replace("{address}", &target.ip().to_string())
                .replace("{port}", &target.port().to_string())
        })
        .collect();
    let mut cmd = tokio::process::Command::new(&args[0]);
    cmd.args(&args[1..])
        .env_clear()
        .env("PATH", PATH)
        .env("LB_REAL_ADDRESS", target.ip().to_string())
        .env("LB_REAL_PORT", target.port().to_string())
        .current_dir("/")
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::fail(format!("cannot run {}: {e}", args[0])),
    };
    // Declared after `child`, so dropped (the group killed) before it.
    let mut group = GroupKill(child.id().map(|p| p as i32));
    match timeout(limit, child.wait()).await {
        Err(_) => {
            drop(group);
            let _ = child.wait().await;
            Outcome::fail(format!(
                "program killed after {} (with its process group)",
                secs(spec.timeout)
            ))
        }
        Ok(r) => {
            group.0 = None;
            match r {
                Err(e) => Outcome::fail(format!("program: {e}")),
                Ok(st) => match st.code() {
                    Some(0) => Outcome::ok(),
                    Some(1) => Outcome::fail("program exit 1"),
                    Some(c) => Outcome {
                        ok: true,
                        weight: Some(WeightChange::Absolute(c as u32 - 2)),
                        reason: format!("program exit {c}: weight {}", c - 2),
                    },
                    None => Outcome::fail("program killed by a signal"),
                },
            }
        }
    }
}
