//! TLS on the HTTP API (optionally requiring client certificates) and mutual TLS on RPC.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring::default_provider};

use crate::support::{Agent, Scratch};

struct Pki {
    dir: Scratch,
    ca: String,
    cert: String,
    key: String,
}

fn pki() -> Pki {
    let dir = Scratch::new();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "server.global.nomad".to_string(),
    ])
    .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pki {
        ca: dir.write("ca.pem", &ca_cert.pem()),
        cert: dir.write("agent.pem", &cert.pem()),
        key: dir.write("agent-key.pem", &key.serialize_pem()),
        dir,
    }
}

fn client_config(p: &Pki, with_cert: bool) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&p.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = if with_cert {
        let certs = CertificateDer::pem_file_iter(&p.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        builder
            .with_client_auth_cert(certs, PrivateKeyDer::from_pem_file(&p.key).unwrap())
            .unwrap()
    } else {
        builder.with_no_client_auth()
    };
    Arc::new(config)
}

async fn https(
    agent: &Agent,
    config: Arc<ClientConfig>,
    method: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let tcp = tokio::net::TcpStream::connect(agent.http)
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn tls_hcl(p: &Pki, verify_clients: bool) -> String {
    format!(
        "tls {{\n  http = true\n  rpc = true\n  ca_file = \"{}\"\n  cert_file = \"{}\"\n  key_file = \"{}\"\n  verify_https_client = {verify_clients}\n}}\n",
        p.ca, p.cert, p.key
    )
}

#[tokio::test]
async fn https_api_and_mutual_tls_rpc() {
    let p = pki();
    let agent = Agent::start_tls(&tls_hcl(&p, false), &p.dir).await;
    let (status, body) = https(&agent, client_config(&p, false), "GET", "/v1/agent/health")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    // Plain HTTP on the TLS port gets no HTTP answer.
    assert!(
        crate::support::get(agent.http, "/v1/agent/health")
            .await
            .is_err()
    );
    // The server pings its own RPC listener over mutual TLS.
    let path = format!("/v1/agent/servers?address={}", agent.rpc);
    let (status, body) = https(&agent, client_config(&p, false), "PUT", &path)
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, ""));
    // A plain-text RPC client is refused.
    let dead = format!("/v1/agent/servers?address=127.0.0.1:{}", agent.http.port());
    let (status, _) = https(&agent, client_config(&p, false), "PUT", &dead)
        .await
        .unwrap();
    assert_eq!(status, 400);
}

#[tokio::test]
async fn client_certificates_required_when_asked() {
    let p = pki();
    let agent = Agent::start_tls(&tls_hcl(&p, true), &p.dir).await;
    let without = https(&agent, client_config(&p, false), "GET", "/v1/agent/health").await;
    assert!(without.is_err(), "{without:?}");
    let (status, _) = https(&agent, client_config(&p, true), "GET", "/v1/agent/health")
        .await
        .unwrap();
    assert_eq!(status, 200);
}

#[test]
fn missing_key_file_is_a_clear_error() {
    let s = Scratch::new();
    let f = s.write(
        "a.hcl",
        "tls {\n  http = true\n  cert_file = \"/nonexistent/c.pem\"\n  key_file = \"/nonexistent/k.pem\"\n}\n",
    );
    let out = crate::support::run_caravan(&["agent", "-dev", &format!("-config={f}")], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls.cert_file /nonexistent/c.pem"), "{err}");
}
