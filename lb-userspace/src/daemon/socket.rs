//! The control socket: a Unix stream socket (0600, in a 0700 directory),
//! one JSON request per line, each answered by the daemon loop through a
//! channel (one owner of the director, no locks).

use std::{
    os::unix::fs::{DirBuilderExt, FileTypeExt},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, Result};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::error;

use crate::{
    config::{Config, ConfigError},
    control::{self, Request, Response, MAX_REQUEST},
};

/// A request, its configuration already parsed (`apply`: parsed here, off
/// the daemon's loop, so a huge or hostile file never stalls it), and where
/// its response goes.
pub struct Job {
    pub req: Request,
    pub parsed: Option<Result<Config, ConfigError>>,
    pub reply: oneshot::Sender<Response>,
}

impl Job {
    /// Sends `req` (with its configuration already parsed, if any) to the
    /// daemon loop and waits for the answer, at most `wait`.
    pub async fn ask(
        jobs: &mpsc::Sender<Job>,
        req: Request,
        parsed: Option<Result<Config, ConfigError>>,
        wait: Option<Duration>,
    ) -> Response {
        let (reply, rx) = oneshot::channel();
        let asked = async {
            jobs.send(Job { req, parsed, reply }).await.ok()?;
            rx.await.ok()
        };
        let answer = match wait {
            Some(w) => tokio::time::timeout(w, asked).await.map_err(|_| w),
            None => Ok(asked.await),
        };
        match answer {
            Ok(Some(a)) => a,
            Ok(None) => Response::Error {
                message: "daemon is shutting down".into(),
            },
            Err(w) => Response::Error {
                message: format!(
                    "lbd's daemon loop did not answer in {} s: a change may still be applied; see what runs",
                    w.as_secs()
                ),
            },
        }
    }
}

/// Parses (and validates) a configuration on a blocking thread: a huge or
/// hostile one never stalls the daemon loop or an async worker.
pub async fn parse_off_loop(yaml: String, file: String) -> Result<Config, ConfigError> {
    let f = file.clone();
    tokio::task::spawn_blocking(move || Config::parse(&yaml, &file))
        .await
        .unwrap_or_else(|_| {
            Err(ConfigError::Syntax {
                file: f,
                line: 0,
                column: 0,
                msg: "the YAML parser failed on this input".into(),
            })
        })
}

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
                let parsed = match &req {
                    Request::Apply { yaml, file, .. } => {
                        Some(parse_off_loop(yaml.clone(), file.clone()).await)
                    }
                    _ => None,
                };
                Job::ask(&jobs, req, parsed, None).await
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

/// Creates the control socket (0600). A missing parent directory is
/// created 0700; an existing one is left as it is. An existing socket is
/// replaced only if nobody listens on it; anything else at `path` is
/// refused, never replaced.
pub fn bind_socket(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                anyhow::bail!("{} is in use by a running lbd", path.display());
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        }
        Ok(_) => anyhow::bail!(
            "{} exists and is not a socket: refusing to replace it (give --socket another path)",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("--socket {}", path.display())),
    }
    // Created 0600 (umask 0177 around the bind), never opened to others
    // for an instant, and no chmod by path afterwards (which would follow
    // a symlink put there meanwhile).
    // SAFETY: umask has no preconditions; the previous mask is restored.
    let old = unsafe { libc::umask(0o177) };
    let l = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    l.with_context(|| format!("binding {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[tokio::test]
    async fn the_socket_never_replaces_a_file_nor_changes_a_directory_it_did_not_make() {
        let d = std::env::temp_dir().join(format!("lb-sock-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = d.join("precious");
        std::fs::write(&file, "keep me").unwrap();
        let e = bind_socket(&file).unwrap_err().to_string();
        assert!(e.contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
        let sock = d.join("lbd.sock");
        let l = bind_socket(&sock).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d), 0o755, "an existing directory keeps its mode");
        assert_eq!(mode(&sock), 0o600);
        // In use: refused; once closed: a stale socket, replaced.
        assert!(bind_socket(&sock)
            .unwrap_err()
            .to_string()
            .contains("in use"));
        drop(l);
        let _l = bind_socket(&sock).unwrap();
        let fresh = d.join("new/sub/lbd.sock");
        let _m = bind_socket(&fresh).unwrap();
        assert_eq!(mode(&d.join("new/sub")), 0o700);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
