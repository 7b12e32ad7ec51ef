//! A bad flag, file or combination exits non-zero with one line naming the problem (and the file
//! and line where there is one).

use crate::support::{Scratch, run_caravan};

fn fails_with(args: &[&str], want: &[&str]) {
    let out = run_caravan(args, &[]);
    assert!(!out.status.success(), "{args:?} should fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got {stderr:?}");
    for w in want {
        assert!(stderr.contains(w), "{args:?}: {stderr:?} lacks {w:?}");
    }
}

#[test]
fn unknown_key() {
    let s = Scratch::new();
    let f = s.write("a.hcl", "server {\n  enabled = true\n  bogus_key = 1\n}\n");
    fails_with(
        &["agent", "-dev", &format!("-config={f}")],
        &[&format!("{f}:3: unknown key server.bogus_key")],
    );
}

#[test]
fn syntax_error() {
    let s = Scratch::new();
    let f = s.write("a.hcl", "name = \"x\"\nports {\n  http = = 1\n}\n");
    fails_with(
        &["agent", "-dev", &format!("-config={f}")],
        &[&format!("{f}:3:")],
    );
}

#[test]
fn type_error() {
    let s = Scratch::new();
    let f = s.write("a.json", "{\"ports\": {\"http\": \"eighty\"}}");
    fails_with(
        &["agent", "-dev", &format!("-config={f}")],
        &[&f, "ports.http: invalid type"],
    );
}

/// A bad value names its key, and the file and line that set it, as a key error does.
#[test]
fn bad_values() {
    let cases = [
        ("log_level = \"loud\"\n", ":1: log_level"),
        (
            "server {\n  node_gc_threshold = \"2 days\"\n}\n",
            ":2: server.node_gc_threshold",
        ),
        (
            "server {\n  num_schedulers = 4096\n}\n",
            ":2: server.num_schedulers",
        ),
        (
            "server {\n  encrypt = \"c2hvcnQ=\"\n}\n",
            "key size must be 16, 24 or 32 bytes",
        ),
        ("bind_addr = \"nowhere\"\n", ":1: bind_addr"),
        (
            "ports {\n  http = 4646\n}\nlimits {\n  https_handshake_timeout = \"5\"\n}\n",
            ":5: limits.https_handshake_timeout",
        ),
        (
            "ports {\n  http = 4646\n}\nadvertise {\n  http = \"nope:x\"\n}\n",
            ":5: advertise.http",
        ),
    ];
    for (text, want) in cases {
        let s = Scratch::new();
        let f = s.write("a.hcl", text);
        fails_with(&["agent", "-dev", &format!("-config={f}")], &[want]);
    }
    // `config validate` names them alike.
    let s = Scratch::new();
    let f = s.write(
        "v.hcl",
        "server {\n  enabled = true\n  server_join {\n    retry_interval = \"zz\"\n  }\n}\n",
    );
    let out = run_caravan(&["config", "validate", &f], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!("{f}:4: server.server_join.retry_interval");
    assert!(
        stderr.contains(&want),
        "validate: {stderr:?} lacks {want:?}"
    );
    // The last file that sets a key is the one named; a flag names the command line.
    let s = Scratch::new();
    let first = s.write("1.hcl", "log_level = \"info\"\n");
    let second = s.write("2.hcl", "name = \"x\"\nlog_level = \"loud\"\n");
    fails_with(
        &[
            "agent",
            "-dev",
            &format!("-config={first}"),
            &format!("-config={second}"),
        ],
        &[&format!("{second}:2: log_level")],
    );
    fails_with(
        &[
            "agent",
            "-dev",
            &format!("-config={first}"),
            "-log-level=loud",
        ],
        &["the command line: log_level"],
    );
}

#[test]
fn impossible_combinations() {
    let s = Scratch::new();
    let dir = s.0.to_string_lossy().into_owned();
    fails_with(
        &["agent", &format!("-data-dir={dir}")],
        &["must specify either server, client or dev mode"],
    );
    fails_with(&["agent", "-server"], &["must specify \"data_dir\""]);
}

#[test]
fn missing_file_and_bad_flags() {
    fails_with(
        &["agent", "-dev", "-config=/nonexistent/x.hcl"],
        &["/nonexistent/x.hcl"],
    );
    fails_with(&["agent", "-dev", "-bogus"], &["--bogus"]);
    fails_with(&["agent", "-bootstrap-expect=many"], &["many"]);
}

#[test]
fn directories_merge_in_lexical_order() {
    // The later file's bad value wins over the earlier good one, proving order and merging.
    let s = Scratch::new();
    s.write("10-a.hcl", "log_level = \"INFO\"\n");
    s.write("20-b.json", "{\"log_level\": \"nope\"}");
    s.write("README.txt", "not config");
    let dir = s.0.to_string_lossy().into_owned();
    fails_with(
        &["agent", "-dev", &format!("-config={dir}")],
        &["log_level"],
    );
}
