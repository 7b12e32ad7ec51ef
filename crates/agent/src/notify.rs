//! systemd's service notification (`sd_notify`): `READY=1` once the agent serves HTTP and its
//! `/v1/agent/health` answers `200`, `STOPPING=1` when it starts shutting down. Messages go to the
//! datagram socket `NOTIFY_SOCKET` names (a path, or `@name` in the abstract namespace); without
//! the variable nothing is sent, and a failed send is logged, never fatal.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// How often readiness is checked until the agent is healthy.
const READY_POLL: Duration = Duration::from_millis(250);

/// Where notifications go, when the service manager asked for them.
pub struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for; `None` without it (or when it cannot be used, which
    /// is logged).
    pub fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let name = name.to_string_lossy().into_owned();
        match Notifier::to(&name) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(target: "agent", socket = %name, error = %e, "NOTIFY_SOCKET unusable; no service notifications");
                None
            }
        }
    }

    fn to(name: &str) -> std::io::Result<Notifier> {
        let to = match name.strip_prefix('@') {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(abstract_name.as_bytes())?
            }
            None => SocketAddr::from_pathname(name)?,
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            to,
        })
    }

    /// Sends one state (`READY=1`, `STOPPING=1`, …).
    pub fn send(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.to) {
            tracing::warn!(target: "agent", state, error = %e, "service notification not sent");
        }
    }

    /// Sends `READY=1` once `app` answers `GET /v1/agent/health` with `200` (checked every
    /// quarter second; a task, so start-up does not wait for it).
    pub fn ready_when_healthy(self: std::sync::Arc<Self>, app: caravan_http::App) {
        tokio::spawn(async move {
            loop {
                if healthy(&app).await {
                    self.send("READY=1\nSTATUS=agent healthy");
                    tracing::debug!(target: "agent", "told the service manager the agent is ready");
                    return;
                }
                tokio::time::sleep(READY_POLL).await;
            }
        });
    }
}

async fn healthy(app: &caravan_http::App) -> bool {
    let request =
        http::Request::get("/v1/agent/health").body(http_body_util::Empty::<bytes::Bytes>::new());
    match request {
        Ok(request) => app.handle(request).await.status() == http::StatusCode::OK,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_reach_a_path_socket_and_an_abstract_one() {
        let dir = std::env::temp_dir().join(format!("caravan-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        Notifier::to(path.to_str().unwrap())
            .unwrap()
            .send("READY=1");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("caravan-notify-test-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt;
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::to(&format!("@{name}"))
            .unwrap()
            .send("STOPPING=1");
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
