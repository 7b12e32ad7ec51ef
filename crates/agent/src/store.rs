//! State kept in `data_dir`, written atomically: a temp file, fsync, rename, fsync of the
//! directory. An acknowledged write survives `kill -9`; a torn write never replaces what was there.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use caravan_agent_core::acl::AclState;

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// Loads ACL state, or an empty state when the file does not exist yet.
pub fn load_acl(path: &Path) -> Result<AclState, String> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("failed to load ACL state from {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AclState::default()),
        Err(e) => Err(format!(
            "failed to load ACL state from {}: {e}",
            path.display()
        )),
    }
}

/// Stores ACL state.
pub fn save_acl(path: &Path, state: &AclState) -> Result<(), String> {
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| e.to_string())?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_torn_temp_file() {
        let dir = std::env::temp_dir().join(format!("caravan-store-{}", uuid::Uuid::new_v4()));
        let path = dir.join("acl.json");
        assert_eq!(load_acl(&path).unwrap(), AclState::default());
        let mut s = AclState::default();
        s.bootstrap("a".into(), "b".into(), "t".into()).unwrap();
        save_acl(&path, &s).unwrap();
        // A crash mid-write leaves a torn temp file; the real file is untouched.
        fs::write(path.with_extension("tmp"), b"{\"policies\": {").unwrap();
        assert_eq!(load_acl(&path).unwrap(), s);
        fs::write(&path, b"garbage").unwrap();
        assert!(
            load_acl(&path)
                .unwrap_err()
                .contains("failed to load ACL state")
        );
        let _ = fs::remove_dir_all(dir);
    }
}
