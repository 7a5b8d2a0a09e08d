//! `steadfast cert`: never overwrites without --force, keeps keys private, issues from an
//! existing CA a certificate that the CA's clients trust (checked by `openssl verify` and by a
//! TLS session between `serve` and `send`), refuses names no client could check.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

mod support;
use support::TempDir;
use support::proc::{BIN, addr_after, run_with_input, spawn};

fn cert(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).arg("cert").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap()
}

#[test]
fn cert_never_overwrites_without_force_and_keeps_keys_private() {
    let dir = TempDir::new("cert-force");
    let out = dir.0.to_str().unwrap();
    let (code, err) = cert(&["--out", out, "--name", "localhost"]);
    assert_eq!(code, 0, "{err}");
    for file in [
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
    ] {
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(dir.0.join(file))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        if file.ends_with(".key") {
            assert_eq!(mode, 0o600, "{file}");
        }
    }
    let ca = read(&dir.0, "ca.pem");
    let ca_key = read(&dir.0, "ca.key");
    let (code, err) = cert(&["--out", out, "--name", "localhost"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ca.pem exists; not overwriting it"), "{err}");
    assert!(err.contains("--ca DIR") && err.contains("--force"), "{err}");
    assert_eq!(read(&dir.0, "ca.pem"), ca, "the CA was replaced");
    assert_eq!(read(&dir.0, "ca.key"), ca_key);
    let (code, err) = cert(&["--out", out, "--name", "localhost", "--force"]);
    assert_eq!(code, 0, "{err}");
    assert_ne!(read(&dir.0, "ca.pem"), ca, "--force makes a new CA");
}

#[test]
fn a_certificate_issued_from_an_existing_ca_is_trusted_by_its_clients() {
    let first = TempDir::new("cert-ca");
    let second = TempDir::new("cert-issued");
    let (a, b) = (first.0.to_str().unwrap(), second.0.to_str().unwrap());
    let (code, err) = cert(&["--out", a, "--name", "localhost"]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = cert(&["--out", b, "--ca", a, "--name", "127.0.0.1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !second.0.join("ca.key").exists(),
        "the CA key stays where it was"
    );
    assert_eq!(read(&second.0, "ca.pem"), read(&first.0, "ca.pem"));
    // An independent check: OpenSSL finds the new certificates signed by the first CA.
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(first.0.join("ca.pem"))
        .arg(second.0.join("server.pem"))
        .arg(second.0.join("client.pem"))
        .output()
        .expect("openssl (CI installs it)");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // And a TLS session: a server with the new certificate, a client trusting the first CA.
    let server_pem = second.0.join("server.pem");
    let server_key = second.0.join("server.key");
    let serve = spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        server_pem.to_str().unwrap(),
        "--tls-key",
        server_key.to_str().unwrap(),
    ]);
    let addr = addr_after(&serve.wait_for("listening on"), "listening on ");
    let ca = first.0.join("ca.pem");
    let sent = run_with_input(
        &[
            "send",
            &addr,
            "--tls-ca",
            ca.to_str().unwrap(),
            "--timeout",
            "20",
        ],
        b"over TLS\n",
    );
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
}

#[test]
fn names_no_client_could_check_are_refused() {
    let dir = TempDir::new("cert-names");
    let out = dir.0.join("out");
    for bad in ["bad name!", "http://example.com", ""] {
        let (code, err) = cert(&["--out", out.to_str().unwrap(), "--name", bad]);
        assert_eq!(code, 1, "{bad:?}: {err}");
        assert!(
            err.contains(&format!(
                "--name {bad:?} is neither a DNS name nor an IP address"
            )),
            "{err}"
        );
    }
    assert!(!out.exists(), "nothing is written for a refused name");
}
