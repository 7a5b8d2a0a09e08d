//! A server behind a load balancer that speaks the PROXY protocol: the balancer here is a
//! small forwarder in the test that writes a version-1 or version-2 header, then copies bytes
//! both ways, as HAProxy's `send-proxy` / `send-proxy-v2` do.

#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use steadfast::proxy::V2_SIGNATURE;
use steadfast::{Client, ClientConfig, Server, ServerConfig, ServerEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Accepts one connection, connects to `server`, writes `header` and forwards both ways
/// until either side closes. Returns the forwarder's address.
async fn balancer(server: SocketAddr, header: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut front, _) = listener.accept().await.unwrap();
        let mut back = TcpStream::connect(server).await.unwrap();
        back.write_all(&header).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut front, &mut back).await;
    });
    addr
}

fn v2_tcp4(source: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(s) = source else {
        panic!("an IPv4 address")
    };
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&s.ip().octets());
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&s.port().to_be_bytes());
    h.extend_from_slice(&4433u16.to_be_bytes());
    h
}

async fn proxied_server() -> (Server, SocketAddr) {
    let server = Server::bind(
        ["127.0.0.1:0"],
        ServerConfig::default().proxy_protocol(true),
    )
    .await
    .unwrap();
    let addr = server.local_addrs()[0];
    (server, addr)
}

/// The session's address is the client's from the header, in either version, and messages
/// flow through the balancer as through a plain connection.
#[tokio::test]
async fn the_server_sees_the_clients_address_from_the_header() {
    let source: SocketAddr = "203.0.113.7:4242".parse().unwrap();
    let v1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 4242 4433\r\n".to_vec();
    for header in [v2_tcp4(source), v1] {
        let (server, addr) = proxied_server().await;
        let front = balancer(addr, header).await;
        let client = Client::connect(front.to_string(), ClientConfig::default())
            .await
            .unwrap();
        let Some(ServerEvent::Connected { peer }) = server.next_event().await else {
            panic!("no Connected event")
        };
        assert_eq!(peer.addr(), Some(source));
        let receipt = client.send(&b"through the balancer"[..]).await.unwrap();
        assert_eq!(
            &peer.recv().await.unwrap().body[..],
            b"through the balancer"
        );
        tokio::time::timeout(Duration::from_secs(10), receipt)
            .await
            .unwrap()
            .unwrap();
        client.close("done").await;
        server.shutdown(Duration::from_secs(5)).await;
    }
}

/// A connection without a header (a client that reached the listener directly, or anything
/// else) is closed without an answer; the server goes on serving.
#[tokio::test]
async fn a_connection_without_a_header_is_closed() {
    let (server, addr) = proxied_server().await;
    for first in [
        &b"\x16\x03\x01\x00\x05hello"[..],
        b"PROXY TCP4 nonsense\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    ] {
        let mut direct = TcpStream::connect(addr).await.unwrap();
        direct.write_all(first).await.unwrap();
        let mut answer = Vec::new();
        // A guard against a hang, not a timing check: the server closes at once.
        let read = tokio::time::timeout(Duration::from_secs(10), direct.read_to_end(&mut answer))
            .await
            .unwrap();
        assert!(
            read.is_ok_and(|n| n == 0) || answer.is_empty(),
            "{first:?}: {answer:?}"
        );
    }
    // Still serving: a proxied client gets through.
    let front = balancer(addr, v2_tcp4("198.51.100.9:9".parse().unwrap())).await;
    let client = Client::connect(front.to_string(), ClientConfig::default())
        .await
        .unwrap();
    let Some(ServerEvent::Connected { peer }) = server.next_event().await else {
        panic!("no Connected event")
    };
    assert_eq!(peer.addr(), Some("198.51.100.9:9".parse().unwrap()));
    client.close("done").await;
    server.shutdown(Duration::from_secs(5)).await;
}
