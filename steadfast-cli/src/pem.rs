//! PEM files named on the command line: read and checked for what they must hold, so that a
//! mistake names the option and the file instead of surfacing as a TLS library error.

use std::path::Path;

/// What a PEM file must hold.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Holds {
    /// At least one certificate.
    Certificate,
    /// A private key.
    PrivateKey,
}

/// Reads the PEM file given to `option`, checking that it holds what it must.
pub(crate) fn read(option: &str, path: &Path, holds: Holds) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("{option} {}: cannot read it: {e}", path.display()))?;
    let marker: &[u8] = match holds {
        Holds::Certificate => b"-----BEGIN CERTIFICATE-----",
        Holds::PrivateKey => b"PRIVATE KEY-----",
    };
    if !bytes.windows(marker.len()).any(|w| w == marker) {
        let what = match holds {
            Holds::Certificate => "no certificate (a -----BEGIN CERTIFICATE----- block)",
            Holds::PrivateKey => "no private key (a -----BEGIN … PRIVATE KEY----- block)",
        };
        return Err(format!("{option} {}: holds {what}", path.display()));
    }
    Ok(bytes)
}
