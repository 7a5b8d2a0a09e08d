//! `steadfast cert`: development certificates.

use std::process::ExitCode;

use steadfast::tls::DevCertificates;

use crate::{CertArgs, fail};

pub(crate) fn run(a: &CertArgs) -> ExitCode {
    let names: Vec<&str> = a.names.iter().map(String::as_str).collect();
    let certs = match DevCertificates::generate(&names) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = std::fs::create_dir_all(&a.out) {
        return fail(format!("cannot create {}: {e}", a.out.display()));
    }
    let files = [
        ("ca.pem", &certs.ca_pem),
        ("server.pem", &certs.server_cert_pem),
        ("server.key", &certs.server_key_pem),
        ("client.pem", &certs.client_cert_pem),
        ("client.key", &certs.client_key_pem),
    ];
    for (file, content) in files {
        let path = a.out.join(file);
        if let Err(e) = write_private(&path, content.as_bytes(), file.ends_with(".key")) {
            return fail(format!("cannot write {}: {e}", path.display()));
        }
    }
    eprintln!(
        "wrote ca.pem, server.pem, server.key, client.pem, client.key to {} (server valid for {})",
        a.out.display(),
        a.names.join(", ")
    );
    ExitCode::SUCCESS
}

/// Writes a file; private keys readable by the owner only.
fn write_private(path: &std::path::Path, content: &[u8], private: bool) -> std::io::Result<()> {
    std::fs::write(path, content)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
}
