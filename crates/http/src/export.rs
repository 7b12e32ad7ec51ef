//! `/v1/agent/monitor/export` (spec §12): the agent's log file, or its journald unit's journal,
//! as a stream of frames with a cumulative `Offset` (or plain bytes), ending at the end of what
//! there is unless the journal is followed.

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use crate::api::ExportRequest;
use crate::app::Caps;
use crate::dto::StreamFrame;
use crate::monitor::endpoint::{FLUSH_EVERY, FRAME_BYTES, HEARTBEAT_EVERY, streaming_response};
use crate::request::parse_bool;
use crate::response::Body;
use crate::{ApiError, Ctx};
use caravan_agent_core::acl::Acl;
use caravan_agent_core::config::AgentConfig;
use caravan_agent_core::debug::{DEFAULT_LOGS_SINCE, scan_service_name};
use caravan_agent_core::duration::parse_go_duration;

/// A boolean parameter as Nomad's `parseBool` reads it, its error under `what`.
fn flag(ctx: &Ctx, key: &str, what: &str) -> Result<bool, ApiError> {
    match ctx.query.get(key) {
        None | Some("") => Ok(false),
        Some(v) => parse_bool(v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Unknown value for {what}: Failed to parse value of {key:?} ({v}) as a bool: \
                 strconv.ParseBool: parsing {v:?}: invalid syntax"
            ))
        }),
    }
}

/// Validates the request in the spec's order, then streams this agent's logs or relays
/// another server's (`server_id`).
pub(crate) async fn export(caps: &Caps, ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let on_disk = flag(ctx, "on_disk", "on-disk")?;
    let follow = flag(ctx, "follow", "follow")?;
    let plain = flag(ctx, "plain", "plain")?;
    let logs_since = match ctx.query.get("logs_since") {
        None | Some("") => DEFAULT_LOGS_SINCE,
        Some(text) => parse_go_duration(text)
            .map_err(|e| ApiError::bad_request(format!("Unknown value for logs-since: {e}")))?,
    };
    let service_name = ctx.query.get("service_name").unwrap_or("").to_string();
    let node_id = ctx.query.get("node_id").unwrap_or("");
    let server_id = ctx.query.get("server_id").unwrap_or("");
    if !node_id.is_empty() && !server_id.is_empty() {
        return Err(ApiError::bad_request(
            "Cannot target node and server simultaneously",
        ));
    }
    if on_disk && !service_name.is_empty() {
        return Err(ApiError::bad_request(
            "Cannot target journald and nomad log file simultaneously",
        ));
    }
    if !on_disk && service_name.is_empty() {
        return Err(ApiError::bad_request(
            "Either -service-name or -on-disk must be set",
        ));
    }
    if on_disk && follow {
        return Err(ApiError::bad_request("Cannot follow log file"));
    }
    if !service_name.is_empty() {
        scan_service_name(&service_name)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    }
    let request = ExportRequest {
        on_disk,
        follow,
        plain,
        logs_since,
        service_name,
    };
    // As for monitor: a client-only agent serves its own logs whatever `server_id` says.
    let target = crate::monitor::endpoint::log_target(caps, ctx)?;
    caps.require(ctx.token.as_deref(), Acl::allow_agent_read)?;
    match target {
        Some(t) if t.is_remote() => {
            let rx = caps
                .forwarder()?
                .remote_export(t.remote(), ctx.token.as_deref(), request)
                .await?;
            Ok(crate::monitor::endpoint::relay(rx, plain))
        }
        _ => {
            check_target(caps.config(), &request)?;
            let rx = caps.debugging()?.export_logs(request).await?;
            Ok(stream(rx, plain))
        }
    }
}

/// The checks the serving agent makes of its own configuration: a log-file export needs a
/// `log_file` (`400 No nomad log file defined`). The agent RPC's `Agent.MonitorExport` makes
/// them too before it calls [`Debugging::export_logs`](crate::Debugging::export_logs).
pub fn check_target(config: &AgentConfig, request: &ExportRequest) -> Result<(), ApiError> {
    if request.on_disk && config.log_file.is_none() {
        return Err(ApiError::bad_request("No nomad log file defined"));
    }
    Ok(())
}

/// The streaming response for an export's bytes: JSON frames of at most
/// [`FRAME_BYTES`] of `Data`, each with the cumulative `Offset` (the bytes sent so far,
/// this frame's included), a `{}` heartbeat every second while nothing else is sent; or the
/// bytes themselves with `plain`. The response ends when `rx` does.
pub fn stream(rx: mpsc::Receiver<Bytes>, plain: bool) -> Response<Body> {
    let (tx, body) = http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(16);
    tokio::spawn(pump(rx, plain, tx));
    streaming_response(body.boxed(), plain)
}

fn frame(offset: u64, data: &[u8]) -> Bytes {
    let data = base64::engine::general_purpose::STANDARD.encode(data);
    let frame = StreamFrame {
        offset: i64::try_from(offset).unwrap_or(i64::MAX),
        data: &data,
        file_event: "",
    };
    Bytes::from(serde_json::to_vec(&frame).unwrap_or_default())
}

/// Sends the frames `buf` holds: whole frames always, the rest too when `all`.
async fn send_frames(
    buf: &mut BytesMut,
    offset: &mut u64,
    all: bool,
    tx: &mut http_body_util::channel::Sender<Bytes, std::convert::Infallible>,
) -> Result<bool, ()> {
    let mut sent = false;
    while buf.len() >= FRAME_BYTES || (all && !buf.is_empty()) {
        let piece = buf.split_to(buf.len().min(FRAME_BYTES));
        *offset += piece.len() as u64;
        tx.send_data(frame(*offset, &piece)).await.map_err(|_| ())?;
        sent = true;
    }
    Ok(sent)
}

async fn pump(
    mut rx: mpsc::Receiver<Bytes>,
    plain: bool,
    mut tx: http_body_util::channel::Sender<Bytes, std::convert::Infallible>,
) {
    let mut buf = BytesMut::new();
    let mut offset = 0u64;
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + HEARTBEAT_EVERY,
        HEARTBEAT_EVERY,
    );
    let mut sent_since_heartbeat = false;
    loop {
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Some(chunk) if plain => {
                    if tx.send_data(chunk).await.is_err() {
                        return;
                    }
                }
                Some(chunk) => {
                    buf.extend_from_slice(&chunk);
                    match send_frames(&mut buf, &mut offset, false, &mut tx).await {
                        Ok(sent) => sent_since_heartbeat |= sent,
                        Err(()) => return,
                    }
                }
                None => {
                    let _ = send_frames(&mut buf, &mut offset, true, &mut tx).await;
                    return;
                }
            },
            _ = flush.tick() => match send_frames(&mut buf, &mut offset, true, &mut tx).await {
                Ok(sent) => sent_since_heartbeat |= sent,
                Err(()) => return,
            },
            _ = heartbeat.tick() => {
                // Plain streams have no heartbeat; an empty chunk (which hyper does not write)
                // still finds out that the client left, so a followed journal that says
                // nothing does not keep its reader forever.
                let beat = if plain {
                    Bytes::new()
                } else {
                    Bytes::from_static(b"{}")
                };
                if (plain || !sent_since_heartbeat) && tx.send_data(beat).await.is_err() {
                    return;
                }
                sent_since_heartbeat = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(resp: Response<Body>) -> Vec<u8> {
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    fn frames(raw: &[u8]) -> Vec<serde_json::Value> {
        serde_json::Deserializer::from_slice(raw)
            .into_iter::<serde_json::Value>()
            .map(Result::unwrap)
            .collect()
    }

    #[tokio::test]
    async fn frames_carry_the_cumulative_offset_and_end_with_the_source() {
        let (tx, rx) = mpsc::channel(4);
        let text: Vec<u8> = (0..2500u32).map(|i| b'a' + (i % 26) as u8).collect();
        tx.send(Bytes::from(text[..1500].to_vec())).await.unwrap();
        tx.send(Bytes::from(text[1500..].to_vec())).await.unwrap();
        drop(tx);
        let resp = stream(rx, false);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let got = frames(&collect(resp).await);
        let offsets: Vec<i64> = got.iter().map(|f| f["Offset"].as_i64().unwrap()).collect();
        assert_eq!(offsets, [1024, 2048, 2500]);
        let engine = base64::engine::general_purpose::STANDARD;
        let data: Vec<u8> = got
            .iter()
            .flat_map(|f| engine.decode(f["Data"].as_str().unwrap()).unwrap())
            .collect();
        assert_eq!(data, text);
        assert!(
            got.iter()
                .all(|f| f.get("FileEvent").is_none() && f.get("File").is_none())
        );
    }

    #[tokio::test]
    async fn plain_exports_are_the_bytes() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Bytes::from_static(b"line one\n")).await.unwrap();
        tx.send(Bytes::from_static(b"line two\n")).await.unwrap();
        drop(tx);
        let resp = stream(rx, true);
        assert_eq!(resp.headers()["content-type"], "text/plain");
        assert_eq!(collect(resp).await, b"line one\nline two\n");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_source_gets_heartbeats_and_a_partial_frame_is_flushed() {
        let (tx, rx) = mpsc::channel(4);
        let resp = stream(rx, false);
        let mut body = resp.into_body();
        tx.send(Bytes::from_static(b"short")).await.unwrap();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(frames(&first)[0]["Offset"], 5);
        tokio::time::sleep(HEARTBEAT_EVERY * 2).await;
        let beat = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&beat[..], b"{}");
        drop(tx);
        assert!(body.frame().await.is_none());
    }
}
