//! agent: the HAProxy agent-check protocol (one ASCII line such as `75%`,
//! `up`, `down`, `drain`).

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::{tcp::connect, unescape, CheckSpec, Outcome, WeightChange};

/// Parses one HAProxy agent-check reply line.
pub fn parse_agent(line: &str) -> Outcome {
    let mut out = Outcome::ok();
    out.reason = format!("agent: {}", line.trim());
    let mut saw = false;
    for word in line
        .split([' ', ',', '\t'])
        .map(str::trim)
        .filter(|w| !w.is_empty())
    {
        let w = word.to_ascii_lowercase();
        if let Some(p) = w.strip_suffix('%') {
            if let Ok(p) = p.parse::<u32>() {
                out.weight = Some(WeightChange::Percent(p.min(256)));
                saw = true;
            }
        } else {
            match w.as_str() {
                "up" | "ready" => {
                    out.ok = true;
                    saw = true;
                }
                "drain" => {
                    out.weight = Some(WeightChange::Percent(0));
                    saw = true;
                }
                "down" | "maint" | "fail" | "stopped" => {
                    out.ok = false;
                    saw = true;
                }
                _ => {}
            }
        }
    }
    if !saw {
        return Outcome::fail(format!("agent: unintelligible reply {:?}", line.trim()));
    }
    out
}

/// One agent probe.
pub(super) async fn probe(spec: &CheckSpec, target: SocketAddr) -> Outcome {
    let mut s = match connect(spec, target).await {
        Ok(s) => s,
        Err(e) => return Outcome::fail(format!("agent: {e}")),
    };
    if let Some(send) = &spec.send {
        let _ = s.write_all(&unescape(send).unwrap_or_default()).await;
    }
    // The first line is the answer: agents that keep the connection open
    // are not waited for.
    let mut line = Vec::new();
    match BufReader::new(s.take(1024))
        .read_until(b'\n', &mut line)
        .await
    {
        Ok(_) => parse_agent(String::from_utf8_lossy(&line).lines().next().unwrap_or("")),
        Err(e) => Outcome::fail(format!("agent: reading the reply: {e}")),
    }
}
