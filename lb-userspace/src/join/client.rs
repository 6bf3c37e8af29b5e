//! lbadm's side of the join API.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use rustls::pki_types::{pem::PemObject as _, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};

use super::{JoinRequest, JoinResponse};

/// TLS towards the director: the CA that signed its certificate, and the
/// real server's own certificate for mutual TLS.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

fn connector(t: &ClientTls) -> Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for c in super::read_certs(&t.ca, "--ca")? {
        roots
            .add(c)
            .with_context(|| format!("--ca {}", t.ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match (&t.cert, &t.key) {
        (Some(c), Some(k)) => {
            let chain = super::read_certs(c, "--cert")?;
            let key = PrivateKeyDer::from_pem_file(k)
                .with_context(|| format!("--key {}", k.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("--cert/--key")?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => anyhow::bail!("--cert and --key go together"),
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    req: &JoinRequest,
) -> Result<JoinResponse> {
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line).await?;
    s.flush().await?;
    let mut r = BufReader::new(s);
    let mut answer = String::new();
    r.read_line(&mut answer).await?;
    if answer.is_empty() {
        anyhow::bail!("the director closed the connection without an answer");
    }
    serde_json::from_str(&answer).with_context(|| format!("the director's answer: {answer}"))
}

/// Sends `req` to the join API at `director` (HOST:PORT).
pub async fn call(
    director: &str,
    tls: Option<&ClientTls>,
    req: &JoinRequest,
) -> Result<JoinResponse> {
    let host = director
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
        .with_context(|| format!("--director {director}: expected HOST:PORT"))?
        .to_string();
    let work = async {
        let stream = tokio::net::TcpStream::connect(director)
            .await
            .with_context(|| format!("connecting to the director's join API at {director}"))?;
        match tls {
            Some(t) => {
                let name = ServerName::try_from(host.clone()).with_context(|| {
                    format!("--director {director}: not a host name or address")
                })?;
                let s = connector(t)?
                    .connect(name, stream)
                    .await
                    .with_context(|| format!("TLS with {director}"))?;
                exchange(s, req).await
            }
            None => exchange(stream, req).await,
        }
    };
    tokio::time::timeout(Duration::from_secs(15), work)
        .await
        .with_context(|| format!("{director} did not answer in 15 s"))?
}
