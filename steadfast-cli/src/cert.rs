//! `steadfast cert`: development certificates, from a new CA or an existing one, never over
//! files that exist unless `--force` says so.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use steadfast::tls::{DevCertificates, TlsError};

use crate::{CertArgs, fail};

pub(crate) fn run(a: &CertArgs) -> ExitCode {
    match write(a) {
        Ok(written) => {
            eprintln!(
                "wrote {} to {} (server valid for {})",
                written.join(", "),
                a.out.display(),
                a.names.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn write(a: &CertArgs) -> Result<Vec<&'static str>, String> {
    let names: Vec<&str> = a.names.iter().map(String::as_str).collect();
    let certs = match &a.ca {
        Some(dir) => {
            let read = |file: &str| {
                let path = dir.join(file);
                std::fs::read_to_string(&path).map_err(|e| {
                    format!(
                        "--ca {}: cannot read {}: {e}",
                        dir.display(),
                        path.display()
                    )
                })
            };
            DevCertificates::issue(&read("ca.pem")?, &read("ca.key")?, &names).map_err(
                |e| match e {
                    TlsError::ServerName(_) => why(e),
                    e => format!("--ca {}: {e}", dir.display()),
                },
            )?
        }
        None => DevCertificates::generate(&names).map_err(why)?,
    };
    let mut files = vec![
        ("ca.pem", &certs.ca_pem),
        ("server.pem", &certs.server_cert_pem),
        ("server.key", &certs.server_key_pem),
        ("client.pem", &certs.client_cert_pem),
        ("client.key", &certs.client_key_pem),
    ];
    if a.ca.is_none() {
        files.insert(1, ("ca.key", &certs.ca_key_pem));
    }
    std::fs::create_dir_all(&a.out)
        .map_err(|e| format!("cannot create {}: {e}", a.out.display()))?;
    // Everything is checked before anything is written: a refusal leaves the directory as
    // it was.
    if !a.force {
        for (file, content) in &files {
            let path = a.out.join(file);
            let same = std::fs::read(&path).is_ok_and(|old| old == content.as_bytes());
            if path.exists() && !same {
                return Err(format!(
                    "{} exists; not overwriting it (a new CA leaves every client that trusts \
                     the old one refusing the server): --ca DIR issues from the existing CA, \
                     --force replaces the files",
                    path.display()
                ));
            }
        }
    }
    for (file, content) in &files {
        let path = a.out.join(file);
        write_file(&path, content.as_bytes(), file.ends_with(".key"))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(files.iter().map(|(f, _)| *f).collect())
}

/// A refused name as the option that gave it.
fn why(e: TlsError) -> String {
    match e {
        TlsError::ServerName(n) => format!("--name {n:?} is neither a DNS name nor an IP address"),
        e => e.to_string(),
    }
}

/// Writes a file; a private key is created readable by its owner only (never readable by
/// others, not even for a moment).
fn write_file(path: &Path, content: &[u8], private: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        // A key file that existed keeps its old mode when opened: set it before writing.
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = options.open(path)?;
    f.write_all(content)?;
    f.sync_all()
}
