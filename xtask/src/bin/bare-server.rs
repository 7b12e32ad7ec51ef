//! `bare-server PORT`: the baseline of `cargo xtask bench http`, hyper answering
//! `{"ok":true,"n":1234}` to every request on 127.0.0.1:PORT. A binary of its own, on the
//! system allocator: xtask runs on mimalloc (for the gossip simulator's threads), and the
//! baseline the agent is measured against stays what it was.

use std::convert::Infallible;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [port] => serve(port),
        _ => Err("usage: bare-server PORT".to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(port: &str) -> Result<(), String> {
    let port: u16 = port.parse().map_err(|_| format!("bad port {port}"))?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    let mut resp = Response::new(Full::new(Bytes::from_static(BARE_BODY)));
                    resp.headers_mut().insert(
                        "content-type",
                        "application/json"
                            .parse()
                            .unwrap_or_else(|_| unreachable!()),
                    );
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

const BARE_BODY: &[u8; 20] = br#"{"ok":true,"n":1234}"#;
