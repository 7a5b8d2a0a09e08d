//! TLS 1.3 and authentication over loopback: resumption over TLS through a fault proxy,
//! mutual TLS with the identity visible, refusals, a standard TLS client (openssl).

#![cfg(feature = "dev-certs")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use steadfast::chaos::{Chaos, ChaosConfig};
use steadfast::error::ConnectError;
use steadfast::proto::{Config, RejectCode};
use steadfast::tls::{DevCertificates, TlsClient, TlsServer};
use steadfast::{AuthDecision, Client, ClientConfig, Peer, Server, ServerConfig, ServerEvent};

async fn next_connected(server: &mut Server) -> Peer {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), server.next_event())
            .await
            .expect("no event")
            .expect("server gone")
        {
            ServerEvent::Connected { peer } | ServerEvent::Resumed { peer } => return peer,
            _ => continue,
        }
    }
}

fn certs() -> DevCertificates {
    DevCertificates::generate(&["localhost", "127.0.0.1"]).unwrap()
}

fn server_tls(c: &DevCertificates, mutual: bool) -> TlsServer {
    TlsServer::from_pem(
        c.server_cert_pem.as_bytes(),
        c.server_key_pem.as_bytes(),
        mutual.then_some(c.ca_pem.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumes_over_tls_through_cuts() {
    let c = certs();
    let quick = Config::default()
        .idle_timeout(Duration::from_millis(1_500))
        .keepalive_interval(Duration::from_millis(400));
    let mut server = Server::bind(
        ["127.0.0.1:0"],
        ServerConfig::default()
            .protocol(quick.clone())
            .tls(server_tls(&c, false)),
    )
    .await
    .unwrap();
    let proxy = Chaos::start(
        "127.0.0.1:0",
        server.local_addrs()[0],
        ChaosConfig {
            seed: 11,
            bytes: (3_000, 40_000),
            ..ChaosConfig::default()
        },
    )
    .await
    .unwrap();
    // Verified against the IP address in the certificate.
    let tls = TlsClient::from_ca_pem(c.ca_pem.as_bytes()).unwrap();
    let client = Client::connect(
        proxy.local_addr().to_string(),
        ClientConfig::default()
            .protocol(quick)
            .tls(tls)
            .backoff(Duration::from_millis(5), Duration::from_millis(50)),
    )
    .await
    .unwrap();
    let peer = next_connected(&mut server).await;
    let n = 20_000u64;
    let sender = {
        let c = client.peer().clone();
        tokio::spawn(async move {
            for i in 0..n {
                c.send(i.to_be_bytes().to_vec()).await.unwrap();
            }
            c.flush().await.unwrap();
        })
    };
    for i in 0..n {
        let m = tokio::time::timeout(Duration::from_secs(60), peer.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(u64::from_be_bytes(m.body[..].try_into().unwrap()), i);
    }
    sender.await.unwrap();
    let cuts = proxy.stats().cuts();
    println!(
        "{n} messages over TLS through {cuts} cuts, {} connections",
        client.stats().connections
    );
    assert!(cuts > 3, "only {cuts} cuts");
    assert!(client.stats().connections > 3);
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_and_shows_it() {
    let c = certs();
    let mut server = Server::bind(
        ["127.0.0.1:0"],
        ServerConfig::default().tls(server_tls(&c, true)),
    )
    .await
    .unwrap();
    let addr = server.local_addrs()[0].to_string();
    let anonymous = TlsClient::from_ca_pem(c.ca_pem.as_bytes()).unwrap();
    assert!(
        Client::connect(&addr, ClientConfig::default().tls(anonymous))
            .await
            .is_err(),
        "a client without a certificate got in"
    );
    let with_cert = TlsClient::from_ca_pem(c.ca_pem.as_bytes())
        .unwrap()
        .client_certificate(c.client_cert_pem.as_bytes(), c.client_key_pem.as_bytes())
        .unwrap();
    let client = Client::connect(&addr, ClientConfig::default().tls(with_cert))
        .await
        .unwrap();
    let peer = next_connected(&mut server).await;
    let der = peer.certificate().expect("no client certificate visible");
    let expected = rustls_pem_der(&c.client_cert_pem);
    assert_eq!(der, expected);
    client.send(&b"hi"[..]).await.unwrap();
    assert_eq!(&peer.recv().await.unwrap().body[..], b"hi");
}

fn rustls_pem_der(pem: &str) -> Vec<u8> {
    // The base64 body of a single PEM block.
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    decode_base64(&b64)
}

fn decode_base64(s: &str) -> Vec<u8> {
    let table = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => 0,
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let v: Vec<u32> = chunk.iter().map(|c| u32::from(table(*c))).collect();
        let n = v
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, x)| acc | (x << (18 - 6 * i)));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

#[tokio::test]
async fn a_wrong_ca_or_name_is_refused() {
    let c = certs();
    let other = certs();
    let server = Server::bind(
        ["127.0.0.1:0"],
        ServerConfig::default().tls(server_tls(&c, false)),
    )
    .await
    .unwrap();
    let addr = server.local_addrs()[0].to_string();
    let wrong_ca = TlsClient::from_ca_pem(other.ca_pem.as_bytes()).unwrap();
    assert!(matches!(
        Client::connect(&addr, ClientConfig::default().tls(wrong_ca)).await,
        Err(ConnectError::Io(_))
    ));
    let wrong_name = TlsClient::from_ca_pem(c.ca_pem.as_bytes())
        .unwrap()
        .server_name("example.org")
        .unwrap();
    assert!(
        Client::connect(&addr, ClientConfig::default().tls(wrong_name))
            .await
            .is_err()
    );
    // A plain-TCP client against a TLS server fails cleanly too.
    assert!(
        tokio::time::timeout(
            Duration::from_secs(15),
            Client::connect(&addr, ClientConfig::default())
        )
        .await
        .unwrap()
        .is_err()
    );
}

#[tokio::test]
async fn a_shared_token_lets_in_only_its_holders() {
    let mut server = Server::bind(
        ["127.0.0.1:0"],
        ServerConfig::default().shared_token(&b"s3cret"[..]),
    )
    .await
    .unwrap();
    let addr = server.local_addrs()[0].to_string();
    for bad in [None, Some(&b"wrong"[..]), Some(&b"s3cret!"[..])] {
        let mut cfg = ClientConfig::default();
        if let Some(t) = bad {
            cfg = cfg.credentials(t);
        }
        match Client::connect(&addr, cfg).await {
            Err(ConnectError::Rejected { code, .. }) => {
                assert_eq!(code, RejectCode::Unauthenticated)
            }
            other => panic!("{other:?}"),
        }
    }
    let good = Client::connect(&addr, ClientConfig::default().credentials(&b"s3cret"[..]))
        .await
        .unwrap();
    let peer = next_connected(&mut server).await;
    good.send(&b"in"[..]).await.unwrap();
    assert_eq!(&peer.recv().await.unwrap().body[..], b"in");
}

#[tokio::test]
async fn an_authenticator_can_name_the_peer() {
    let mut server = Server::bind(
        ["127.0.0.1:0"],
        ServerConfig::default().authenticate(|req| match req.credentials {
            Some(b"alice-key") => AuthDecision::AcceptAs("alice".into()),
            _ => AuthDecision::Refuse("who are you?".into()),
        }),
    )
    .await
    .unwrap();
    let addr = server.local_addrs()[0].to_string();
    let _c = Client::connect(
        &addr,
        ClientConfig::default()
            .name("mallory")
            .credentials(&b"alice-key"[..]),
    )
    .await
    .unwrap();
    let peer = next_connected(&mut server).await;
    assert_eq!(
        peer.name(),
        Some("alice"),
        "the authenticated name wins over the claimed one"
    );
    assert!(server.peer_by_name("alice").is_some());
    assert!(server.peer_by_name("mallory").is_none());
}

/// A standard TLS client: openssl s_client. TLS 1.3 completes; TLS 1.2 only is refused.
#[tokio::test]
async fn openssl_tls13_works_and_tls12_is_refused() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        println!("openssl not installed; this check needs it");
        return;
    }
    let c = certs();
    let dir = std::env::temp_dir().join(format!("steadfast-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &c.ca_pem).unwrap();
    let server = Server::bind(
        ["127.0.0.1:0"],
        ServerConfig::default().tls(server_tls(&c, false)),
    )
    .await
    .unwrap();
    let addr = server.local_addrs()[0].to_string();
    let run = |version: &'static str| {
        let (addr, ca) = (addr.clone(), ca.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("openssl")
                .args(["s_client", "-connect", &addr, version, "-CAfile"])
                .arg(&ca)
                .args(["-verify_return_error", "-brief"])
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap()
        })
    };
    let ok = run("-tls1_3").await.unwrap();
    let out =
        String::from_utf8_lossy(&ok.stderr).to_string() + &String::from_utf8_lossy(&ok.stdout);
    assert!(out.contains("TLSv1.3"), "{out}");
    let refused = run("-tls1_2").await.unwrap();
    let out = String::from_utf8_lossy(&refused.stderr).to_string()
        + &String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success(), "TLS 1.2 was accepted: {out}");
    assert!(!out.contains("Protocol version: TLSv1.2"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn configs_built_with_rustls_carry_a_session() {
    use std::sync::Arc;

    use steadfast::tls::rustls;
    use steadfast::tls::rustls::pki_types::pem::PemObject;
    use steadfast::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let c = certs();
    let provider = || Arc::new(rustls::crypto::ring::default_provider());
    let pem_certs = |pem: &str| {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in pem_certs(&c.ca_pem) {
        roots.add(ca).unwrap();
    }
    let roots = Arc::new(roots);

    // The server: TLS 1.3 only, client certificates required (mutual TLS).
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .unwrap();
    let server_config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            pem_certs(&c.server_cert_pem),
            PrivateKeyDer::from_pem_slice(c.server_key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let mut server = Server::bind(
        ["127.0.0.1:0"],
        ServerConfig::default().tls(TlsServer::from_config(Arc::new(server_config)).unwrap()),
    )
    .await
    .unwrap();
    let addr = server.local_addrs()[0].to_string();

    // The client: the same CA, its certificate in the config.
    let client_config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            pem_certs(&c.client_cert_pem),
            PrivateKeyDer::from_pem_slice(c.client_key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let client_config = Arc::new(client_config);
    let tls = TlsClient::from_config(client_config.clone()).unwrap();
    assert!(
        matches!(
            tls.clone()
                .client_certificate(c.client_cert_pem.as_bytes(), c.client_key_pem.as_bytes()),
            Err(steadfast::tls::TlsError::Unsupported(_))
        ),
        "a caller's config is never rebuilt behind its back"
    );
    // Verified against the IP address of the address connected to.
    let client = Client::connect(&addr, ClientConfig::default().tls(tls))
        .await
        .unwrap();
    let peer = next_connected(&mut server).await;
    assert_eq!(
        peer.certificate().expect("no client certificate visible"),
        rustls_pem_der(&c.client_cert_pem)
    );
    let receipt = client.send(&b"over a caller's config"[..]).await.unwrap();
    let m = peer.recv().await.unwrap();
    assert_eq!(&m.body[..], b"over a caller's config");
    tokio::time::timeout(Duration::from_secs(10), receipt)
        .await
        .expect("receipt never resolved")
        .unwrap();

    // The name can be given instead, as for the other constructors.
    let named = TlsClient::from_config(client_config)
        .unwrap()
        .server_name("localhost")
        .unwrap();
    let client = Client::connect(&addr, ClientConfig::default().tls(named))
        .await
        .unwrap();
    let peer = next_connected(&mut server).await;
    let receipt = client.send(&b"by name"[..]).await.unwrap();
    assert_eq!(&peer.recv().await.unwrap().body[..], b"by name");
    receipt.await.unwrap();
}
