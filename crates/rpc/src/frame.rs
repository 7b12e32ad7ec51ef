//! One call on one stream. The caller writes a header (`[u16 length][postcard RequestHeader]`)
//! and a body (`[u32 length][bytes]`); the callee answers with frames `[u8 kind][u32 length]
//! [payload]`: one [`KIND_OK`] or [`KIND_ERROR`], or for streaming methods [`KIND_CHUNK`]s ended
//! by [`KIND_END`] or [`KIND_ERROR`]. Every length is checked against its limit before anything
//! is read or allocated.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::RpcError;

/// The largest request header (method name and token).
pub const MAX_HEADER: usize = 512;

/// A whole reply.
pub const KIND_OK: u8 = 0;
/// A refusal or failure: postcard `(u16 code, String message)`.
pub const KIND_ERROR: u8 = 1;
/// One chunk of a streaming reply.
pub const KIND_CHUNK: u8 = 2;
/// The end of a streaming reply.
pub const KIND_END: u8 = 3;

/// What precedes a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHeader {
    /// `Service.Method`.
    pub method: String,
    /// The user's ACL token, for user-acting methods.
    pub token: Option<String>,
}

/// Writes a request.
pub async fn write_request<W: AsyncWrite + Unpin>(
    w: &mut W,
    header: &RequestHeader,
    body: &[u8],
) -> Result<(), RpcError> {
    let head = postcard::to_stdvec(header).map_err(|e| RpcError::BadFrame(e.to_string()))?;
    let head_len = u16::try_from(head.len())
        .ok()
        .filter(|&n| usize::from(n) <= MAX_HEADER)
        .ok_or(RpcError::TooLarge {
            what: "request header",
            limit: MAX_HEADER,
        })?;
    let body_len = u32::try_from(body.len()).map_err(|_| RpcError::TooLarge {
        what: "request",
        limit: u32::MAX as usize,
    })?;
    let mut out = Vec::with_capacity(6 + head.len() + body.len());
    out.extend_from_slice(&head_len.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&body_len.to_be_bytes());
    out.extend_from_slice(body);
    w.write_all(&out).await.map_err(RpcError::io)?;
    w.flush().await.map_err(RpcError::io)
}

/// Reads a request header.
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<RequestHeader, RpcError> {
    let len = usize::from(r.read_u16().await.map_err(RpcError::io)?);
    if len > MAX_HEADER {
        return Err(RpcError::TooLarge {
            what: "request header",
            limit: MAX_HEADER,
        });
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await.map_err(RpcError::io)?;
    postcard::from_bytes(&buf).map_err(|e| RpcError::BadFrame(e.to_string()))
}

/// Reads the body length; the caller checks it before [`read_exact_body`].
pub async fn read_body_len<R: AsyncRead + Unpin>(r: &mut R) -> Result<usize, RpcError> {
    let len = r.read_u32().await.map_err(RpcError::io)?;
    usize::try_from(len).map_err(|_| RpcError::BadFrame("body length".into()))
}

/// Reads exactly `len` bytes (already checked against the limit).
pub async fn read_exact_body<R: AsyncRead + Unpin>(
    r: &mut R,
    len: usize,
) -> Result<Vec<u8>, RpcError> {
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await.map_err(RpcError::io)?;
    Ok(buf)
}

/// Writes one reply frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: u8,
    payload: &[u8],
) -> Result<(), RpcError> {
    let len = u32::try_from(payload.len()).map_err(|_| RpcError::TooLarge {
        what: "reply",
        limit: u32::MAX as usize,
    })?;
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    w.write_all(&out).await.map_err(RpcError::io)?;
    w.flush().await.map_err(RpcError::io)
}

/// Writes a refusal or failure.
pub async fn write_error<W: AsyncWrite + Unpin>(
    w: &mut W,
    code: u16,
    message: &str,
) -> Result<(), RpcError> {
    let payload =
        postcard::to_stdvec(&(code, message)).map_err(|e| RpcError::BadFrame(e.to_string()))?;
    write_frame(w, KIND_ERROR, &payload).await
}

/// A reply frame as read.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole reply.
    Ok(Vec<u8>),
    /// A stream chunk.
    Chunk(Vec<u8>),
    /// The end of a stream.
    End,
}

/// Reads one reply frame of at most `max` bytes; an error frame becomes [`RpcError::Remote`].
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Frame, RpcError> {
    let kind = r.read_u8().await.map_err(|_| RpcError::Closed)?;
    let len = usize::try_from(r.read_u32().await.map_err(RpcError::io)?)
        .map_err(|_| RpcError::BadFrame("reply length".into()))?;
    // An error text is small whatever the method.
    let limit = if kind == KIND_ERROR { 64 * 1024 } else { max };
    if len > limit {
        return Err(RpcError::TooLarge {
            what: "reply",
            limit,
        });
    }
    let payload = read_exact_body(r, len).await?;
    match kind {
        KIND_OK => Ok(Frame::Ok(payload)),
        KIND_CHUNK => Ok(Frame::Chunk(payload)),
        KIND_END => Ok(Frame::End),
        KIND_ERROR => {
            let (code, message): (u16, String) =
                postcard::from_bytes(&payload).map_err(|e| RpcError::BadFrame(e.to_string()))?;
            Err(RpcError::Remote { code, message })
        }
        other => Err(RpcError::BadFrame(format!("unknown reply kind {other}"))),
    }
}
