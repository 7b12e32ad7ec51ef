//! The agent's log file as Nomad keeps it (`log_file`, `log_rotate_bytes`,
//! `log_rotate_duration`, `log_rotate_max_files`): where it lives, when it rotates, what a
//! rotated file is called and which rotated files are pruned. The writer that does the I/O is
//! the agent's; these are its rules, with the time and the directory listing passed in.

use std::time::Duration;

/// The file name used when `log_file` names a directory (ends with `/`), as in Nomad.
pub const DEFAULT_FILE_NAME: &str = "nomad.log";

/// The rotation period when `log_rotate_duration` is not set: a day, as in Nomad.
pub const DEFAULT_ROTATE_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The resolved `log_file` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFileConfig {
    /// `log_file` as configured.
    pub path: String,
    /// The directory part of `path` (may be empty: the working directory).
    pub dir: String,
    /// The active file's name ([`DEFAULT_FILE_NAME`] when `path` names a directory).
    pub file_name: String,
    /// Rotate once the active file holds this many bytes; 0: no size limit.
    pub rotate_bytes: u64,
    /// Rotate once the active file is this old.
    pub rotate_duration: Duration,
    /// Rotated files kept (the oldest beyond it are removed); 0: all.
    pub max_files: usize,
}

impl LogFileConfig {
    /// Splits `path` as Go's `filepath.Split` does (the directory keeps its trailing `/`).
    pub fn new(
        path: &str,
        rotate_bytes: u64,
        rotate_duration: Duration,
        max_files: usize,
    ) -> LogFileConfig {
        let (dir, name) = match path.rfind('/') {
            Some(at) => (&path[..=at], &path[at + 1..]),
            None => ("", path),
        };
        let file_name = if name.is_empty() {
            DEFAULT_FILE_NAME
        } else {
            name
        };
        LogFileConfig {
            path: path.to_string(),
            dir: dir.to_string(),
            file_name: file_name.to_string(),
            rotate_bytes,
            rotate_duration,
            max_files,
        }
    }

    /// The active file's path: `dir` joined with `file_name`.
    pub fn active_path(&self) -> String {
        format!("{}{}", self.dir, self.file_name)
    }

    /// The name part before and after the rotation stamp: `nomad.log` → (`nomad-`, `.log`); a
    /// name without an extension gets `.log` (`agent` → `agent-<stamp>.log`), as in Nomad.
    fn stem_and_ext(&self) -> (String, String) {
        let name = &self.file_name;
        // Go's `filepath.Ext`: from the last dot; none gives `.log`.
        let ext = name.rfind('.').map_or(".log", |at| &name[at..]);
        let stem = name.strip_suffix(ext).unwrap_or(name);
        (format!("{stem}-"), ext.to_string())
    }

    /// The name the active file is renamed to when it rotates at `unix_nanos` (the time in
    /// nanoseconds since the epoch): `nomad-1700000000000000000.log`.
    pub fn rotated_name(&self, unix_nanos: u128) -> String {
        let (stem, ext) = self.stem_and_ext();
        format!("{stem}{unix_nanos}{ext}")
    }

    /// Whether `name` is one of this log's rotated files (`<stem>-<digits><ext>`). Nomad matches
    /// any `<stem>-*<ext>`; the digits keep an operator's `nomad-old.log` safe from pruning.
    pub fn is_rotated(&self, name: &str) -> bool {
        let (stem, ext) = self.stem_and_ext();
        name.strip_prefix(&stem)
            .and_then(|rest| rest.strip_suffix(&ext))
            .is_some_and(|stamp| !stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit()))
    }

    /// Whether the active file rotates before the next write: it holds `bytes_written` bytes
    /// (a size limit is set and reached) or was created `age` ago (the period passed). As in
    /// Nomad, the check comes before a write, so a file can pass the limit by one write.
    pub fn should_rotate(&self, bytes_written: u64, age: Duration) -> bool {
        (self.rotate_bytes > 0 && bytes_written >= self.rotate_bytes) || age >= self.rotate_duration
    }

    /// Of the names in the log's directory, the rotated files to remove so that at most
    /// `max_files` are kept: the oldest (their stamps sort first), none when `max_files` is 0.
    pub fn to_prune<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        if self.max_files == 0 {
            return Vec::new();
        }
        let mut rotated: Vec<&str> = names.into_iter().filter(|n| self.is_rotated(n)).collect();
        // Same-width stamps sort by time; a shorter stamp (an older epoch) sorts first.
        rotated.sort_by(|a, b| a.len().cmp(&b.len()).then(a.cmp(b)));
        let stale = rotated.len().saturating_sub(self.max_files);
        rotated[..stale].iter().map(|n| n.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(path: &str, bytes: u64, max: usize) -> LogFileConfig {
        LogFileConfig::new(path, bytes, DEFAULT_ROTATE_DURATION, max)
    }

    #[test]
    fn paths_split_as_go_does() {
        let c = cfg("/var/log/caravan/", 0, 0);
        assert_eq!(
            (c.dir.as_str(), c.file_name.as_str()),
            ("/var/log/caravan/", "nomad.log")
        );
        assert_eq!(c.active_path(), "/var/log/caravan/nomad.log");
        let c = cfg("/var/log/agent.log", 0, 0);
        assert_eq!(c.active_path(), "/var/log/agent.log");
        let c = cfg("agent.log", 0, 0);
        assert_eq!(
            (c.dir.as_str(), c.active_path().as_str()),
            ("", "agent.log")
        );
    }

    #[test]
    fn rotated_names_follow_nomad() {
        assert_eq!(cfg("/l/nomad.log", 0, 0).rotated_name(17), "nomad-17.log");
        assert_eq!(cfg("/l/agent", 0, 0).rotated_name(17), "agent-17.log");
        assert_eq!(cfg("/l/a.b.txt", 0, 0).rotated_name(5), "a.b-5.txt");
        let c = cfg("/l/nomad.log", 0, 0);
        assert!(c.is_rotated("nomad-1700000000000000000.log"));
        for other in [
            "nomad.log",
            "nomad-.log",
            "nomad-old.log",
            "nomad-1.txt",
            "x-1.log",
        ] {
            assert!(!c.is_rotated(other), "{other}");
        }
    }

    #[test]
    fn rotation_by_size_or_age() {
        let c = LogFileConfig::new("/l/", 100, Duration::from_secs(60), 0);
        assert!(!c.should_rotate(99, Duration::from_secs(59)));
        assert!(c.should_rotate(100, Duration::ZERO));
        assert!(c.should_rotate(0, Duration::from_secs(60)));
        let unlimited = LogFileConfig::new("/l/", 0, Duration::from_secs(60), 0);
        assert!(!unlimited.should_rotate(u64::MAX, Duration::ZERO));
    }

    #[test]
    fn pruning_keeps_the_newest() {
        let c = cfg("/l/nomad.log", 0, 2);
        let names = [
            "nomad-300.log",
            "nomad.log",
            "nomad-100.log",
            "nomad-old.log",
            "nomad-200.log",
            "nomad-99.log",
        ];
        assert_eq!(c.to_prune(names), ["nomad-99.log", "nomad-100.log"]);
        assert!(cfg("/l/nomad.log", 0, 0).to_prune(names).is_empty());
        assert!(cfg("/l/nomad.log", 0, 9).to_prune(names).is_empty());
    }
}
