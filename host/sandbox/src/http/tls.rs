//! TLS for guests' HTTPS: rustls (ring) with the webpki roots, the system's store and an
//! optional extra CA file. The client config is built once per sandbox, on first use (the
//! system store takes a while to read), and offers only HTTP/1.1.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tasker_core::http_grant::Host;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use wasmtime_wasi_http::Error;

use super::HttpConfig;
use crate::error::SandboxError;

pub(crate) struct TlsRoots {
    extra: Vec<CertificateDer<'static>>,
    system: bool,
    config: OnceLock<Arc<rustls::ClientConfig>>,
}

impl TlsRoots {
    /// Read the extra CA file now, so a bad one fails the sandbox's start, not a request.
    pub fn new(cfg: &HttpConfig) -> Result<Self, SandboxError> {
        let extra = match &cfg.extra_ca_file {
            None => Vec::new(),
            Some(path) => {
                let bad = |why: String| SandboxError::Config {
                    message: format!("http.extra_ca_file {}: {why}", path.display()),
                };
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| bad(e.to_string()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(e.to_string()))?;
                if certs.is_empty() {
                    return Err(bad("holds no PEM certificate".into()));
                }
                certs
            }
        };
        Ok(Self {
            extra,
            system: cfg.system_roots,
            config: OnceLock::new(),
        })
    }

    fn config(&self) -> Arc<rustls::ClientConfig> {
        self.config
            .get_or_init(|| {
                let mut roots = rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                if self.system {
                    // Unreadable system certificates are skipped: the others still count.
                    let found = rustls_native_certs::load_native_certs();
                    roots.add_parsable_certificates(found.certs);
                }
                roots.add_parsable_certificates(self.extra.iter().cloned());
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let mut config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default protocol versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Arc::new(config)
            })
            .clone()
    }

    /// The TLS handshake for `host` over `tcp`; the name checked is the URL's host.
    pub async fn connect(
        &self,
        host: &Host,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, Error> {
        let name = match host {
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
            Host::Name(n) => {
                ServerName::try_from(n.clone()).map_err(|_| Error::HttpRequestUriInvalid)?
            }
        };
        tokio_rustls::TlsConnector::from(self.config())
            .connect(name, tcp)
            .await
            .map_err(|e| {
                let cert = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .is_some_and(|r| {
                        matches!(
                            r,
                            rustls::Error::InvalidCertificate(_)
                                | rustls::Error::NoCertificatesPresented
                        )
                    });
                if cert {
                    Error::TlsCertificateError
                } else {
                    Error::Tls(e)
                }
            })
    }
}
