//! The control socket: a Unix stream socket (0600, in a 0700 directory),
//! one JSON request per line, each answered by the daemon loop through a
//! channel (one owner of the director, no locks).

use std::{os::unix::fs::PermissionsExt, path::Path, time::Duration};

use anyhow::{Context as _, Result};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::error;

use crate::control::{self, Request, Response, MAX_REQUEST};

/// A request and where its response goes.
pub type Job = (Request, oneshot::Sender<Response>);

/// Accepts connections on `listener` and hands every request to `jobs`.
pub fn serve(listener: UnixListener, jobs: mpsc::Sender<Job>) {
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    tokio::spawn(serve_conn(s, jobs.clone()));
                }
                Err(e) => {
                    error!("control socket accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}

async fn serve_conn(stream: UnixStream, jobs: mpsc::Sender<Job>) {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r.take(MAX_REQUEST as u64 + 2));
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                let resp = Response::Error {
                    message: format!("unreadable request: {e}"),
                };
                let _ = write_resp(&mut w, &resp).await;
                return;
            }
        }
        let too_long = !line.ends_with('\n') && line.len() > MAX_REQUEST;
        let resp = match control::decode_request(line.trim_end()) {
            Ok(req) => {
                let (tx, rx) = oneshot::channel();
                if jobs.send((req, tx)).await.is_err() {
                    return;
                }
                rx.await.unwrap_or(Response::Error {
                    message: "daemon is shutting down".into(),
                })
            }
            Err(message) => Response::Error { message },
        };
        let failed = matches!(resp, Response::Error { .. });
        if write_resp(&mut w, &resp).await.is_err() || too_long || (failed && !line.ends_with('\n'))
        {
            return;
        }
        reader.get_mut().set_limit(MAX_REQUEST as u64 + 2);
    }
}

async fn write_resp(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    resp: &Response,
) -> std::io::Result<()> {
    let mut s = serde_json::to_string(resp)
        .unwrap_or_else(|e| format!(r#"{{"result":"error","message":"{e}"}}"#));
    s.push('\n');
    w.write_all(s.as_bytes()).await
}

/// Creates the control socket: parent directory 0700, socket 0600.
pub fn bind_socket(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).ok();
    }
    if path.exists() {
        // A stale socket from a previous run; refuse if someone is listening.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("{} is in use by a running lbd", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok(l)
}
