//! yamux over an authenticated stream: one task drives the connection; [`Session`] handles open
//! outbound streams through it, and inbound streams arrive on a bounded channel. Dropping every
//! [`Session`] handle closes the connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

use crate::RpcError;

/// A yamux stream with tokio's I/O traits.
pub type MuxStream = Compat<yamux::Stream>;

type OpenReply = oneshot::Sender<Result<yamux::Stream, yamux::ConnectionError>>;

/// Most streams open at once on one connection, each way.
pub const MAX_STREAMS: usize = 64;

/// Outbound streams open at once on one connection (half the stream limit: the other side may
/// open streams too).
pub const MAX_OUTBOUND: usize = MAX_STREAMS / 2;

/// Inbound streams waiting for the server to take them; more are reset.
const INBOUND_BACKLOG: usize = 64;

/// A handle on one multiplexed connection.
#[derive(Clone)]
pub struct Session {
    opens: mpsc::Sender<OpenReply>,
    closed: Arc<AtomicBool>,
    close: Arc<CloseRequest>,
    /// One permit per outbound stream open at once: more calls wait for a stream to end
    /// instead of exceeding yamux's stream limit (which would fail the whole connection).
    streams: Arc<Semaphore>,
}

/// An outbound stream and the permit it holds until it is dropped.
pub type Opened = (MuxStream, OwnedSemaphorePermit);

/// Asks the driver to close the connection even while other handles exist.
#[derive(Default)]
struct CloseRequest {
    asked: AtomicBool,
    waker: AtomicWaker,
}

impl Session {
    /// Opens a stream to the other side, waiting while [`MAX_OUTBOUND`] of ours are open.
    pub async fn open(&self) -> Result<Opened, RpcError> {
        let permit = self
            .streams
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| RpcError::Closed)?;
        let (tx, rx) = oneshot::channel();
        self.opens.send(tx).await.map_err(|_| RpcError::Closed)?;
        match rx.await {
            Ok(Ok(stream)) => Ok((stream.compat(), permit)),
            Ok(Err(e)) => Err(RpcError::Io(e.to_string())),
            Err(_) => Err(RpcError::Closed),
        }
    }

    /// Closes the connection (every handle sees it closed).
    pub fn close(&self) {
        self.close.asked.store(true, Ordering::Release);
        self.close.waker.wake();
    }

    /// Resolves once the connection's driver has stopped.
    pub async fn closed(&self) {
        self.opens.closed().await
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.opens.is_closed()
    }
}

fn config() -> yamux::Config {
    let mut c = yamux::Config::default();
    // Bounds what a peer can make us buffer: 64 streams with the default 256 KiB window each.
    // (In this order: each setter asserts the window covers every stream's default credit.)
    c.set_max_num_streams(MAX_STREAMS);
    c.set_max_connection_receive_window(Some(MAX_STREAMS * yamux::DEFAULT_CREDIT as usize));
    c
}

/// Starts driving `io` as the dialing (`client`) or accepting side; returns the handle and the
/// inbound streams.
pub fn start<T>(io: T, client: bool) -> (Session, mpsc::Receiver<MuxStream>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mode = if client {
        yamux::Mode::Client
    } else {
        yamux::Mode::Server
    };
    let conn = yamux::Connection::new(io.compat(), config(), mode);
    let (open_tx, open_rx) = mpsc::channel(MAX_STREAMS);
    let (in_tx, in_rx) = mpsc::channel(INBOUND_BACKLOG);
    let closed = Arc::new(AtomicBool::new(false));
    let close = Arc::new(CloseRequest::default());
    tokio::spawn(drive(conn, open_rx, in_tx, closed.clone(), close.clone()));
    (
        Session {
            opens: open_tx,
            closed,
            close,
            streams: Arc::new(Semaphore::new(MAX_OUTBOUND)),
        },
        in_rx,
    )
}

async fn drive<T>(
    mut conn: yamux::Connection<Compat<T>>,
    mut opens: mpsc::Receiver<OpenReply>,
    inbound: mpsc::Sender<MuxStream>,
    closed: Arc<AtomicBool>,
    close: Arc<CloseRequest>,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut waiting: Option<OpenReply> = None;
    let mut handles_gone = false;
    std::future::poll_fn(|cx| {
        loop {
            close.waker.register(cx.waker());
            if close.asked.load(Ordering::Acquire) {
                handles_gone = true;
            }
            if handles_gone {
                // Nobody can open streams any more: close the connection.
                return conn.poll_close(cx).map(|_| ());
            }
            if waiting.is_none() {
                match opens.poll_recv(cx) {
                    Poll::Ready(Some(reply)) => waiting = Some(reply),
                    Poll::Ready(None) => {
                        handles_gone = true;
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            if let Some(reply) = waiting.take() {
                match conn.poll_new_outbound(cx) {
                    Poll::Ready(result) => {
                        // Only a dead connection ends the driver; a refused open fails that
                        // open alone.
                        let fatal = matches!(
                            result,
                            Err(yamux::ConnectionError::Closed
                                | yamux::ConnectionError::Io(_)
                                | yamux::ConnectionError::Decode(_))
                        );
                        let _ = reply.send(result);
                        if fatal {
                            return Poll::Ready(());
                        }
                        continue;
                    }
                    Poll::Pending => waiting = Some(reply),
                }
            }
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    // A full backlog (or nobody serving) resets the stream by dropping it.
                    let _ = inbound.try_send(stream.compat());
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(target: "rpc", error = %e, "connection failed");
                    return Poll::Ready(());
                }
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    closed.store(true, Ordering::Release);
}
