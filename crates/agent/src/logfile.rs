//! The log file (`log_file`): every line the agent logs to stdout, appended to a file that
//! rotates by size and age and keeps a bounded number of rotated files, with Nomad's naming
//! (the rules are `caravan_agent_core::logfile`'s); and the readers behind
//! `/v1/agent/monitor/export` — that file, or a journald unit's journal through `journalctl`.
//!
//! The file is mode 0600 (set again whenever it is opened) and a directory this module
//! creates is 0700: logs can name tokens' accessors, addresses and configuration.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use caravan_agent_core::config::LogFileConfig;
use caravan_agent_core::debug::ExportRequest;
use caravan_agent_core::duration::format_go_duration;
use caravan_http::ApiError;
use http::StatusCode;
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// The active log file and what rotation needs to know of it.
pub struct LogFile {
    config: LogFileConfig,
    file: File,
    /// Bytes in the active file (what was there when it was opened, plus what was written).
    written: u64,
    /// When the active file was created (its inode change time when opened, as in Nomad).
    created: SystemTime,
}

impl LogFile {
    /// Opens (or creates) the active file, creating its directory (0700) when missing.
    pub fn open(config: LogFileConfig) -> Result<LogFile, String> {
        let dir = dir_of(&config);
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| format!("failed to create log directory {}: {e}", dir.display()))?;
        }
        let (file, written, created) = open_active(&config)
            .map_err(|e| format!("failed to open log file {}: {e}", config.active_path()))?;
        Ok(LogFile {
            config,
            file,
            written,
            created,
        })
    }

    /// Appends one event's bytes, rotating first when the file is due (as Nomad, before the
    /// write: a file passes the size limit by at most one event).
    pub fn write_event(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let age = SystemTime::now()
            .duration_since(self.created)
            .unwrap_or(Duration::ZERO);
        if self.config.should_rotate(self.written, age) {
            self.rotate()?;
        }
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let dir = dir_of(&self.config);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let active = PathBuf::from(self.config.active_path());
        std::fs::rename(&active, dir.join(self.config.rotated_name(nanos)))?;
        let listing = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir.as_path()
        };
        let names: Vec<String> = std::fs::read_dir(listing)?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        for stale in self.config.to_prune(names.iter().map(String::as_str)) {
            std::fs::remove_file(dir.join(stale))?;
        }
        let (file, written, created) = open_active(&self.config)?;
        self.file = file;
        self.written = written;
        self.created = created;
        Ok(())
    }
}

fn dir_of(config: &LogFileConfig) -> PathBuf {
    PathBuf::from(&config.dir)
}

/// Opens the active file for appending, mode 0600: the file, its size and its creation time.
fn open_active(config: &LogFileConfig) -> std::io::Result<(File, u64, SystemTime)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(config.active_path())?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    let meta = file.metadata()?;
    let created = UNIX_EPOCH
        + Duration::new(
            u64::try_from(meta.ctime()).unwrap_or(0),
            u32::try_from(meta.ctime_nsec()).unwrap_or(0),
        );
    Ok((file, meta.len(), created))
}

/// A writer for the stdout log layer that also appends each event to the log file.
#[derive(Clone)]
pub struct Tee(pub Option<Arc<Mutex<LogFile>>>);

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stdout().write_all(buf)?;
        if let Some(file) = &self.0 {
            // A full disk must not stop the agent logging to stdout.
            let _ = file.lock().write_event(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

/// Bytes read per chunk of an export.
const CHUNK: usize = 64 * 1024;

/// The reader behind `/v1/agent/monitor/export`: the active log file, read to its end, or a
/// unit's journal. Reading stops when the receiver is dropped.
pub fn export(
    config: Option<&LogFileConfig>,
    request: &ExportRequest,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    if request.on_disk {
        let Some(config) = config else {
            return Err(ApiError::bad_request("No nomad log file defined"));
        };
        let file = File::open(config.active_path())
            .map_err(|e| ApiError::from_message(format!("open {}: {e}", config.active_path())))?;
        return spawn_reader(vec![Box::new(file)], None);
    }
    if !cfg!(target_os = "linux") {
        return Err(ApiError::from_message(
            "journald log monitoring only available on linux",
        ));
    }
    let mut child = Command::new("journalctl")
        .args(journalctl_args(request))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ApiError::from_message(format!("failed to run journalctl: {e}")))?;
    let mut readers: Vec<Box<dyn Read + Send>> = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(Box::new(out));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(Box::new(err));
    }
    spawn_reader(readers, Some(child))
}

/// `journalctl`'s arguments for a checked request, as Nomad builds them:
/// `-xu <unit> --since "<Go duration> ago"`, and `-f` to follow.
pub fn journalctl_args(request: &ExportRequest) -> Vec<String> {
    let mut args = vec![
        "-xu".to_string(),
        request.service_name.clone(),
        "--since".to_string(),
        format!("{} ago", format_go_duration(request.logs_since)),
    ];
    if request.follow {
        args.push("-f".into());
    }
    args
}

/// Reads `readers` one after the other (a command's stdout, then its stderr, as Go's
/// `io.MultiReader` does) into a channel on a thread of its own. A dropped receiver stops the
/// reading and kills `child`, which is then reaped.
fn spawn_reader(
    readers: Vec<Box<dyn Read + Send>>,
    child: Option<std::process::Child>,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let (tx, rx) = mpsc::channel(16);
    let child = Arc::new(Mutex::new(child));
    if child.lock().is_some() {
        // `follow` may leave the reader blocked with nothing to read: a watcher ends the
        // command once nobody listens.
        // The watcher holds no sender: the stream ends when the reader's does.
        let (watched, weak) = (child.clone(), tx.downgrade());
        spawn("log-export-watch", move || {
            loop {
                std::thread::sleep(Duration::from_millis(250));
                match weak.upgrade() {
                    None => return, // the reader is done (and reaps the command)
                    Some(tx) if tx.is_closed() => break,
                    Some(_) => {}
                }
            }
            if let Some(c) = watched.lock().as_mut() {
                let _ = c.kill();
            }
        })?;
    }
    spawn("log-export", move || {
        let mut buf = vec![0u8; CHUNK];
        'readers: for mut reader in readers {
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                            break 'readers;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::error!(target: "agent.export", error = %e, "unable to read logs");
                        break 'readers;
                    }
                }
            }
        }
        drop(tx);
        if let Some(mut c) = child.lock().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    })?;
    Ok(rx)
}

fn spawn(name: &str, work: impl FnOnce() + Send + 'static) -> Result<(), ApiError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(work)
        .map(|_| ())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use caravan_agent_core::debug::DEFAULT_LOGS_SINCE;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("caravan-logfile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn rotates_by_size_keeps_max_files_with_private_modes() {
        let dir = scratch("size");
        let path = format!("{}/logs/", dir.display());
        let config = LogFileConfig::new(&path, 10, Duration::from_secs(3600), 2);
        let mut log = LogFile::open(config).unwrap();
        let logs = dir.join("logs");
        assert_eq!(std::fs::metadata(&logs).unwrap().mode() & 0o777, 0o700);
        std::fs::write(logs.join("nomad-keep.log"), "mine").unwrap();
        for i in 0..5 {
            log.write_event(format!("line {i} of twelve\n").as_bytes())
                .unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        let names = files(&logs);
        // The active file plus the two newest rotated ones; the operator's file stays.
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(names.contains(&"nomad.log".to_string()));
        assert!(names.contains(&"nomad-keep.log".to_string()));
        assert_eq!(
            std::fs::read_to_string(logs.join("nomad.log")).unwrap(),
            "line 4 of twelve\n"
        );
        for name in &names {
            let mode = std::fs::metadata(logs.join(name)).unwrap().mode() & 0o777;
            if name != "nomad-keep.log" {
                assert_eq!(mode, 0o600, "{name}");
            }
        }
        let rotated: Vec<&String> = names.iter().filter(|n| n.starts_with("nomad-1")).collect();
        assert_eq!(rotated.len(), 2, "{names:?}");
        assert_eq!(
            std::fs::read_to_string(logs.join(rotated[1])).unwrap(),
            "line 3 of twelve\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn appends_to_an_existing_file_and_rotates_by_age() {
        let dir = scratch("age");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.log"), "old\n").unwrap();
        std::fs::set_permissions(dir.join("a.log"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let path = format!("{}/a.log", dir.display());
        // An age a stalled thread cannot pass between the open and the first write.
        let config = LogFileConfig::new(&path, 0, Duration::from_secs(1), 0);
        let mut log = LogFile::open(config).unwrap();
        assert_eq!(
            std::fs::metadata(dir.join("a.log")).unwrap().mode() & 0o777,
            0o600
        );
        log.write_event(b"new\n").unwrap();
        assert_eq!(files(&dir), ["a.log"]);
        assert_eq!(
            std::fs::read_to_string(dir.join("a.log")).unwrap(),
            "old\nnew\n"
        );
        std::thread::sleep(Duration::from_millis(1100));
        log.write_event(b"later\n").unwrap();
        let names = files(&dir);
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(
            std::fs::read_to_string(dir.join("a.log")).unwrap(),
            "later\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn journalctl_gets_nomads_arguments() {
        let mut r = ExportRequest {
            on_disk: false,
            follow: false,
            plain: false,
            logs_since: DEFAULT_LOGS_SINCE,
            service_name: "nomad.service".into(),
        };
        assert_eq!(
            journalctl_args(&r),
            ["-xu", "nomad.service", "--since", "72h0m0s ago"]
        );
        r.follow = true;
        r.logs_since = Duration::from_secs(90);
        assert_eq!(
            journalctl_args(&r),
            ["-xu", "nomad.service", "--since", "1m30s ago", "-f"]
        );
    }

    #[tokio::test]
    async fn an_export_reads_the_file_to_its_end() {
        let dir = scratch("export");
        std::fs::create_dir_all(&dir).unwrap();
        let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(dir.join("nomad.log"), &text).unwrap();
        let config = LogFileConfig::new(
            &format!("{}/", dir.display()),
            0,
            Duration::from_secs(60),
            0,
        );
        let request = ExportRequest {
            on_disk: true,
            follow: false,
            plain: true,
            logs_since: DEFAULT_LOGS_SINCE,
            service_name: String::new(),
        };
        let mut rx = export(Some(&config), &request).unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = rx.recv().await {
            got.extend_from_slice(&chunk);
        }
        assert_eq!(String::from_utf8(got).unwrap(), text);
        let e = export(None, &request).unwrap_err();
        assert_eq!(e.message, "No nomad log file defined");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
