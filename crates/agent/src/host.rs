//! Host data for `/v1/agent/host`: uname, interface addresses in go-sockaddr's attribute form,
//! resolv.conf, /etc/hosts, the redacted environment and disk usage.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use caravan_http::dto::{DiskUsage, HostData};

/// Gathers host data. Blocking (reads files and /proc); call it off the async workers.
pub fn gather() -> HostData {
    HostData {
        os: uname(),
        network: network(),
        resolv_conf: read_or_error("/etc/resolv.conf"),
        hosts: read_or_error("/etc/hosts"),
        environment: redacted_environment(std::env::vars_os().map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })),
        disk: disks(),
    }
}

/// `uname` fields joined by spaces: machine nodename release sysname version.
fn uname() -> String {
    let proc = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    [
        std::env::consts::ARCH.to_string(),
        proc("hostname"),
        proc("osrelease"),
        proc("ostype"),
        proc("version"),
    ]
    .join(" ")
}

fn read_or_error(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("open {path}: {e}"))
}

/// Environment variable names whose values are always redacted.
const REDACTED_NAMES: [&str; 17] = [
    "CONSUL_TOKEN",
    "CONSUL_HTTP_TOKEN",
    "CONSUL_HTTP_TOKEN_FILE",
    "NOMAD_TOKEN",
    "VAULT_TOKEN",
    "CONSUL_LICENSE",
    "NOMAD_LICENSE",
    "VAULT_LICENSE",
    "CONSUL_LICENSE_PATH",
    "NOMAD_LICENSE_PATH",
    "VAULT_LICENSE_PATH",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_METADATA_URL",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
];

/// Words that make a variable secret wherever they appear in its upper-cased name.
const SECRET_WORDS: [&str; 5] = ["TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE"];

/// Whether a variable's value is hidden: an exact listed name; or an upper-cased name that
/// contains `TOKEN`, `SECRET`, `PASSWORD`, `PASSWD` or `PASSPHRASE`, ends in `_KEY`
/// (`AWS_SECRET_KEY`, `STRIPE_API_KEY`), or is `KEY` itself. Other names merely containing `KEY`
/// (`KEYBOARD`, `MONKEY`, `KEY_FILE`, lower-case `aws_access_key_id`) are shown.
pub fn is_secret_name(name: &str) -> bool {
    if REDACTED_NAMES.contains(&name) {
        return true;
    }
    let upper = name.to_ascii_uppercase();
    SECRET_WORDS.iter().any(|w| upper.contains(w)) || upper == "KEY" || upper.ends_with("_KEY")
}

/// What a secret, or a URL's credentials, is replaced with.
pub const REDACTED: &str = "<redacted>";

/// `value` with the credentials of every URL in it (`scheme://user:pass@host`, or just
/// `scheme://user@host`) replaced by [`REDACTED`], keeping the scheme, host and the rest:
/// `postgres://<redacted>@db:5432/app`. `None` when there is none. The userinfo is what comes
/// before the last `@` of the authority (which ends at `/`, `?`, `#` or whitespace).
pub fn redact_url_credentials(value: &str) -> Option<String> {
    let mut out = String::new();
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = value[search..].find("://") {
        let sep = search + found;
        let authority_start = sep + 3;
        search = authority_start;
        let scheme = &value[..sep];
        let scheme_len = scheme
            .bytes()
            .rev()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
            .count();
        if scheme_len == 0 || !scheme.as_bytes()[sep - scheme_len].is_ascii_alphabetic() {
            continue;
        }
        let authority_len = value[authority_start..]
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(value.len() - authority_start);
        let authority = &value[authority_start..authority_start + authority_len];
        if let Some(at) = authority.rfind('@') {
            out.push_str(&value[copied..authority_start]);
            out.push_str(REDACTED);
            copied = authority_start + at;
        }
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&value[copied..]);
    Some(out)
}

/// The environment with secret values replaced by [`REDACTED`], and URL credentials in the
/// other values.
pub fn redacted_environment(
    vars: impl IntoIterator<Item = (String, String)>,
) -> BTreeMap<String, String> {
    vars.into_iter()
        .map(|(k, v)| {
            let v = if is_secret_name(&k) {
                REDACTED.to_string()
            } else {
                redact_url_credentials(&v).unwrap_or(v)
            };
            (k, v)
        })
        .collect()
}

fn network() -> Vec<BTreeMap<String, String>> {
    match sysinfo::Networks::new_with_refreshed_list() {
        Ok(networks) => {
            let mut out = Vec::new();
            let mut names: Vec<_> = networks.iter().collect();
            names.sort_by(|a, b| a.0.cmp(b.0));
            for (_, data) in names {
                for net in data.ip_networks() {
                    out.push(sockaddr_attrs(net.addr, net.prefix));
                }
            }
            out
        }
        Err(e) => vec![BTreeMap::from([("error".to_string(), e.to_string())])],
    }
}

/// go-sockaddr's attributes of an interface address (`address`, `binary`, `broadcast`, …) plus the
/// dial/listen argument pairs.
pub fn sockaddr_attrs(addr: IpAddr, prefix: u8) -> BTreeMap<String, String> {
    match addr {
        IpAddr::V4(ip) => v4_attrs(ip, prefix.min(32)),
        IpAddr::V6(ip) => v6_attrs(ip, prefix.min(128)),
    }
}

fn v4_attrs(ip: Ipv4Addr, prefix: u8) -> BTreeMap<String, String> {
    let value = u32::from(ip);
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    let network = value & mask;
    let broadcast = network | !mask;
    let (first, last) = if prefix >= 31 {
        (network, broadcast)
    } else {
        (network + 1, broadcast - 1)
    };
    let v4 = |v: u32| Ipv4Addr::from(v).to_string();
    let with_mask = |v: u32| {
        if prefix == 32 {
            v4(v)
        } else {
            format!("{}/{prefix}", v4(v))
        }
    };
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    put("address", v4(value));
    put("binary", format!("{value:032b}"));
    put("broadcast", v4(broadcast));
    put("first_usable", v4(first));
    put("hex", format!("{value:08x}"));
    put("host", v4(value));
    put("last_usable", v4(last));
    put("mask_bits", prefix.to_string());
    put("netmask", v4(mask));
    put("network", with_mask(network));
    put("octets", ip.octets().map(|o| o.to_string()).join(" "));
    put("port", "0".into());
    put("size", (1u64 << (32 - u32::from(prefix))).to_string());
    put("string", with_mask(value));
    put("type", "IPv4".into());
    put("uint32", value.to_string());
    add_dial_args(&mut m, "4");
    m
}

fn v6_attrs(ip: Ipv6Addr, prefix: u8) -> BTreeMap<String, String> {
    let value = u128::from(ip);
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    };
    let network = value & mask;
    let last = network | !mask;
    let v6 = |v: u128| Ipv6Addr::from(v).to_string();
    let with_mask = |v: u128| {
        if prefix == 128 {
            v6(v)
        } else {
            format!("{}/{prefix}", v6(v))
        }
    };
    let size = if prefix == 0 {
        "340282366920938463463374607431768211456".to_string()
    } else {
        (1u128 << (128 - u32::from(prefix))).to_string()
    };
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    put("address", v6(value));
    put("binary", format!("{value:0128b}"));
    put("first_usable", v6(network));
    put("hex", format!("{value:032x}"));
    put("host", v6(value));
    put("last_usable", v6(last));
    put("mask_bits", prefix.to_string());
    put("netmask", v6(mask));
    put("network", with_mask(network));
    put("octets", ip.octets().map(|o| o.to_string()).join(" "));
    put("port", "0".into());
    put("size", size);
    put("string", with_mask(value));
    put("type", "IPv6".into());
    put("uint128", value.to_string());
    add_dial_args(&mut m, "6");
    m
}

fn add_dial_args(m: &mut BTreeMap<String, String>, family: &str) {
    for (key, proto) in [
        ("DialPacket", "udp"),
        ("DialStream", "tcp"),
        ("ListenPacket", "udp"),
        ("ListenStream", "tcp"),
    ] {
        m.insert(key.to_string(), format!("\"{proto}{family}\" \"\""));
    }
}

/// File systems `/v1/agent/host` leaves out of `Disk`.
const SKIPPED_FS: [&str; 18] = [
    "autofs",
    "binfmt_misc",
    "cgroup",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "fuse.lxcfs",
    "hugetlbfs",
    "mqueue",
    "procfs",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "sysfs",
    "tmpfs",
    "vboxsf",
    "ptyfs",
];

fn disks() -> BTreeMap<String, DiskUsage> {
    let Ok(disks) = sysinfo::Disks::new_with_refreshed_list() else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for disk in &disks {
        let fs = disk.file_system().to_string_lossy();
        if SKIPPED_FS.contains(&fs.as_ref()) || disk.total_space() == 0 {
            continue;
        }
        let total = disk.total_space();
        let used = total.saturating_sub(disk.available_space());
        out.insert(
            disk.mount_point().to_string_lossy().into_owned(),
            DiskUsage {
                disk_mb: (total >> 20) as i64,
                used_mb: (used >> 20) as i64,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_rule() {
        fn check(name: &str, value: &str, expected: &str) {
            let env = redacted_environment([(name.to_string(), value.to_string())]);
            assert_eq!(env[name], expected, "{name}={value}");
        }
        const R: &str = "<redacted>";
        // Nomad's rule: the exact list, and TOKEN or SECRET anywhere in any case.
        check("NOMAD_TOKEN", "t", R);
        check("AWS_METADATA_URL", "http://169.254.169.254", R);
        check("ryanSECRETS", "v", R);
        check("my_token", "v", R);
        // Caravan's additions: passwords, keys, URL credentials.
        check("PASSWORD", "v", R);
        check("PGPASSWORD", "v", R);
        check("db_password", "v", R);
        check("SMTP_PASSWD", "v", R);
        check("GPG_PASSPHRASE", "v", R);
        check("KEY", "v", R);
        check("STRIPE_API_KEY", "v", R);
        check("ssh_private_key", "v", R);
        check(
            "DATABASE_URL",
            "postgres://app:hunter2@db.internal:5432/app?sslmode=require",
            "postgres://<redacted>@db.internal:5432/app?sslmode=require",
        );
        check(
            "GIT_REMOTE",
            "https://ghp_abc123@github.com/o/r.git",
            "https://<redacted>@github.com/o/r.git",
        );
        check(
            "REDIS_URLS",
            "redis://a:b@h1:6379,rediss://c:d@h2 http://h3/x@y",
            "redis://<redacted>@h1:6379,rediss://<redacted>@h2 http://h3/x@y",
        );
        check("AMQP", "amqp://u:p@ss@mq", "amqp://<redacted>@mq");
        // Shown as they are.
        check("HOME", "/root", "/root");
        check("aws_access_key_id", "v", "v");
        check("KEYBOARD", "us", "us");
        check("MONKEY", "v", "v");
        check("KEY_FILE", "/etc/k.pem", "/etc/k.pem");
        check(
            "NOMAD_ADDR",
            "http://127.0.0.1:4646",
            "http://127.0.0.1:4646",
        );
        check("MAILTO", "ops@example.com", "ops@example.com");
        check("ODD", "://u:p@h", "://u:p@h");
        check("QUERY", "https://h/p?u=a@b#c@d", "https://h/p?u=a@b#c@d");
    }

    #[test]
    fn ipv4_attributes() {
        let m = sockaddr_attrs("10.0.2.15".parse().unwrap(), 24);
        let want = [
            ("address", "10.0.2.15"),
            ("broadcast", "10.0.2.255"),
            ("first_usable", "10.0.2.1"),
            ("last_usable", "10.0.2.254"),
            ("hex", "0a00020f"),
            ("mask_bits", "24"),
            ("netmask", "255.255.255.0"),
            ("network", "10.0.2.0/24"),
            ("octets", "10 0 2 15"),
            ("size", "256"),
            ("string", "10.0.2.15/24"),
            ("type", "IPv4"),
            ("uint32", "167772687"),
            ("DialPacket", "\"udp4\" \"\""),
            ("ListenStream", "\"tcp4\" \"\""),
        ];
        for (k, v) in want {
            assert_eq!(m[k], v, "{k}");
        }
        assert_eq!(m["binary"].len(), 32);
        let lo = sockaddr_attrs("127.0.0.1".parse().unwrap(), 8);
        assert_eq!(lo["size"], "16777216");
    }

    #[test]
    fn ipv6_attributes() {
        let m = sockaddr_attrs("fe80::1".parse().unwrap(), 64);
        assert_eq!(m["network"], "fe80::/64");
        assert_eq!(m["last_usable"], "fe80::ffff:ffff:ffff:ffff");
        assert_eq!(m["type"], "IPv6");
        assert_eq!(m["size"], "18446744073709551616");
        assert!(!m.contains_key("broadcast"));
        let host = sockaddr_attrs("::1".parse().unwrap(), 128);
        assert_eq!(host["string"], "::1");
    }

    #[test]
    fn gathers_this_host() {
        let data = gather();
        assert!(data.os.contains(std::env::consts::ARCH));
        assert!(!data.environment.is_empty());
    }
}
