//! http and https: GET, status range, body substring, regex and MD5 digest,
//! Host header, SNI.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{
    tcp::{connect, contains, read_some},
    unescape, CheckKind, CheckSpec, Outcome,
};

async fn http_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    spec: &CheckSpec,
    mut s: S,
    host: &str,
) -> Outcome {
    let req = format!(
        "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: lbd-health-check\r\nConnection: close\r\n\r\n",
        spec.path
    );
    if let Err(e) = s.write_all(req.as_bytes()).await {
        return Outcome::fail(format!("HTTP request: {e}"));
    }
    let buf = match read_some(&mut s, 1 << 20).await {
        Ok(b) => b,
        // A TLS server closing without close_notify still sent its reply.
        Err(e) if e.contains("close_notify") || e.contains("UnexpectedEof") => Vec::new(),
        Err(e) => return Outcome::fail(e),
    };
    let text = String::from_utf8_lossy(&buf);
    let Some(status) = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
    else {
        return Outcome::fail("HTTP: no status line");
    };
    if status < spec.status[0] || status > spec.status[1] {
        return Outcome::fail(format!("HTTP {status}"));
    }
    let body_start = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(buf.len());
    let body = &buf[body_start..];
    if let Some(want) = &spec.expect {
        if !contains(body, &unescape(want).unwrap_or_default()) {
            return Outcome::fail(format!("HTTP body lacks {want:?}"));
        }
    }
    if let Some(r) = &spec.regex {
        let re = regex::bytes::Regex::new(r).expect("validated");
        if !re.is_match(body) {
            return Outcome::fail(format!("HTTP body does not match /{r}/"));
        }
    }
    if let Some(d) = &spec.digest {
        let got = super::md5_hex(body);
        if !got.eq_ignore_ascii_case(d) {
            return Outcome::fail(format!("HTTP body digest {got}"));
        }
    }
    Outcome::ok()
}

/// Health checks do not verify certificates (real servers commonly use
/// self-signed ones, and keepalived's SSL_GET does not either): the check is
/// about the service answering, not about who it is.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One http or https probe.
pub(super) async fn probe(spec: &CheckSpec, target: SocketAddr) -> Outcome {
    let s = match connect(spec, target).await {
        Ok(s) => s,
        Err(e) => return Outcome::fail(e),
    };
    let host = spec.host.clone().unwrap_or_else(|| match target.ip() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    });
    if spec.kind == CheckKind::Http {
        return http_exchange(spec, s, &host).await;
    }
    let sni = spec
        .sni
        .clone()
        .or_else(|| spec.host.clone().filter(|h| h.parse::<IpAddr>().is_err()));
    let name = match sni {
        Some(n) => rustls::pki_types::ServerName::try_from(n.clone())
            .map_err(|e| format!("SNI {n:?}: {e}")),
        None => Ok(rustls::pki_types::ServerName::IpAddress(target.ip().into())),
    };
    let name = match name {
        Ok(n) => n,
        Err(e) => return Outcome::fail(e),
    };
    match tls_connector().connect(name, s).await {
        Ok(tls) => http_exchange(spec, tls, &host).await,
        Err(e) => Outcome::fail(format!("TLS handshake: {e}")),
    }
}
