//! Lifecycle hooks driven by real events over loopback.

#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use steadfast::hooks::{ClientHooks, ServerHooks, run_client, run_server};
use steadfast::proto::ConnectionError;
use steadfast::{Client, ClientConfig, EndReason, Message, Peer, Server, ServerConfig};

#[derive(Default)]
struct Recorder {
    log: Vec<String>,
    messages: usize,
    ticks: usize,
}

impl ServerHooks for Recorder {
    async fn on_start(&mut self, _server: &Server) {
        self.log.push("start".into());
    }
    async fn on_connected(&mut self, peer: &Peer) {
        self.log
            .push(format!("connected {}", peer.name().unwrap_or("?")));
    }
    async fn on_message(&mut self, peer: &Peer, message: Message) -> bool {
        self.messages += 1;
        let _ = peer.send(message.body).await;
        true
    }
    async fn on_tick(&mut self, _server: &Server) -> bool {
        self.ticks += 1;
        true
    }
    async fn on_session_ended(&mut self, _peer: &Peer, reason: &EndReason, _u: &[Message]) {
        self.log.push(format!("ended {reason}"));
    }
    async fn on_stop(&mut self, _server: &Server) {
        self.log.push("stop".into());
    }
}

#[derive(Default)]
struct ClientRecorder {
    log: Vec<String>,
    echoed: usize,
}

impl ClientHooks for ClientRecorder {
    async fn on_message(&mut self, _peer: &Peer, _message: Message) -> bool {
        self.echoed += 1;
        self.echoed < 10
    }
    async fn on_disconnected(&mut self, _peer: &Peer, error: &ConnectionError) {
        self.log.push(format!("disconnected {error}"));
    }
    async fn on_stop(&mut self, _peer: &Peer) {
        self.log.push("stop".into());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_and_client_hooks_see_the_whole_life_of_a_session() {
    let mut server = Server::bind(["127.0.0.1:0"], ServerConfig::default())
        .await
        .unwrap();
    let addr = server.local_addrs()[0].to_string();
    let server_task = tokio::spawn(async move {
        let mut rec = Recorder::default();
        tokio::time::timeout(
            Duration::from_secs(3),
            run_server(&mut server, &mut rec, Duration::from_millis(20)),
        )
        .await
        .ok();
        rec
    });
    let mut client = Client::connect(&addr, ClientConfig::default().name("carol"))
        .await
        .unwrap();
    for i in 0..10u8 {
        client.send(vec![i]).await.unwrap();
    }
    let mut crec = ClientRecorder::default();
    run_client(&mut client, &mut crec, Duration::from_millis(50)).await;
    assert_eq!(crec.echoed, 10, "the client's hook saw every echo");
    assert_eq!(crec.log.last().map(String::as_str), Some("stop"));
    client.close("done").await;
    let rec = server_task.await.unwrap();
    assert_eq!(rec.messages, 10);
    assert!(rec.ticks > 5, "{} ticks", rec.ticks);
    assert_eq!(rec.log[0], "start");
    assert_eq!(rec.log[1], "connected carol");
    assert!(
        rec.log
            .iter()
            .any(|l| l.starts_with("ended session closed")),
        "{:?}",
        rec.log
    );
}
