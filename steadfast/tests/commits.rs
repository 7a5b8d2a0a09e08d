//! What a driver turn commits to a session store, and what a connection does while a commit
//! is in flight (PROTOCOL.md §13): it goes on reading, and an acknowledgement alone is not a
//! reason to wait for the disk.

#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use steadfast::proto::{Config, SessionRecord};
use steadfast::store::{Change, MemoryStore, SessionStore, StoreError, StoredSession};
use steadfast::{Client, ClientConfig, Peer, Server, ServerConfig};
use tokio::sync::{Notify, oneshot};

const WAIT: Duration = Duration::from_secs(20);

type Reply = oneshot::Sender<Result<(), StoreError>>;

/// A memory store that records every record it is given and, while closed, holds commits
/// back (answering none) until it is opened again.
#[derive(Debug, Default)]
struct Gated {
    inner: MemoryStore,
    state: Mutex<GateState>,
    /// Signalled whenever a commit is held.
    held: Notify,
}

#[derive(Debug, Default)]
struct GateState {
    closed: bool,
    waiting: Vec<(Vec<Change>, Reply)>,
    records: Vec<SessionRecord>,
}

impl Gated {
    fn close(&self) {
        self.state.lock().unwrap().closed = true;
    }

    /// Opens the gate: the held commits go through, in order.
    fn open(&self) {
        let waiting = {
            let mut st = self.state.lock().unwrap();
            st.closed = false;
            std::mem::take(&mut st.waiting)
        };
        for (changes, reply) in waiting {
            let answer = self.inner.submit(changes);
            tokio::spawn(async move {
                let _ = reply.send(answer.await.unwrap());
            });
        }
    }

    fn held(&self) -> usize {
        self.state.lock().unwrap().waiting.len()
    }

    /// Waits until at least one commit is held.
    async fn until_held(&self) {
        tokio::time::timeout(WAIT, async {
            loop {
                let signalled = self.held.notified();
                if self.held() > 0 {
                    return;
                }
                signalled.await;
            }
        })
        .await
        .expect("a commit reached the store");
    }

    fn records(&self) -> Vec<SessionRecord> {
        self.state.lock().unwrap().records.clone()
    }
}

impl SessionStore for Gated {
    fn load(&self) -> Result<Vec<StoredSession>, StoreError> {
        self.inner.load()
    }

    fn submit(&self, changes: Vec<Change>) -> oneshot::Receiver<Result<(), StoreError>> {
        let mut st = self.state.lock().unwrap();
        for c in &changes {
            if let Change::Put { record, .. } = c {
                st.records.push(record.clone());
            }
        }
        if st.closed {
            let (tx, rx) = oneshot::channel();
            st.waiting.push((changes, tx));
            drop(st);
            self.held.notify_waiters();
            return rx;
        }
        drop(st);
        self.inner.submit(changes)
    }
}

async fn next_peer(server: &mut Server) -> Peer {
    tokio::time::timeout(WAIT, support::accept_peer(server))
        .await
        .unwrap()
        .expect("a peer")
}

/// The next message's body, taken within [`WAIT`].
async fn next_body(peer: &Peer) -> bytes::Bytes {
    tokio::time::timeout(WAIT, peer.recv())
        .await
        .expect("a message in time")
        .unwrap()
        .body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_goes_on_reading_while_its_commit_is_in_flight() {
    let store = Arc::new(Gated::default());
    let mut server = Server::bind(
        ["127.0.0.1:0"],
        ServerConfig::default().store(store.clone()),
    )
    .await
    .unwrap();
    let addr = server.local_addrs()[0];
    let client = Client::connect(addr.to_string(), ClientConfig::default())
        .await
        .unwrap();
    let peer = next_peer(&mut server).await;
    let first = client.send("a").await.unwrap();
    assert_eq!(next_body(&peer).await, "a");
    tokio::time::timeout(WAIT, first).await.unwrap().unwrap();

    // Taking "b" moves the server's delivered position: the turn that follows commits it
    // before its ACK goes out, and the store holds that commit.
    store.close();
    let b = client.send("b").await.unwrap();
    assert_eq!(next_body(&peer).await, "b");
    store.until_held().await;

    // The connection still reads: "c" reaches the application while the commit waits...
    let c = client.send("c").await.unwrap();
    let got = tokio::time::timeout(WAIT, peer.recv()).await;
    assert_eq!(
        got.expect("read while the commit was in flight")
            .unwrap()
            .body,
        "c"
    );
    // ... and nothing the commit covers went out: neither is acknowledged.
    assert!(!b.is_acknowledged() && !c.is_acknowledged());

    store.open();
    tokio::time::timeout(WAIT, b).await.unwrap().unwrap();
    tokio::time::timeout(WAIT, c).await.unwrap().unwrap();
    // Every commit answered: the last record covers both.
    assert!(store.records().last().unwrap().delivered.0 >= 4);
    client.close("done").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_alone_is_committed_only_when_nothing_is_left_out() {
    // The server acknowledges by hand, so the client's acknowledged position moves in steps.
    let manual = Config::default().manual_ack(true);
    let mut server = Server::bind(["127.0.0.1:0"], ServerConfig::default().protocol(manual))
        .await
        .unwrap();
    let addr = server.local_addrs()[0];
    let store = Arc::new(Gated::default());
    let client = Client::connect(
        addr.to_string(),
        ClientConfig::default().store(store.clone()),
    )
    .await
    .unwrap();
    let peer = next_peer(&mut server).await;
    let r1 = client.send("one").await.unwrap();
    let r2 = client.send("two").await.unwrap();
    let m1 = tokio::time::timeout(WAIT, peer.recv())
        .await
        .unwrap()
        .unwrap();
    let m2 = tokio::time::timeout(WAIT, peer.recv())
        .await
        .unwrap()
        .unwrap();
    let before = store.records();
    let last = before.last().unwrap().clone();
    assert_eq!(
        last.next_seq.0,
        last.acked.0 + 2,
        "both stored, neither acknowledged"
    );

    // The first is acknowledged, the second still out: the client's turn that takes the ACK
    // waits for no commit (a restarted client would offer "one" again, and the resume
    // handshake acknowledges it again).
    assert_eq!(peer.acknowledge(m1.seq), 1);
    tokio::time::timeout(WAIT, r1).await.unwrap().unwrap();
    let after = store.records();
    assert_eq!(
        &after[before.len()..],
        &[],
        "no commit for an acknowledgement alone while a message is out"
    );

    // The second: nothing is left out, and the store learns it.
    assert_eq!(peer.acknowledge(m2.seq), 1);
    tokio::time::timeout(WAIT, r2).await.unwrap().unwrap();
    let last = store.records().last().unwrap().clone();
    assert_eq!(last.acked, last.next_seq);
    let stored = store.load().unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].record.acked, last.next_seq);
    assert!(stored[0].outbox.is_empty(), "nothing stored is still out");
    client.close("done").await;
}
