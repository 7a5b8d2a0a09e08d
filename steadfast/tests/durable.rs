//! Sessions kept in a store survive the death of the `Server` or `Client` that carried them:
//! restarts inside one process with a `MemoryStore`, and the on-disk `DurableStore`'s checks.
//! (Real process kills are in the CLI's tests.)

#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use steadfast::store::{MemoryStore, SessionStore};
use steadfast::{Client, ClientConfig, Peer, Server, ServerConfig, ServerEvent};

const WAIT: Duration = Duration::from_secs(20);

fn n(m: &steadfast::Message) -> u64 {
    u64::from_be_bytes(m.body[..8].try_into().unwrap())
}

fn body(i: u64) -> Vec<u8> {
    i.to_be_bytes().to_vec()
}

async fn next_peer(server: &mut Server) -> Peer {
    loop {
        match tokio::time::timeout(WAIT, server.next_event())
            .await
            .unwrap()
        {
            Some(ServerEvent::Connected { peer } | ServerEvent::Resumed { peer }) => return peer,
            Some(_) => continue,
            None => panic!("server stopped"),
        }
    }
}

/// Binds `addr` again once the dropped server's listener is gone (its task ends shortly after
/// the drop): a condition with a deadline.
async fn rebind(addr: std::net::SocketAddr, config: ServerConfig) -> Server {
    for _ in 0..500 {
        match Server::bind([addr], config.clone()).await {
            Ok(s) => return s,
            Err(steadfast::error::BindError::Io { .. }) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("{addr} stayed in use")
}

fn fast_client(store: Option<Arc<dyn SessionStore>>) -> ClientConfig {
    let c = ClientConfig::default().backoff(Duration::from_millis(5), Duration::from_millis(50));
    match store {
        Some(s) => c.store(s),
        None => c,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_resumes_its_sessions_and_loses_nothing_acknowledged() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let server = Server::bind(
        ["127.0.0.1:0"],
        ServerConfig::default().store(store.clone()),
    )
    .await
    .unwrap();
    let addr = server.local_addrs()[0];
    let mut server = server;
    let client = Client::connect(addr.to_string(), fast_client(None))
        .await
        .unwrap();
    let peer = next_peer(&mut server).await;

    // The server's application takes the first 50 of 100; their receipts resolve.
    let mut receipts = Vec::new();
    for i in 0..100 {
        receipts.push(client.send(body(i)).await.unwrap());
    }
    for i in 0..50 {
        assert_eq!(
            n(&tokio::time::timeout(WAIT, peer.recv())
                .await
                .unwrap()
                .unwrap()),
            i
        );
    }
    tokio::time::timeout(WAIT, receipts.remove(49))
        .await
        .unwrap()
        .unwrap();
    // The server sends 10 the client does not read yet.
    for i in 0..10 {
        peer.send(body(1_000 + i)).await.unwrap();
    }
    tokio::time::timeout(WAIT, async {
        while client.waiting() < 10 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();

    // The server dies (dropped, nothing graceful) and a new one starts on the same store.
    drop(peer);
    drop(server);
    let mut server = rebind(addr, ServerConfig::default().store(store.clone())).await;
    assert_eq!(
        server.peers().len(),
        1,
        "the stored session is back, lingering"
    );
    let peer = next_peer(&mut server).await;
    // Exactly the ones not taken before come, in order, once.
    for i in 50..100 {
        assert_eq!(
            n(&tokio::time::timeout(WAIT, peer.recv())
                .await
                .unwrap()
                .unwrap()),
            i
        );
    }
    tokio::time::timeout(WAIT, receipts.pop().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(receipts.iter().all(|r| r.is_acknowledged()));
    // The client reads its 10 once (a resend after the restart is dropped as a duplicate).
    for i in 0..10 {
        assert_eq!(n(&client.recv().await.unwrap()), 1_000 + i);
    }
    peer.send(body(2_000)).await.unwrap();
    assert_eq!(n(&client.recv().await.unwrap()), 2_000);
    assert_eq!(client.waiting(), 0);
    client.close("done").await;
    // A closed session is forgotten by the store.
    tokio::time::timeout(WAIT, async {
        while !store.load().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_client_resends_what_was_not_acknowledged_and_continues_its_numbers() {
    let mut server = Server::bind(["127.0.0.1:0"], ServerConfig::default())
        .await
        .unwrap();
    let addr = server.local_addrs()[0].to_string();
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let client = Client::connect(&addr, fast_client(Some(store.clone())))
        .await
        .unwrap();
    let peer = next_peer(&mut server).await;
    let mut last = None;
    for i in 0..100 {
        last = Some(client.send(body(i)).await.unwrap());
    }
    for i in 0..30 {
        assert_eq!(n(&peer.recv().await.unwrap()), i);
    }
    // Wait until all 100 are stored and sent (the server has received them all).
    tokio::time::timeout(WAIT, async {
        while peer.waiting() < 70 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();
    let last = last.unwrap();
    assert!(!last.is_acknowledged());
    // The client process "dies".
    drop(client);
    // A first attempt that cannot reach anything leaves the stored session as it was.
    let before = store.load().unwrap();
    assert!(
        Client::connect("127.0.0.1:1", fast_client(Some(store.clone())))
            .await
            .is_err()
    );
    assert_eq!(store.load().unwrap(), before);
    // All 100 were stored (sent); the ones the server acknowledged in time are gone.
    assert_eq!(before[0].record.next_seq.0, 101);
    assert!(
        !before[0].ended && before[0].outbox.len() >= 70,
        "{:?}",
        before[0].record
    );
    // A new client with the same store resumes the same session.
    let client = Client::connect(&addr, fast_client(Some(store.clone())))
        .await
        .unwrap();
    let same = next_peer(&mut server).await;
    assert_eq!(same.id(), peer.id(), "resumed, not a new session");
    for i in 30..100 {
        assert_eq!(
            n(&tokio::time::timeout(WAIT, same.recv())
                .await
                .unwrap()
                .unwrap()),
            i
        );
    }
    tokio::time::timeout(WAIT, client.flush())
        .await
        .unwrap()
        .unwrap();
    // A graceful end; the next session's numbers continue the old ones (what was ever
    // queued is known across runs).
    client.close("done").await;
    let stored = store.load().unwrap();
    assert!(stored[0].ended);
    let client = Client::connect(&addr, fast_client(Some(store.clone())))
        .await
        .unwrap();
    let receipt = client.send(body(100)).await.unwrap();
    let fresh = next_peer(&mut server).await;
    assert_ne!(fresh.id(), peer.id(), "a new session after the end");
    let m = fresh.recv().await.unwrap();
    assert_eq!((n(&m), m.seq.0, receipt.seq().0), (100, 101, 101));
    client.close("done").await;
}

#[cfg(feature = "durable")]
mod on_disk {
    use super::*;
    use steadfast::store::{DurableStore, StoreError, StoreRole};

    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "steadfast-{name}-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn foreign_locked_other_role_and_damaged_state_are_refused_and_left_alone() {
        let dir = TempDir::new("checks");
        // Another role's state.
        drop(DurableStore::open(&dir.0, StoreRole::Server).unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(
                mode(&dir.0),
                0o700,
                "tokens at rest: the directory is private"
            );
            assert_eq!(mode(&dir.0.join("steadfast.redb")), 0o600);
        }
        let err = DurableStore::open(&dir.0, StoreRole::Client).unwrap_err();
        assert!(
            matches!(&err, StoreError::Foreign(why) if why.contains("server state")),
            "{err}"
        );
        // One process at a time.
        let held = DurableStore::open(&dir.0, StoreRole::Server).unwrap();
        let err = DurableStore::open(&dir.0, StoreRole::Server).unwrap_err();
        assert!(
            matches!(&err, StoreError::Io(why) if why.contains("in use")),
            "{err}"
        );
        drop(held);
        // A file that is not ours is not overwritten.
        let other = TempDir::new("foreign");
        std::fs::create_dir_all(&other.0).unwrap();
        let file = other.0.join("steadfast.redb");
        std::fs::write(&file, b"someone else's data, not a database").unwrap();
        let err = DurableStore::open(&other.0, StoreRole::Server).unwrap_err();
        assert!(
            matches!(err, StoreError::Foreign(_) | StoreError::Corrupt(_)),
            "{err}"
        );
        assert_eq!(
            std::fs::read(&file).unwrap(),
            b"someone else's data, not a database"
        );
        // Damage in the middle of a real state file is detected when opening or loading.
        let path = dir.0.join("steadfast.redb");
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 64] {
            *b ^= 0xa5;
        }
        bytes.truncate(bytes.len() - 100);
        std::fs::write(&path, &bytes).unwrap();
        let opened = DurableStore::open(&dir.0, StoreRole::Server);
        let loaded = opened.as_ref().map(|s| s.load());
        assert!(
            !matches!(loaded, Ok(Ok(_))),
            "a damaged state file was accepted"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_on_disk_resumes_after_a_restart() {
        let dir = TempDir::new("server");
        let store: Arc<dyn SessionStore> =
            Arc::new(DurableStore::open(&dir.0, StoreRole::Server).unwrap());
        let mut server = Server::bind(["127.0.0.1:0"], ServerConfig::default().store(store))
            .await
            .unwrap();
        let addr = server.local_addrs()[0];
        let client = Client::connect(addr.to_string(), fast_client(None))
            .await
            .unwrap();
        let peer = next_peer(&mut server).await;
        let mut last = None;
        for i in 0..1_000 {
            last = Some(client.send(body(i)).await.unwrap());
        }
        for i in 0..400 {
            assert_eq!(n(&peer.recv().await.unwrap()), i);
        }
        drop(peer);
        drop(server);
        // The database file is closed once the old server's tasks are gone; retry briefly.
        let store = {
            let mut tries = 0;
            loop {
                match DurableStore::open(&dir.0, StoreRole::Server) {
                    Ok(s) => break s,
                    Err(e) if tries < 200 => {
                        tries += 1;
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        };
        let mut server = rebind(addr, ServerConfig::default().store(Arc::new(store))).await;
        let peer = next_peer(&mut server).await;
        // Messages taken before the restart may come again only if their ACK had not been
        // committed; from there on every message comes once, in order.
        let first = n(&tokio::time::timeout(WAIT, peer.recv())
            .await
            .unwrap()
            .unwrap());
        assert!(
            first <= 400,
            "skipped messages: first after restart is {first}"
        );
        for i in first + 1..1_000 {
            assert_eq!(
                n(&tokio::time::timeout(WAIT, peer.recv())
                    .await
                    .unwrap()
                    .unwrap()),
                i
            );
        }
        tokio::time::timeout(WAIT, last.unwrap())
            .await
            .unwrap()
            .unwrap();
        client.close("done").await;
    }
}

#[cfg(feature = "durable")]
mod on_disk_records {
    use bytes::Bytes;
    use steadfast::Message;
    use steadfast::proto::{ResumeToken, Role, Seq, SessionId, SessionRecord};
    use steadfast::store::{CLIENT_KEY, Change, DurableStore, SessionStore, StoreRole};

    fn msg(seq: u64, tag: &str) -> Message {
        Message {
            seq: Seq(seq),
            timestamp_us: seq,
            body: Bytes::from(format!("{tag} {seq}")),
        }
    }

    fn record(next: u64, acked: u64, live: bool) -> SessionRecord {
        SessionRecord {
            role: Role::Client,
            id: live.then_some(SessionId([9; 16])),
            token: live.then_some(ResumeToken([8; 16])),
            issued: None,
            name: None,
            transforms: Vec::new(),
            next_seq: Seq(next),
            acked: Seq(acked),
            delivered: Seq(1),
        }
    }

    #[tokio::test]
    async fn a_session_ended_with_messages_out_leaves_nothing_stale_for_the_next_one() {
        let dir = std::env::temp_dir().join(format!(
            "steadfast-stale-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let store = DurableStore::open(&dir, StoreRole::Client).unwrap();
        let put = |record, new_messages, ended| Change::Put {
            key: CLIENT_KEY,
            record,
            new_messages,
            last_seen_ms: 1,
            ended,
            lingering: false,
        };
        // A live session stored 1..11 in two commit groups, 1..4 acknowledged.
        store
            .submit(vec![put(
                record(6, 1, true),
                (1..6).map(|s| msg(s, "old")).collect(),
                false,
            )])
            .await
            .unwrap()
            .unwrap();
        store
            .submit(vec![put(
                record(11, 4, true),
                (6..11).map(|s| msg(s, "old")).collect(),
                false,
            )])
            .await
            .unwrap()
            .unwrap();
        // It ends with 4..11 unacknowledged: the next session starts again at 4.
        store
            .submit(vec![put(record(4, 4, false), Vec::new(), true)])
            .await
            .unwrap()
            .unwrap();
        let loaded = store.load().unwrap();
        assert!(loaded[0].ended && loaded[0].outbox.is_empty());
        // The next session reuses 4..8 with other bodies.
        store
            .submit(vec![put(
                record(8, 4, true),
                (4..8).map(|s| msg(s, "new")).collect(),
                false,
            )])
            .await
            .unwrap()
            .unwrap();
        drop(store);
        let store = DurableStore::open(&dir, StoreRole::Client).unwrap();
        let loaded = store.load().unwrap();
        let bodies: Vec<String> = loaded[0]
            .outbox
            .iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect();
        assert_eq!(bodies, ["new 4", "new 5", "new 6", "new 7"]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The store times its commits: none before the first, each one counted after, with a
    /// median no longer than the 99th percentile.
    #[tokio::test]
    async fn commit_latency_counts_every_commit() {
        let dir = std::env::temp_dir().join(format!(
            "steadfast-latency-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let store = DurableStore::open(&dir, StoreRole::Client).unwrap();
        assert_eq!(store.commit_latency().commits, 0);
        for i in 1..=5u64 {
            let change = Change::Put {
                key: CLIENT_KEY,
                record: record(i + 1, 1, true),
                new_messages: vec![msg(i, "timed")],
                last_seen_ms: 1,
                ended: false,
                lingering: false,
            };
            store.submit(vec![change]).await.unwrap().unwrap();
        }
        let latency = store.commit_latency();
        assert_eq!(latency.commits, 5);
        assert!(latency.p50 <= latency.p99, "{latency:?}");
        assert!(
            !latency.p99.is_zero(),
            "a synced commit takes time: {latency:?}"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

mod review {
    //! Found by review: each failed before its fix.

    use std::sync::atomic::{AtomicBool, Ordering};

    use steadfast::ClientEvent;
    use steadfast::error::ConnectError;
    use steadfast::store::{Change, StoreError, StoredSession};
    use tokio::sync::oneshot;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connected_idle_session_survives_a_server_crash_longer_after_than_linger() {
        let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
        let config = ServerConfig::default()
            .store(store.clone())
            .linger(Duration::from_secs(1));
        let mut server = Server::bind(["127.0.0.1:0"], config.clone()).await.unwrap();
        let addr = server.local_addrs()[0];
        let client = Client::connect(addr.to_string(), fast_client(None))
            .await
            .unwrap();
        let peer = next_peer(&mut server).await;
        peer.send(b"hello".to_vec()).await.unwrap();
        assert_eq!(client.recv().await.unwrap().body, "hello");
        // Connected and idle for longer than the linger time: nothing to commit meanwhile.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert!(client.is_connected());
        while client.try_next_event().is_some() {}
        drop(peer);
        drop(server);
        let _server = rebind(addr, config).await;
        let got = tokio::time::timeout(WAIT, async {
            loop {
                match client.next_event().await {
                    Some(ClientEvent::Connected { resumed }) => return Ok(resumed),
                    Some(ClientEvent::SessionLost { reason, .. }) => return Err(reason.to_string()),
                    Some(_) => {}
                    None => return Err("no events".to_string()),
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(got, Ok(true), "the crash counts as the disconnect");
    }

    /// A store whose commits fail while `fail` is set.
    #[derive(Debug, Default)]
    struct FlakyStore {
        inner: MemoryStore,
        fail: AtomicBool,
    }

    impl SessionStore for FlakyStore {
        fn load(&self) -> Result<Vec<StoredSession>, StoreError> {
            self.inner.load()
        }
        fn submit(&self, c: Vec<Change>) -> oneshot::Receiver<Result<(), StoreError>> {
            if self.fail.load(Ordering::SeqCst) {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Err(StoreError::Io("disk full".into())));
                return rx;
            }
            self.inner.submit(c)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failing_commits_drop_the_connection_and_the_client_comes_back() {
        let mut server = Server::bind(["127.0.0.1:0"], ServerConfig::default())
            .await
            .unwrap();
        let addr = server.local_addrs()[0];
        let store = Arc::new(FlakyStore::default());
        let client = Client::connect(addr.to_string(), fast_client(Some(store.clone())))
            .await
            .unwrap();
        let peer = next_peer(&mut server).await;
        store.fail.store(true, Ordering::SeqCst);
        let receipt = client.send(b"x".to_vec()).await.unwrap();
        // The client keeps trying (each attempt's first commit fails) until the store works.
        tokio::time::timeout(WAIT, async {
            while client.stats().connections < 4 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap();
        assert!(!receipt.is_acknowledged());
        store.fail.store(false, Ordering::SeqCst);
        let m = tokio::time::timeout(WAIT, peer.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.body, "x");
        tokio::time::timeout(WAIT, receipt).await.unwrap().unwrap();
        client.close("done").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restored_session_refused_on_its_first_connection_hands_its_messages_back() {
        let mut server = Server::bind(["127.0.0.1:0"], ServerConfig::default())
            .await
            .unwrap();
        let addr = server.local_addrs()[0];
        let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
        let client = Client::connect(addr.to_string(), fast_client(Some(store.clone())))
            .await
            .unwrap();
        let peer = next_peer(&mut server).await;
        for i in 0..10u8 {
            client.send(vec![i]).await.unwrap();
        }
        tokio::time::timeout(WAIT, async {
            while peer.waiting() < 10 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap();
        // Both die; the server had no store, so the session is gone with it.
        drop(client);
        drop(peer);
        drop(server);
        assert_eq!(store.load().unwrap()[0].outbox.len(), 10);
        let _server = rebind(addr, ServerConfig::default()).await;
        let err = Client::connect(addr.to_string(), fast_client(Some(store.clone())))
            .await
            .err()
            .unwrap();
        let ConnectError::SessionLost { unacknowledged, .. } = err else {
            panic!("{err}")
        };
        let bodies: Vec<u8> = unacknowledged.iter().map(|m| m.body[0]).collect();
        assert_eq!(bodies, (0..10).collect::<Vec<u8>>());
        // The store recorded the end: the next run starts a new session at the first of them.
        let stored = store.load().unwrap();
        assert!(stored[0].ended && stored[0].record.next_seq.0 == 1);
    }
}
