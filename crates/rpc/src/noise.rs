//! The Noise layer used when `tls.rpc` is off: a handshake from the `snow` crate, then every byte
//! of the connection encrypted and authenticated (ChaCha20-Poly1305), so forwarded tokens never
//! cross in clear.
//!
//! The caller opens with a clear preamble: the magic `CRV1`, a mode byte, and for
//! [`MODE_SERVER_KEY`] the 8-byte id of the server key it uses. The preamble is the handshake's
//! prologue, so changing it in flight breaks the handshake.
//! - [`MODE_ANONYMOUS`]: `Noise_NN_25519_ChaChaPoly_BLAKE2s`, encryption without authentication.
//! - [`MODE_SERVER_KEY`]: `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s` with the server key as the
//!   pre-shared key: both sides prove they hold it, or the handshake fails.
//!
//! Transport messages are `[u16 big-endian length][ciphertext]`, at most 65,535 bytes each.

use std::sync::Arc;

use snow::{HandshakeState, StatelessTransportState};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

use crate::RpcError;
use crate::identity::{Proof, Role, ServerKey, Trust, key_id};

/// The preamble's first four bytes.
pub const MAGIC: &[u8; 4] = b"CRV1";
/// Mode byte: anonymous, encrypted.
pub const MODE_ANONYMOUS: u8 = 0;
/// Mode byte: the caller proves a server key.
pub const MODE_SERVER_KEY: u8 = 1;

const NN: &str = "Noise_NN_25519_ChaChaPoly_BLAKE2s";
const NN_PSK: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";

/// The largest Noise message.
const MAX_MESSAGE: usize = 65_535;
/// The AEAD tag on every message.
const TAG: usize = 16;
/// The most plaintext one transport message carries.
const MAX_PAYLOAD: usize = MAX_MESSAGE - TAG;

fn noise_err(e: impl std::fmt::Display) -> RpcError {
    RpcError::Handshake(e.to_string())
}

fn builder(pattern: &str) -> Result<snow::Builder<'static>, RpcError> {
    let params = pattern.parse().map_err(noise_err)?;
    Ok(snow::Builder::new(params))
}

async fn write_message<W: AsyncWrite + Unpin>(w: &mut W, msg: &[u8]) -> Result<(), RpcError> {
    let len = u16::try_from(msg.len()).map_err(|_| RpcError::BadFrame("noise message".into()))?;
    let mut out = Vec::with_capacity(2 + msg.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    w.write_all(&out).await.map_err(RpcError::io)
}

async fn read_message<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<usize, RpcError> {
    let len = usize::from(r.read_u16().await.map_err(RpcError::io)?);
    let slot = buf
        .get_mut(..len)
        .ok_or_else(|| RpcError::BadFrame("noise message too long".into()))?;
    r.read_exact(slot).await.map_err(RpcError::io)?;
    Ok(len)
}

/// Runs the caller's side of the handshake on `io` and returns the encrypted stream.
pub async fn initiate<T>(mut io: T, key: Option<&ServerKey>) -> Result<DuplexStream, RpcError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut preamble = MAGIC.to_vec();
    let mut hs = match key {
        Some(key) => {
            preamble.push(MODE_SERVER_KEY);
            preamble.extend_from_slice(&key_id(key));
            builder(NN_PSK)?
                .prologue(&preamble)
                .and_then(|b| b.psk(0, key))
                .and_then(|b| b.build_initiator())
                .map_err(noise_err)?
        }
        None => {
            preamble.push(MODE_ANONYMOUS);
            builder(NN)?
                .prologue(&preamble)
                .and_then(|b| b.build_initiator())
                .map_err(noise_err)?
        }
    };
    io.write_all(&preamble).await.map_err(RpcError::io)?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = hs.write_message(&[], &mut buf).map_err(noise_err)?;
    write_message(&mut io, &buf[..n]).await?;
    let n = read_message(&mut io, &mut buf).await?;
    let mut payload = vec![0u8; MAX_MESSAGE];
    hs.read_message(&buf[..n], &mut payload)
        .map_err(|_| RpcError::Handshake("the server does not hold our key".into()))?;
    finish(io, hs)
}

/// Runs the server's side of the handshake (from the preamble on); returns the encrypted stream
/// and the role the caller proved.
pub async fn respond<T>(
    mut io: T,
    trust: &Trust,
) -> Result<(DuplexStream, Role, Proof, Option<[u8; 8]>), RpcError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut magic = [0u8; 4];
    io.read_exact(&mut magic).await.map_err(RpcError::io)?;
    if &magic != MAGIC {
        return Err(RpcError::Handshake("not a Caravan RPC caller".into()));
    }
    let mode = io.read_u8().await.map_err(RpcError::io)?;
    let mut preamble = MAGIC.to_vec();
    preamble.push(mode);
    let (mut hs, role, proof, used) = match mode {
        MODE_ANONYMOUS => {
            let hs = builder(NN)?
                .prologue(&preamble)
                .and_then(|b| b.build_responder())
                .map_err(noise_err)?;
            (hs, Role::Anonymous, Proof::Nothing, None)
        }
        MODE_SERVER_KEY => {
            let mut id = [0u8; 8];
            io.read_exact(&mut id).await.map_err(RpcError::io)?;
            preamble.extend_from_slice(&id);
            let key = trust
                .keys
                .by_id(&id)
                .ok_or_else(|| RpcError::Handshake("unknown server key".into()))?;
            let hs = builder(NN_PSK)?
                .prologue(&preamble)
                .and_then(|b| b.psk(0, &key))
                .and_then(|b| b.build_responder())
                .map_err(noise_err)?;
            (hs, Role::Server, Proof::ServerKey, Some(id))
        }
        other => return Err(RpcError::Handshake(format!("unknown mode {other}"))),
    };
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut payload = vec![0u8; MAX_MESSAGE];
    let n = read_message(&mut io, &mut buf).await?;
    hs.read_message(&buf[..n], &mut payload)
        .map_err(|_| RpcError::Handshake("the caller does not hold the server key".into()))?;
    let n = hs.write_message(&[], &mut buf).map_err(noise_err)?;
    write_message(&mut io, &buf[..n]).await?;
    Ok((finish(io, hs)?, role, proof, used))
}

fn finish<T>(io: T, hs: HandshakeState) -> Result<DuplexStream, RpcError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = hs.into_stateless_transport_mode().map_err(noise_err)?;
    Ok(spawn_pump(io, Arc::new(state)))
}

/// Moves bytes between the application's side of a pipe and the network, encrypting one way and
/// decrypting the other. When either direction ends, both do.
fn spawn_pump<T>(io: T, state: Arc<StatelessTransportState>) -> DuplexStream
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (app, pump) = tokio::io::duplex(2 * MAX_MESSAGE);
    tokio::spawn(async move {
        let (mut net_r, mut net_w) = tokio::io::split(io);
        let (mut app_r, mut app_w) = tokio::io::split(pump);
        let decrypt = state.clone();
        let inbound = async move {
            let mut frame = vec![0u8; MAX_MESSAGE];
            let mut plain = vec![0u8; MAX_MESSAGE];
            let mut nonce = 0u64;
            loop {
                let n = read_message(&mut net_r, &mut frame).await?;
                let len = decrypt
                    .read_message(nonce, &frame[..n], &mut plain)
                    .map_err(|_| RpcError::BadFrame("message failed authentication".into()))?;
                nonce = nonce.checked_add(1).ok_or(RpcError::Closed)?;
                app_w.write_all(&plain[..len]).await.map_err(RpcError::io)?;
            }
        };
        let outbound = async move {
            let mut plain = vec![0u8; MAX_PAYLOAD];
            let mut frame = vec![0u8; MAX_MESSAGE];
            let mut nonce = 0u64;
            loop {
                let n = app_r.read(&mut plain).await.map_err(RpcError::io)?;
                if n == 0 {
                    let _ = net_w.shutdown().await;
                    return Ok::<(), RpcError>(());
                }
                let len = state
                    .write_message(nonce, &plain[..n], &mut frame)
                    .map_err(noise_err)?;
                nonce = nonce.checked_add(1).ok_or(RpcError::Closed)?;
                write_message(&mut net_w, &frame[..len]).await?;
            }
        };
        let result: Result<(), RpcError> = tokio::select! {
            r = inbound => r,
            r = outbound => r,
        };
        if let Err(e) = result {
            tracing::trace!(target: "rpc", error = %e, "noise stream ended");
        }
    });
    app
}
