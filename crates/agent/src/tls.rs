//! TLS for the HTTP API and the RPC listener, on rustls (ring provider): certificates and keys
//! from PEM files, optional client-certificate verification against `ca_file`. The agent's own
//! configurations (HTTP and RPC listeners, RPC calls) take their certificate, key and CA from
//! one [`LiveTls`] at every handshake, so a reload swaps them for new connections while
//! established ones continue.

use std::sync::Arc;

use caravan_agent_core::config::TlsConfig;
use parking_lot::RwLock;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::client::ResolvesClientCert;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};

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

/// A server configuration over `live`'s certificate: `alpn` protocols offered, client
/// certificates required (and checked against the live CA) when `verify_clients`.
pub fn server_config(
    live: &Arc<LiveTls>,
    alpn: &[&[u8]],
    verify_clients: bool,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let builder = if verify_clients {
        builder.with_client_cert_verifier(Arc::new(LiveClients(live.clone())))
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_cert_resolver(Arc::new(LiveCert(live.clone())));
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

/// The RPC client configuration: trust the live CA, present the live certificate.
pub fn rpc_client(live: &Arc<LiveTls>, region: &str) -> Result<RpcClientTls, String> {
    let config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(LiveServers(live.clone())))
        .with_client_cert_resolver(Arc::new(LiveCert(live.clone())));
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

/// The certificate, key and CA every TLS configuration of this process uses, swappable while
/// running: configurations built by [`server_config`] and [`rpc_client`] ask it at each
/// handshake, so after [`LiveTls::commit`] new connections use the new files and connections
/// already established continue with what they negotiated.
pub struct LiveTls {
    current: RwLock<Material>,
}

/// One load of the files.
#[derive(Clone)]
struct Material {
    key: Arc<CertifiedKey>,
    /// Verifies client certificates against `ca_file` (none without one).
    clients: Option<Arc<dyn ClientCertVerifier>>,
    /// Verifies servers' certificates against `ca_file` (none without one).
    servers: Option<Arc<dyn ServerCertVerifier>>,
}

/// Files read and checked, not yet in use ([`LiveTls::prepare`]).
pub struct Prepared(Material);

impl std::fmt::Debug for LiveTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveTls")
    }
}

impl LiveTls {
    /// Reads and checks `tls`'s files without using them.
    pub fn prepare(tls: &TlsConfig) -> Result<Prepared, String> {
        let provider = Arc::new(default_provider());
        let key = CertifiedKey::from_der(certs(&tls.cert_file)?, key(&tls.key_file)?, &provider)
            .map_err(|e| format!("tls: {e}"))?;
        let (clients, servers) = if tls.ca_file.is_empty() {
            (None, None)
        } else {
            let roots = Arc::new(roots(&tls.ca_file)?);
            let clients: Arc<dyn ClientCertVerifier> =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build()
                    .map_err(|e| format!("tls.ca_file: {e}"))?;
            let servers: Arc<dyn ServerCertVerifier> =
                WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| format!("tls.ca_file: {e}"))?;
            (Some(clients), Some(servers))
        };
        Ok(Prepared(Material {
            key: Arc::new(key),
            clients,
            servers,
        }))
    }

    /// Loads `tls`'s files.
    pub fn load(tls: &TlsConfig) -> Result<Arc<LiveTls>, String> {
        Ok(Arc::new(LiveTls {
            current: RwLock::new(LiveTls::prepare(tls)?.0),
        }))
    }

    /// Puts prepared files in use for every handshake from now on.
    pub fn commit(&self, prepared: Prepared) {
        *self.current.write() = prepared.0;
    }

    fn material(&self) -> Material {
        self.current.read().clone()
    }
}

/// Serves the live certificate (server side) and presents it (client side).
#[derive(Debug)]
struct LiveCert(Arc<LiveTls>);

impl ResolvesServerCert for LiveCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.material().key)
    }
}

impl ResolvesClientCert for LiveCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.material().key)
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Checks client certificates against the live CA. It names no acceptable issuers in the
/// handshake (the hints would have to outlive a reload), so clients send their certificate
/// whatever CA signed it.
#[derive(Debug)]
struct LiveClients(Arc<LiveTls>);

fn no_ca() -> tokio_rustls::rustls::Error {
    tokio_rustls::rustls::Error::General("tls.ca_file is not set".into())
}

impl ClientCertVerifier for LiveClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<ClientCertVerified, tokio_rustls::rustls::Error> {
        let m = self.0.material();
        m.clients
            .ok_or_else(no_ca)?
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        let m = self.0.material();
        m.clients
            .ok_or_else(no_ca)?
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        let m = self.0.material();
        m.clients
            .ok_or_else(no_ca)?
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Checks servers' certificates against the live CA.
#[derive(Debug)]
struct LiveServers(Arc<LiveTls>);

impl ServerCertVerifier for LiveServers {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        let m = self.0.material();
        m.servers.ok_or_else(no_ca)?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        let m = self.0.material();
        m.servers
            .ok_or_else(no_ca)?
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        let m = self.0.material();
        m.servers
            .ok_or_else(no_ca)?
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
