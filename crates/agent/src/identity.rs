//! The agent's identities: the server ID and the client node ID, persisted under `data_dir`
//! (0600 files in 0700 directories, whatever the umask) and fresh per process in dev mode.

use std::path::Path;

use caravan_agent_core::config::AgentConfig;

/// The ID of `kind` (`server` or `client`) stored in `file` under the data directory; a new
/// UUID each time without one.
pub fn load(config: &AgentConfig, kind: &str, file: &str) -> Result<String, String> {
    match &config.data_dir {
        Some(dir) => load_or_create_id(&Path::new(dir).join(kind).join(file)),
        None => Ok(uuid::Uuid::new_v4().to_string()),
    }
}

/// Reads an ID file, or creates it with a new UUID (written atomically). State files are 0600
/// in 0700 directories, whatever the umask.
fn load_or_create_id(path: &Path) -> Result<String, String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    private_dir(dir)?;
    if let Ok(text) = std::fs::read_to_string(path) {
        let id = text.trim().to_string();
        if uuid::Uuid::parse_str(&id).is_ok() {
            private_file(path)?;
            return Ok(id);
        }
        // Never the contents: the file may hold a secret (the node's).
        return Err(format!("{}: not a valid UUID", path.display()));
    }
    let id = uuid::Uuid::new_v4().to_string();
    write_private_atomically(path, id.as_bytes())?;
    Ok(id)
}

/// Sets an existing state file to 0600 and its directory to 0700 again (a file restored from a
/// backup keeps no mode of ours).
pub(crate) fn private_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    private_dir(path.parent().unwrap_or(Path::new(".")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Replaces `path` with `data` (a temporary file renamed over it), 0600 in a 0700 directory.
pub(crate) fn write_private_atomically(path: &Path, data: &[u8]) -> Result<(), String> {
    private_dir(path.parent().unwrap_or(Path::new(".")))?;
    let tmp = path.with_extension("tmp");
    write_private(&tmp, data)?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    // The rename itself survives a power loss only once the directory is synced.
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// Creates `dir` (and missing parents) and makes it 0700.
fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    file.write_all(data).map_err(err)?;
    file.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_persist() {
        let dir = std::env::temp_dir().join(format!("caravan-id-{}", uuid::Uuid::new_v4()));
        let path = dir.join("server").join("node-id");
        let a = load_or_create_id(&path).unwrap();
        let b = load_or_create_id(&path).unwrap();
        assert_eq!(a, b);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600, "the ID file is the owner's only");
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        std::fs::write(&path, "garbage").unwrap();
        assert!(
            load_or_create_id(&path)
                .unwrap_err()
                .contains("not a valid UUID")
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
