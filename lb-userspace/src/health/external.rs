//! external: a program (keepalived's MISC_CHECK): exit 0 up, 1 down,
//! 2..255 up with weight code - 2; killed at its timeout.

use std::{net::SocketAddr, time::Duration};

use tokio::time::timeout;

use super::{secs, CheckSpec, Outcome, WeightChange};

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
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::fail(format!("cannot run {}: {e}", args[0])),
    };
    match timeout(limit, child.wait()).await {
        Err(_) => {
            let _ = child.kill().await;
            Outcome::fail(format!("program killed after {}", secs(spec.timeout)))
        }
        Ok(Err(e)) => Outcome::fail(format!("program: {e}")),
        Ok(Ok(st)) => match st.code() {
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
