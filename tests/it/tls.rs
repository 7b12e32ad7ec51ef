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
    /// A client agent's certificate (`client.global.nomad`) and key.
    client_cert: String,
    client_key: String,
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
    let client_key = KeyPair::generate().unwrap();
    let client_cert = CertificateParams::new(vec!["client.global.nomad".to_string()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    Pki {
        client_cert: dir.write("client.pem", &client_cert.pem()),
        client_key: dir.write("client-key.pem", &client_key.serialize_pem()),
        ca: dir.write("ca.pem", &ca_cert.pem()),
        cert: dir.write("agent.pem", &cert.pem()),
        key: dir.write("agent-key.pem", &key.serialize_pem()),
        dir,
    }
}

/// An RPC client presenting the certificate at `cert`/`key`, expecting the server's name.
fn rpc_client(p: &Pki, cert: &str, key: &str) -> caravan_rpc::RpcClient {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&p.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let certs = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, PrivateKeyDer::from_pem_file(key).unwrap())
        .unwrap();
    let name = ServerName::try_from("server.global.nomad").unwrap();
    caravan_rpc::RpcClient::new(
        caravan_rpc::Dial::with_tls(Arc::new(config), name),
        Default::default(),
    )
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
    // Once the RPC listener accepts connections, a plain-text RPC client (the handshake an
    // agent without `tls.rpc` uses) is refused before any method runs: no reply, not even a
    // refusal.
    use caravan_rpc::RpcError;
    let started = std::time::Instant::now();
    while tokio::net::TcpStream::connect(agent.rpc).await.is_err() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the RPC port did not listen"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let plain = caravan_rpc::RpcClient::new(caravan_rpc::Dial::anonymous(), Default::default());
    let refused = plain
        .call_within(
            agent.rpc,
            "Status.Ping",
            None,
            b"{}".to_vec(),
            std::time::Duration::from_secs(10),
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(RpcError::Handshake(_)
                | RpcError::Io(_)
                | RpcError::Closed
                | RpcError::BadFrame(_))
        ),
        "plain-text RPC on the TLS port: {refused:?}"
    );
    // The server pings its own RPC listener over mutual TLS.
    let path = format!("/v1/agent/servers?address={}", agent.rpc);
    let (status, body) = https(&agent, client_config(&p, false), "PUT", &path)
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, ""));
    // A client presenting the server certificate is answered.
    let tls = rpc_client(&p, &p.cert, &p.key);
    let mut answered = Err(RpcError::Closed);
    for _ in 0..100 {
        answered = tls
            .call(agent.rpc, "Status.Ping", None, b"{}".to_vec())
            .await;
        if !matches!(answered, Err(RpcError::Io(_))) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(answered.is_ok(), "over mutual TLS: {answered:?}");
    // Raw plain-text bytes on the RPC port get no answer: the connection is closed.
    let mut tcp = tokio::net::TcpStream::connect(agent.rpc).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut buf),
    )
    .await
    .expect("the connection is closed within the handshake timeout");
    // A TLS server may answer garbage with a TLS alert record (content type 21), never with
    // anything else.
    assert!(
        read.is_err() || buf.is_empty() || buf[0] == 21,
        "answered: {buf:?}"
    );
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

/// H1 of the security review (the CVE-2021-37218 pattern): with `tls.rpc`, a certificate that
/// chains to the CA but names a client agent may not make server-only calls.
#[tokio::test]
async fn rpc_roles_come_from_certificate_names() {
    roles_follow_certificates(pki()).await;
}

/// The same checks with the CA and certificates `caravan tls ca create` and `caravan tls cert
/// create -server|-client` wrote, as an operator would make them.
#[tokio::test]
async fn certificates_from_the_cli_give_the_roles() {
    let dir = Scratch::new();
    let caravan = |args: &[&str]| {
        let out = std::process::Command::new(crate::support::caravan_bin())
            .args(args)
            .current_dir(&dir.0)
            .output()
            .expect("run caravan");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = caravan(&["tls", "ca", "create"]);
    assert_eq!(
        said,
        "==> CA certificate saved to: nomad-agent-ca.pem\n==> CA certificate key saved to: nomad-agent-ca-key.pem\n"
    );
    let said = caravan(&["tls", "cert", "create", "-server"]);
    assert!(
        said.contains("==> Server Certificate: global-server-nomad.pem"),
        "{said}"
    );
    caravan(&["tls", "cert", "create", "-client"]);
    // Keys are the user's only; nothing is overwritten.
    use std::os::unix::fs::PermissionsExt;
    for key in [
        "nomad-agent-ca-key.pem",
        "global-server-nomad-key.pem",
        "global-client-nomad-key.pem",
    ] {
        let mode = std::fs::metadata(dir.0.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    let again = std::process::Command::new(crate::support::caravan_bin())
        .args(["tls", "cert", "create", "-server"])
        .current_dir(&dir.0)
        .output()
        .expect("run caravan");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let path = |f: &str| dir.0.join(f).to_string_lossy().into_owned();
    roles_follow_certificates(Pki {
        ca: path("nomad-agent-ca.pem"),
        cert: path("global-server-nomad.pem"),
        key: path("global-server-nomad-key.pem"),
        client_cert: path("global-client-nomad.pem"),
        client_key: path("global-client-nomad-key.pem"),
        dir,
    })
    .await;
}

/// A server certificate passes every door, a client certificate every door but server-only.
async fn roles_follow_certificates(p: Pki) {
    use caravan_rpc::RpcError;
    let hcl = format!("{}acl {{\n  enabled = true\n}}\n", tls_hcl(&p, false));
    let agent = Agent::start_tls(&hcl, &p.dir).await;
    let node = rpc_client(&p, &p.client_cert, &p.client_key);
    let server = rpc_client(&p, &p.cert, &p.key);
    let call = async |c: &caravan_rpc::RpcClient, method: &str| {
        let mut last = None;
        // The agent may still be starting its RPC listener: retry transport errors briefly.
        for _ in 0..100 {
            match c.call(agent.rpc, method, None, b"{}".to_vec()).await {
                Err(RpcError::Io(e)) => last = Some(e),
                other => return other,
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{method}: {last:?}");
    };
    let refused = call(&node, "Raft.Vote").await.unwrap_err();
    assert!(
        matches!(&refused, RpcError::Remote { code: 403, .. }),
        "{refused:?}"
    );
    let refused = call(&node, "Eval.Dequeue").await.unwrap_err();
    assert!(
        matches!(&refused, RpcError::Remote { code: 403, .. }),
        "{refused:?}"
    );
    let gone = call(&node, "ACL.State").await.unwrap_err();
    assert!(
        matches!(&gone, RpcError::Remote { code: 404, .. }),
        "{gone:?}"
    );
    call(&node, "Status.Ping").await.unwrap();
    // The server certificate passes the door (the empty vote is then refused as malformed).
    let past = call(&server, "Raft.Vote").await.unwrap_err();
    assert!(
        matches!(
            &past,
            RpcError::Remote {
                code: 500 | 400,
                ..
            }
        ),
        "{past:?}"
    );
    // Every method, both certificates: only the server's makes server-only calls.
    use caravan_rpc::method::{Access, METHODS};
    for spec in METHODS.iter().filter(|m| !m.streaming) {
        let as_node = call(&node, spec.name).await;
        let as_server = call(&server, spec.name).await;
        let refused = |r: &Result<_, RpcError>| matches!(r, Err(RpcError::Remote { code: 403, message }) if message.contains("identity"));
        assert_eq!(
            refused(&as_node),
            spec.access == Access::Server,
            "client certificate, {}: {as_node:?}",
            spec.name
        );
        assert!(
            !refused(&as_server),
            "server certificate, {}: {as_server:?}",
            spec.name
        );
    }
}

/// The CLI reaches an https agent with Nomad's TLS variables, and refuses one it cannot verify.
#[tokio::test]
async fn the_cli_speaks_https_with_nomads_variables() {
    let p = pki();
    let agent = Agent::start_tls(&tls_hcl(&p, true), &p.dir).await;
    let addr = format!("https://127.0.0.1:{}", agent.http.port());
    let run = |env: Vec<(&'static str, String)>, flags: &'static [&'static str]| {
        let addr = addr.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut args = vec!["agent-info"];
                args.extend_from_slice(flags);
                let mut env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (*k, v.as_str())).collect();
                env.push(("NOMAD_ADDR", &addr));
                crate::support::run_caravan(&args, &env)
            })
            .await
            .unwrap()
        }
    };
    let with_cert = || {
        vec![
            ("NOMAD_CLIENT_CERT", p.client_cert.clone()),
            ("NOMAD_CLIENT_KEY", p.client_key.clone()),
        ]
    };
    let mut full = with_cert();
    full.push(("NOMAD_CACERT", p.ca.clone()));
    let out = run(full.clone(), &[]).await;
    let text = crate::support::stdout_ok(&out);
    assert!(text.contains("runtime\n"), "{text}");
    // No CA to verify the agent with: refused, naming the TLS failure.
    let out = run(with_cert(), &[]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TLS handshake"), "{stderr}");
    // ... unless told not to verify.
    let out = run(with_cert(), &["-tls-skip-verify"]).await;
    crate::support::stdout_ok(&out);
    // The agent asks for a client certificate: without one the call fails.
    let out = run(vec![("NOMAD_CACERT", p.ca.clone())], &[]).await;
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// One kept-alive HTTPS connection: what it sends requests over and the certificate the agent
/// presented when it was made.
async fn https_conn(
    agent: &Agent,
    config: Arc<ClientConfig>,
) -> (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    Vec<u8>,
) {
    let tcp = tokio::net::TcpStream::connect(agent.http).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    (tx, presented)
}

async fn send_on(
    tx: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    method: &str,
    path: &str,
) -> (u16, String) {
    tx.ready().await.unwrap();
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn der(pem_file: &str) -> Vec<u8> {
    CertificateDer::pem_file_iter(pem_file)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// A reload swaps the TLS certificate, key and CA: new HTTPS connections get the new
/// certificate (verified with the new CA), a connection made before goes on with the old one,
/// the agent's own mutual-TLS RPC uses the new pair; broken files are `500` and change nothing.
#[tokio::test]
async fn reload_swaps_certificates_for_new_connections() {
    let old = pki();
    let agent = Agent::start_tls(&tls_hcl(&old, false), &old.dir).await;
    let (mut before, presented) = https_conn(&agent, client_config(&old, false)).await;
    assert_eq!(presented, der(&old.cert));
    assert_eq!(send_on(&mut before, "GET", "/v1/agent/health").await.0, 200);

    // New CA, certificate and key, in the files the configuration names.
    let new = pki();
    let old_ca = std::fs::read(&old.ca).unwrap();
    for (from, to) in [
        (&new.ca, &old.ca),
        (&new.cert, &old.cert),
        (&new.key, &old.key),
    ] {
        std::fs::copy(from, to).unwrap();
    }
    let (status, body) = send_on(&mut before, "PUT", "/v1/agent/reload").await;
    assert_eq!((status, body.as_str()), (200, ""));
    let (mut after, presented) = https_conn(&agent, client_config(&old, false)).await;
    assert_eq!(
        presented,
        der(&new.cert),
        "a new connection gets the new certificate"
    );
    assert_eq!(send_on(&mut after, "GET", "/v1/agent/health").await.0, 200);
    assert_eq!(
        send_on(&mut before, "GET", "/v1/agent/health").await.0,
        200,
        "the connection made before the reload goes on"
    );
    // The old CA no longer verifies the agent.
    std::fs::write(new.dir.0.join("old-ca.pem"), &old_ca).unwrap();
    let stale = Pki {
        dir: Scratch::new(),
        ca: new.dir.0.join("old-ca.pem").display().to_string(),
        cert: old.cert.clone(),
        key: old.key.clone(),
        client_cert: old.client_cert.clone(),
        client_key: old.client_key.clone(),
    };
    assert!(
        https(
            &agent,
            client_config(&stale, false),
            "GET",
            "/v1/agent/health"
        )
        .await
        .is_err()
    );
    // The agent's own RPC (mutual TLS with the new pair): it pings itself.
    let path = format!("/v1/agent/servers?address={}", agent.rpc);
    assert_eq!(
        send_on(&mut after, "PUT", &path).await,
        (200, String::new())
    );
    // An RPC caller with the old client certificate (old CA) is refused; the new one answered.
    let fresh = rpc_client(&new, &new.client_cert, &new.client_key);
    assert!(
        fresh
            .call(agent.rpc, "Status.Ping", None, b"{}".to_vec())
            .await
            .is_ok()
    );

    // A key that does not parse: 500, and new connections still get the new certificate.
    std::fs::write(&old.key, "not a key").unwrap();
    let (status, body) = send_on(&mut after, "PUT", "/v1/agent/reload").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("tls.key_file"), "{body}");
    let (_, presented) = https_conn(&agent, client_config(&old, false)).await;
    assert_eq!(presented, der(&new.cert));
}
