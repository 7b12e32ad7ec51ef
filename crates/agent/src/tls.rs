//! TLS for the HTTP API and the RPC listener, on rustls (ring provider): certificates and keys
//! from PEM files, optional client-certificate verification against `ca_file`.

use std::sync::Arc;

use caravan_agent_core::config::TlsConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The name an agent's RPC certificate must carry (Nomad's convention).
pub fn rpc_server_name(region: &str) -> String {
    format!("server.{region}.nomad")
}

fn certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("tls.cert_file {path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.cert_file {path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("tls.cert_file {path}: no certificate found"));
    }
    Ok(certs)
}

fn key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("tls.key_file {path}: {e}"))
}

fn roots(path: &str) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(path).map_err(|e| format!("tls.ca_file {path}: {e}"))?
    {
        let cert = cert.map_err(|e| format!("tls.ca_file {path}: {e}"))?;
        store
            .add(cert)
            .map_err(|e| format!("tls.ca_file {path}: {e}"))?;
    }
    if store.is_empty() {
        return Err(format!("tls.ca_file {path}: no certificate found"));
    }
    Ok(store)
}

/// A server configuration: `alpn` protocols offered, client certificates required when
/// `verify_clients`.
pub fn server_config(
    tls: &TlsConfig,
    alpn: &[&[u8]],
    verify_clients: bool,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let builder = if verify_clients {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&tls.ca_file)?), provider)
                .build()
                .map_err(|e| format!("tls.ca_file: {e}"))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(certs(&tls.cert_file)?, key(&tls.key_file)?)
        .map_err(|e| format!("tls: {e}"))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// What an agent needs to call another agent's RPC listener over TLS.
#[derive(Clone)]
pub struct RpcClientTls {
    /// The client configuration (our certificate, the CA to trust).
    pub config: Arc<ClientConfig>,
    /// The name the server's certificate must carry.
    pub server_name: ServerName<'static>,
}

/// The RPC client configuration: trust `ca_file`, present our certificate.
pub fn rpc_client(tls: &TlsConfig, region: &str) -> Result<RpcClientTls, String> {
    let config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots(&tls.ca_file)?)
        .with_client_auth_cert(certs(&tls.cert_file)?, key(&tls.key_file)?)
        .map_err(|e| format!("tls: {e}"))?;
    let server_name = ServerName::try_from(rpc_server_name(region))
        .map_err(|e| format!("tls: bad server name: {e}"))?;
    Ok(RpcClientTls {
        config: Arc::new(config),
        server_name,
    })
}

/// What the CLI uses to reach an https agent (Nomad's `-ca-cert`, `-client-cert`,
/// `-client-key`, `-tls-server-name`, `-tls-skip-verify` and their `NOMAD_*` variables).
#[derive(Debug, Clone, Default)]
pub struct CliTls {
    /// CA to verify the agent with (else the certificate is checked against no root and fails,
    /// unless `skip_verify`).
    pub ca_cert: Option<String>,
    /// Certificate to present.
    pub client_cert: Option<String>,
    /// Its key.
    pub client_key: Option<String>,
    /// Name to verify instead of the address's host.
    pub server_name: Option<String>,
    /// Accept any certificate (Nomad's `-tls-skip-verify`).
    pub skip_verify: bool,
}

/// The CLI's rustls client configuration.
pub fn cli_client(tls: &CliTls) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let builder = if tls.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    } else {
        let roots = match &tls.ca_cert {
            Some(path) => roots(path).map_err(|e| e.replace("tls.ca_file", "CA certificate"))?,
            None => RootCertStore::empty(),
        };
        builder.with_root_certificates(roots)
    };
    let config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key_file)) => builder
            .with_client_auth_cert(certs(cert)?, key(key_file)?)
            .map_err(|e| format!("tls: {e}"))?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("a client certificate needs its key, and a key its certificate".into()),
    };
    Ok(Arc::new(config))
}

/// `-tls-skip-verify`: any certificate is taken; signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<tokio_rustls::rustls::crypto::CryptoProvider>);

impl tokio_rustls::rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<tokio_rustls::rustls::client::danger::ServerCertVerified, tokio_rustls::rustls::Error>
    {
        Ok(tokio_rustls::rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
