//! `caravan tls ca create` and `caravan tls cert create`: Nomad's commands for a private CA and
//! the role certificates `tls.rpc` checks (`server.<region>.nomad`, `client.<region>.nomad`),
//! written to the current directory. Keys are written 0600 and never overwrite a file.

use std::path::Path;
use std::process::ExitCode;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::cli::{CaArgs, CertArgs};

/// `caravan tls ca create`.
pub fn ca_create(args: &CaArgs) -> ExitCode {
    let cert_file = format!("{}-agent-ca.pem", args.domain);
    let key_file = format!("{}-agent-ca-key.pem", args.domain);
    let made = (|| {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(
            DnType::CommonName,
            format!("Nomad Agent CA {}", args.domain),
        );
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        valid_for(&mut params, args.days)?;
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        write_new(&cert_file, cert.pem().as_bytes(), 0o644)?;
        write_new(&key_file, key.serialize_pem().as_bytes(), 0o600)
    })();
    match made {
        Ok(()) => {
            println!("==> CA certificate saved to: {cert_file}");
            println!("==> CA certificate key saved to: {key_file}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error creating the CA: {e}");
            ExitCode::from(1)
        }
    }
}

/// `caravan tls cert create -server|-client|-cli`.
pub fn cert_create(args: &CertArgs) -> ExitCode {
    let role = match (args.server, args.client, args.cli) {
        (true, false, false) => "server",
        (false, true, false) => "client",
        (false, false, true) => "cli",
        _ => {
            eprintln!("Error: exactly one of -server, -client or -cli is required");
            return ExitCode::from(1);
        }
    };
    let stem = format!("{}-{role}-{}", args.region, args.domain);
    let (cert_file, key_file) = (format!("{stem}.pem"), format!("{stem}-key.pem"));
    match issue(args, role, &cert_file, &key_file) {
        Ok(()) => {
            let title = format!("{}{}", role[..1].to_uppercase(), &role[1..]);
            println!("==> Using CA file {} and CA key {}", args.ca, args.key);
            println!("==> {title} Certificate: {cert_file}");
            println!("==> {title} Certificate key: {key_file}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error creating the certificate: {e}");
            ExitCode::from(1)
        }
    }
}

/// Signs a certificate for `role` with the CA and writes it and its key.
fn issue(args: &CertArgs, role: &str, cert_file: &str, key_file: &str) -> Result<(), String> {
    let read =
        |path: &str| std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"));
    let ca_key = KeyPair::from_pem(&read(&args.key)?).map_err(|e| format!("{}: {e}", args.key))?;
    let issuer = Issuer::from_ca_cert_pem(&read(&args.ca)?, ca_key)
        .map_err(|e| format!("{}: {e}", args.ca))?;
    let mut names = vec![
        format!("{role}.{}.{}", args.region, args.domain),
        "localhost".to_string(),
    ];
    names.extend(args.additional_dnsname.iter().cloned());
    let mut params = CertificateParams::new(names).map_err(|e| e.to_string())?;
    if role != "cli" {
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
    }
    for ip in &args.additional_ipaddress {
        let ip = ip
            .parse()
            .map_err(|e| format!("-additional-ipaddress {ip:?}: {e}"))?;
        params.subject_alt_names.push(SanType::IpAddress(ip));
    }
    let mut name = DistinguishedName::new();
    name.push(
        DnType::CommonName,
        format!("{role}.{}.{}", args.region, args.domain),
    );
    params.distinguished_name = name;
    valid_for(&mut params, args.days)?;
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
    write_new(cert_file, cert.pem().as_bytes(), 0o644)?;
    write_new(key_file, key.serialize_pem().as_bytes(), 0o600)
}

/// Makes the certificate valid until `days` days from today (UTC midnight).
fn valid_for(params: &mut CertificateParams, days: u32) -> Result<(), String> {
    if days == 0 || days > 36_500 {
        return Err(format!("-days {days}: must be 1 to 36500"));
    }
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs()
        / 86_400;
    let (y, m, d) = civil_from_days(today as i64 + i64::from(days));
    params.not_after = rcgen::date_time_ymd(y, m, d);
    Ok(())
}

/// The calendar date of a day number since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

/// Writes a file that must not exist yet, with `mode` (Unix).
fn write_new(path: &str, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    if Path::new(path).exists() {
        return Err(format!("{path} already exists; not overwriting it"));
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options.open(path).map_err(|e| format!("{path}: {e}"))?;
    f.write_all(bytes).map_err(|e| format!("{path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn calendar_dates() {
        let check = |days, want| assert_eq!(civil_from_days(days), want, "{days}");
        check(0, (1970, 1, 1));
        check(59, (1970, 3, 1));
        check(11_016, (2000, 2, 29));
        check(20_787, (2026, 11, 30));
        check(-1, (1969, 12, 31));
    }
}
