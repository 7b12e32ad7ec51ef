//! Passing a whole API request to a server (spec §0.5, §0.8): the cluster routes (jobs,
//! evaluations, allocations, nodes, status, ACLs, operator, regions) of an agent that runs no
//! server go to one of its servers, and a request whose `region` is not this server's goes
//! to a server of that region (so do host, pprof and monitor, which target agents there).
//! The server that serves it runs this same application: its ACL check, its errors.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use crate::api::{ForwardedHead, ForwardedRequest};
use crate::app::Caps;
use crate::response::Body;
use crate::router::Route;
use crate::{ApiError, App, Ctx, Reply};

/// How many agents a request passed through before this one (a request extension the
/// application sets on requests it serves for another agent).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ForwardHops(pub(crate) u8);

/// The largest body chunk sent back for a forwarded request.
const CHUNK: usize = 256 * 1024;

/// Response headers a forwarded answer keeps (the others are this agent's to set).
const KEPT_HEADERS: [&str; 5] = [
    "content-type",
    "content-disposition",
    "x-nomad-index",
    "x-nomad-knownleader",
    "x-nomad-lastcontact",
];

fn is_cluster_route(route: &Route) -> bool {
    matches!(
        route,
        Route::Jobs
            | Route::Job(_)
            | Route::Evaluations
            | Route::Evaluation(_)
            | Route::Allocations
            | Route::Allocation(_)
            | Route::Nodes
            | Route::NodeHeartbeats
            | Route::Node(_)
            | Route::OperatorSnapshot
            | Route::OperatorRaftConfiguration
            | Route::OperatorAutopilotHealth
            | Route::StatusLeader
            | Route::StatusPeers
            | Route::Regions
            | Route::Acl(_)
    )
}

fn follows_region(route: &Route) -> bool {
    matches!(
        route,
        Route::Host | Route::Pprof(_) | Route::Monitor | Route::MonitorExport
    ) || is_cluster_route(route)
}

/// Where a request goes instead of being served here: `Some(Some(region))` to a server of
/// that region, `Some(None)` to any server (this agent runs none), `None` served here.
pub(crate) fn destination(caps: &Caps, ctx: &Ctx, route: &Route) -> Option<Option<String>> {
    caps.forwarding()?;
    if ctx.hops >= caravan_agent_core::client_rpc::MAX_FORWARD_HOPS {
        return None;
    }
    let config = caps.config();
    let region = ctx
        .query
        .get("region")
        .filter(|r| !r.is_empty() && *r != config.region)
        .map(str::to_string);
    if !config.server.enabled && is_cluster_route(route) {
        return Some(region);
    }
    if follows_region(route) {
        return region.map(Some);
    }
    None
}

/// Passes the request on and relays the answer.
pub(crate) async fn forward(caps: &Caps, ctx: &Ctx, region: Option<String>) -> Reply {
    let request = ForwardedRequest {
        method: ctx.method.to_string(),
        path_and_query: crate::request_uri(ctx),
        content_type: None,
        hops: ctx.hops.saturating_add(1),
    };
    let (head, rx) = caps
        .forwarder()?
        .forward_request(
            region.as_deref(),
            request,
            ctx.body.clone(),
            ctx.token.as_deref(),
        )
        .await?;
    response_of(head, rx)
}

fn response_of(head: ForwardedHead, mut rx: mpsc::Receiver<Bytes>) -> Reply {
    let status = StatusCode::from_u16(head.status).map_err(|_| {
        ApiError::from_message(format!("forwarded answer: bad status {}", head.status))
    })?;
    let (mut tx, body) =
        http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(4);
    tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if tx.send_data(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut resp = Response::new(body.boxed());
    *resp.status_mut() = status;
    for (name, value) in head.headers {
        let name = name.to_ascii_lowercase();
        if !KEPT_HEADERS.contains(&name.as_str()) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            http::header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    // Relayed as it arrives (a log stream never ends), never collected to be compressed.
    resp.extensions_mut()
        .insert(crate::monitor::endpoint::Streaming);
    Ok(resp)
}

impl App {
    /// Serves a request another agent passed on (`HTTP.Forward`): the same routes, checks and
    /// errors as a request from a user, with the user's `token`. Answers the response head and
    /// its body in chunks (a stream keeps going until the receiver is dropped).
    pub async fn serve_forwarded(
        &self,
        request: ForwardedRequest,
        body: Bytes,
        token: Option<String>,
    ) -> Result<(ForwardedHead, mpsc::Receiver<Bytes>), ApiError> {
        let method = Method::from_bytes(request.method.as_bytes())
            .map_err(|_| ApiError::bad_request("forwarded request: bad method"))?;
        // Only what an agent passes on: the RPC port is no back door to the other routes
        // (joins, the server list, reloads), which the HTTP listener's own settings guard.
        let path = request.path_and_query.split('?').next().unwrap_or("");
        if !follows_region(&Route::of(path)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("forwarded request: {path} is not passed between agents"),
            ));
        }
        let mut builder = Request::builder()
            .method(method)
            .uri(&request.path_and_query)
            .extension(ForwardHops(request.hops));
        if let Some(token) = token {
            builder = builder.header("X-Nomad-Token", token);
        }
        if let Some(ct) = request.content_type {
            builder = builder.header(http::header::CONTENT_TYPE, ct);
        }
        let req = builder
            .body(http_body_util::Full::new(body))
            .map_err(|e| ApiError::bad_request(format!("forwarded request: {e}")))?;
        let resp = self.handle(req).await;
        let head = ForwardedHead {
            status: resp.status().as_u16(),
            headers: resp
                .headers()
                .iter()
                .filter_map(|(n, v)| Some((n.to_string(), v.to_str().ok()?.to_string())))
                .collect(),
        };
        let (tx, rx) = mpsc::channel(4);
        let mut body: Body = resp.into_body();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                for piece in data.chunks(CHUNK) {
                    if tx.send(Bytes::copy_from_slice(piece)).await.is_err() {
                        return; // the caller left: dropping the body ends a stream
                    }
                }
            }
        });
        Ok((head, rx))
    }
}
