//! The fleet's store (`PgStore`) against a real PostgreSQL started by the test (a private
//! cluster: `initdb` + `pg_ctl` in a temporary directory): claims move the epoch on and fence
//! the old owner's writes, ownership checks see the move, tokens are checked by hash, the
//! schema is created once by servers starting at once, commits wait out a database restart,
//! and sessions expire by the database's clock and with their server's lease. Whole processes (kills, SIGSTOP, HAProxy) are in the CLI's `tests/fleet.rs`.

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use steadfast::proto::{Message, ResumeToken, Role, Seq, SessionId, SessionRecord};
use steadfast::store::{Change, Claim, PgOptions, PgStore, SessionStore, StoreError};
use support::postgres::Postgres;

fn record(id: [u8; 16], token: [u8; 16], next: u64, acked: u64) -> SessionRecord {
    SessionRecord {
        role: Role::Server,
        id: Some(SessionId(id)),
        token: Some(ResumeToken(token)),
        issued: None,
        name: Some("fleet".into()),
        transforms: Vec::new(),
        next_seq: Seq(next),
        acked: Seq(acked),
        delivered: Seq(7),
    }
}

fn messages(from: u64, to: u64) -> Vec<Message> {
    (from..to)
        .map(|i| Message {
            seq: Seq(i),
            timestamp_us: i,
            body: Bytes::from(format!("m{i}")),
        })
        .collect()
}

fn put(id: [u8; 16], token: [u8; 16], next: u64, acked: u64, new: Vec<Message>) -> Change {
    Change::Put {
        key: id,
        record: record(id, token, next, acked),
        new_messages: new,
        last_seen_ms: 0,
        ended: false,
        lingering: false,
    }
}

/// The first write of a session: its creation.
fn create(id: [u8; 16], token: [u8; 16], next: u64, acked: u64, new: Vec<Message>) -> Vec<Change> {
    vec![
        Change::Created { key: id },
        put(id, token, next, acked, new),
    ]
}

async fn store(pg: &Postgres, node: &str) -> PgStore {
    PgStore::connect(&pg.url(), PgOptions::node(node))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_fences_the_old_owner_and_hands_over_the_outbox() {
    let pg = Postgres::start("claim");
    let a = store(&pg, "a").await;
    let b = store(&pg, "b").await;
    let (id, token) = ([1u8; 16], [2u8; 16]);
    // A creates the session and stores messages 0..10 in two commits, 0..3 acknowledged.
    a.submit(create(id, token, 5, 0, messages(0, 5)))
        .await
        .unwrap()
        .unwrap();
    a.submit(vec![put(id, token, 10, 3, messages(5, 10))])
        .await
        .unwrap()
        .unwrap();
    // A owns it; B, which never held it, is told it does not.
    assert_eq!(a.check_owner(id).await, Ok(()));
    assert_eq!(b.check_owner(id).await, Err(StoreError::Fenced));
    // A wrong token claims nothing, and fences nobody.
    let wrong = b.claim(id, ResumeToken([9; 16]), false).await.unwrap();
    assert!(matches!(wrong, Claim::Unknown), "{wrong:?}");
    assert_eq!(a.check_owner(id).await, Ok(()));
    a.submit(vec![put(id, token, 10, 3, Vec::new())])
        .await
        .unwrap()
        .unwrap();
    // B claims with the token: it gets the record and exactly the unacknowledged messages.
    let Claim::Loaded(s) = b.claim(id, ResumeToken(token), false).await.unwrap() else {
        panic!("the claim found nothing");
    };
    assert_eq!(s.record.acked, Seq(3));
    assert_eq!(s.record.next_seq, Seq(10));
    assert_eq!(s.record.delivered, Seq(7));
    assert_eq!(s.record.name.as_deref(), Some("fleet"));
    let seqs: Vec<u64> = s.outbox.iter().map(|m| m.seq.0).collect();
    assert_eq!(seqs, (3..10).collect::<Vec<_>>());
    assert_eq!(s.outbox[0].body, Bytes::from("m3"));
    // The check an application makes before it writes out what it took: A no longer owns it.
    assert_eq!(a.check_owner(id).await, Err(StoreError::Fenced));
    assert_eq!(b.check_owner(id).await, Ok(()));
    // A's next write is refused by the database; B's goes through.
    let refused = a
        .submit(vec![put(id, token, 11, 4, messages(10, 11))])
        .await;
    assert_eq!(refused.unwrap(), Err(StoreError::Fenced));
    b.submit(vec![put(id, token, 11, 5, messages(10, 11))])
        .await
        .unwrap()
        .unwrap();
    // A stays fenced (it no longer knows an epoch), and its refused message is not stored.
    let again = a
        .submit(vec![put(id, token, 12, 5, messages(11, 12))])
        .await;
    assert_eq!(again.unwrap(), Err(StoreError::Fenced));
    assert_eq!(
        pg.sql("SELECT next_seq, acked, owner, epoch FROM steadfast_sessions"),
        "11|5|b|2"
    );
    // Tokens are kept hashed: no row holds the token's bytes.
    assert_eq!(
        pg.sql(&format!(
            "SELECT count(*) FROM steadfast_sessions WHERE position('\\x{}'::bytea in coalesce(token_hash, '') || coalesce(issued_hash, '')) > 0",
            hex(&token)
        )),
        "0"
    );
    // B, holding it, keeps its copy on a claim of its own (a reconnect to the same server).
    let kept = b.claim(id, ResumeToken(token), true).await.unwrap();
    assert!(matches!(kept, Claim::Kept), "{kept:?}");
    assert_eq!(pg.sql("SELECT epoch FROM steadfast_sessions"), "3");
    // Segments: one row per commit, trimmed as acknowledged.
    b.submit(vec![put(id, token, 11, 11, Vec::new())])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pg.sql("SELECT count(*) FROM steadfast_outbox"), "0");
    // The end of the session deletes it.
    b.submit(vec![Change::Delete { key: id }])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pg.sql("SELECT count(*) FROM steadfast_sessions"), "0");
    // Once ended, it is nobody's: B's copy is not its own any more.
    assert_eq!(b.check_owner(id).await, Err(StoreError::Fenced));
    // A, fenced out, cannot create it again with a write of its copy.
    let again = a.submit(vec![put(id, token, 12, 5, Vec::new())]).await;
    assert_eq!(again.unwrap(), Err(StoreError::Fenced));
    assert_eq!(pg.sql("SELECT count(*) FROM steadfast_sessions"), "0");
    let gone = a.claim(id, ResumeToken(token), false).await.unwrap();
    assert!(matches!(gone, Claim::Unknown), "{gone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_starting_at_once_create_the_schema_once_and_refuse_another_version() {
    let pg = Postgres::start("schema");
    let url = pg.url();
    let mut starts = Vec::new();
    for i in 0..8 {
        let url = url.clone();
        starts.push(tokio::spawn(async move {
            PgStore::connect(&url, PgOptions::node(format!("n{i}"))).await
        }));
    }
    for s in starts {
        s.await.unwrap().unwrap();
    }
    assert_eq!(
        pg.sql("SELECT value FROM steadfast_meta WHERE key = 'schema'"),
        "2"
    );
    // A database of schema 1 (before fleet messaging) is brought to 2.
    pg.sql("DROP TABLE steadfast_mail; UPDATE steadfast_meta SET value = '1' WHERE key = 'schema'");
    drop(
        PgStore::connect(&url, PgOptions::node("upgrader"))
            .await
            .unwrap(),
    );
    assert_eq!(
        pg.sql("SELECT value FROM steadfast_meta WHERE key = 'schema'"),
        "2"
    );
    assert_eq!(pg.sql("SELECT count(*) FROM steadfast_mail"), "0");
    pg.sql("UPDATE steadfast_meta SET value = '99' WHERE key = 'schema'");
    let err = PgStore::connect(&url, PgOptions::node("late"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Foreign(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_wait_while_the_database_restarts_and_then_go_through() {
    let pg = Postgres::start("restart");
    let a = store(&pg, "a").await;
    let (id, token) = ([3u8; 16], [4u8; 16]);
    a.submit(create(id, token, 1, 0, messages(0, 1)))
        .await
        .unwrap()
        .unwrap();
    pg.stop();
    let pending = a.submit(vec![put(id, token, 2, 0, messages(1, 2))]);
    // The commit is waiting, not failed.
    let mut pending = Box::pin(pending);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut pending)
            .await
            .is_err(),
        "a commit was answered while the database was down"
    );
    pg.start_again();
    tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pg.sql("SELECT next_seq FROM steadfast_sessions"), "2");
    let _ = Arc::new(a);
}

/// Polls PostgreSQL, after running `each` (if any), until `query` prints `want` (at most
/// 30 s).
async fn until(pg: &Postgres, each: Option<&str>, query: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(sql) = each {
            pg.sql(sql);
        }
        let got = pg.sql(query);
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{query} still prints {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_by_the_database_clock_and_with_their_servers_lease() {
    let pg = Postgres::start("expiry");
    let options = |node: &str| {
        PgOptions::node(node)
            .linger(Duration::from_secs(60))
            .heartbeat(Duration::from_millis(50))
    };
    let a = PgStore::connect(&pg.url(), options("a")).await.unwrap();
    let token = [7u8; 16];
    let (held, old, recent) = ([10u8; 16], [11u8; 16], [12u8; 16]);
    let lingering = |id: [u8; 16]| Change::Put {
        key: id,
        record: record(id, token, 3, 0),
        new_messages: messages(0, 3),
        last_seen_ms: 0,
        ended: false,
        lingering: true,
    };
    a.submit(vec![
        Change::Created { key: held },
        put(held, token, 3, 0, messages(0, 3)),
        Change::Created { key: old },
        lingering(old),
        Change::Created { key: recent },
        lingering(recent),
    ])
    .await
    .unwrap()
    .unwrap();
    // Only the database's clock counts: one lingering session last seen an hour ago by it,
    // one seen now (the linger time is a minute, far longer than this test).
    pg.sql(&format!(
        "UPDATE steadfast_sessions SET last_seen = now() - interval '1 hour' WHERE id = '\\x{}'",
        hex(&old)
    ));
    let b = PgStore::connect(&pg.url(), options("b")).await.unwrap();
    let of = |id: [u8; 16]| {
        format!(
            "SELECT count(*) FROM steadfast_sessions WHERE id = '\\x{}'",
            hex(&id)
        )
    };
    until(&pg, None, &of(old), "0").await;
    // The sweep that removed it kept the others: one lingering within its time, one held by a
    // server whose lease is current. The expired one's outbox went with it.
    assert_eq!(pg.sql(&of(recent)), "1");
    assert_eq!(pg.sql(&of(held)), "1");
    assert_eq!(
        pg.sql(&format!(
            "SELECT count(*) FROM steadfast_outbox WHERE session = '\\x{}'",
            hex(&old)
        )),
        "0"
    );
    let gone = b.claim(old, ResumeToken(token), false).await.unwrap();
    assert!(matches!(gone, Claim::Unknown), "{gone:?}");
    // A's server stops renewing its lease, which ran out an hour ago by the database's clock:
    // the session it held expires too, and nothing else does.
    drop(a);
    until(
        &pg,
        Some("UPDATE steadfast_nodes SET alive_until = now() - interval '1 hour' WHERE name = 'a'"),
        &of(held),
        "0",
    )
    .await;
    assert_eq!(pg.sql(&of(recent)), "1");
    // A server restarted under a former one's name takes that one's sessions as lingering from
    // now on (its restart was their disconnect); the other's lease is untouched.
    let c = PgStore::connect(&pg.url(), options("c")).await.unwrap();
    let kept = [13u8; 16];
    c.submit(create(kept, token, 1, 0, Vec::new()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        pg.sql("SELECT lingering FROM steadfast_sessions WHERE owner = 'c'"),
        "f"
    );
    drop(c);
    let _again = PgStore::connect(&pg.url(), options("c")).await.unwrap();
    assert_eq!(
        pg.sql("SELECT lingering FROM steadfast_sessions WHERE owner = 'c'"),
        "t"
    );
    drop(b);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_servers_claiming_at_once_exactly_one_owns_the_session() {
    let pg = Postgres::start("race");
    let a = store(&pg, "a").await;
    let b = store(&pg, "b").await;
    let (id, token) = ([20u8; 16], [21u8; 16]);
    a.submit(create(id, token, 1, 0, messages(0, 1)))
        .await
        .unwrap()
        .unwrap();
    let mut won = [0usize; 2];
    for round in 0..100u64 {
        let (ca, cb) = tokio::join!(
            a.claim(id, ResumeToken(token), round % 2 == 0),
            b.claim(id, ResumeToken(token), round % 2 == 1),
        );
        assert!(!matches!(ca.unwrap(), Claim::Unknown));
        assert!(!matches!(cb.unwrap(), Claim::Unknown));
        // Both write at once: the database takes exactly one of them, and the ownership
        // checks agree with it.
        let next = round + 2;
        let (wa, wb) = tokio::join!(
            a.submit(vec![put(id, token, next, 0, messages(next - 1, next))]),
            b.submit(vec![put(id, token, next, 0, messages(next - 1, next))]),
        );
        let (wa, wb) = (wa.unwrap(), wb.unwrap());
        let (oa, ob) = tokio::join!(a.check_owner(id), b.check_owner(id));
        match (&wa, &wb) {
            (Ok(()), Err(StoreError::Fenced)) => {
                won[0] += 1;
                assert_eq!((oa, ob), (Ok(()), Err(StoreError::Fenced)));
            }
            (Err(StoreError::Fenced), Ok(())) => {
                won[1] += 1;
                assert_eq!((oa, ob), (Err(StoreError::Fenced), Ok(())));
            }
            other => panic!("round {round}: both or neither wrote: {other:?}"),
        }
    }
    println!(
        "claim race: a owned it after {} rounds, b after {}",
        won[0], won[1]
    );
}

// ------------------------------------------------------------------ fleet messaging

use steadfast::{Client, ClientConfig, Server, ServerConfig};

/// A server of the fleet on loopback, its store named `node`; its new sessions are taken (and
/// their messages read) by a task of its own, so nothing waits on the application.
async fn member(pg: &Postgres, options: PgOptions) -> Server {
    let store = PgStore::connect(&pg.url(), options).await.unwrap();
    let server = Server::bind(
        ["127.0.0.1:0"],
        ServerConfig::default().store(Arc::new(store)),
    )
    .await
    .unwrap();
    let s = server.clone();
    tokio::spawn(async move { while s.accept().await.is_some() {} });
    server
}

/// `n` clients of `server`, with their session ids.
async fn clients(server: &Server, n: usize) -> Vec<(SessionId, Client)> {
    let addr = server.local_addrs()[0].to_string();
    let mut out = Vec::new();
    for _ in 0..n {
        let c = Client::connect(addr.as_str(), ClientConfig::default())
            .await
            .unwrap();
        out.push((c.id().unwrap(), c));
    }
    out
}

/// Reads `n` messages from `client` and checks they are `prefix0`, `prefix1`, … in order.
async fn expect_in_order(client: &Client, prefix: &str, n: usize) {
    for i in 0..n {
        let m = tokio::time::timeout(Duration::from_secs(60), client.recv())
            .await
            .unwrap_or_else(|_| panic!("message {i} of {n} did not arrive"))
            .unwrap();
        assert_eq!(m.body, Bytes::from(format!("{prefix}{i}")), "message {i}");
    }
}

/// Sends `n` numbered messages from `from` to each session and waits for every receipt.
async fn send_numbered(from: &Server, ids: &[SessionId], prefix: &str, n: usize) {
    let mut receipts = Vec::new();
    for i in 0..n {
        for id in ids {
            receipts.push(from.send_to(*id, format!("{prefix}{i}")).await.unwrap());
        }
    }
    for r in receipts {
        tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .expect("a receipt never resolved")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn send_to_reaches_sessions_on_other_servers_in_order_with_receipts() {
    let pg = Postgres::start("send-to");
    let a = member(&pg, PgOptions::node("a")).await;
    let b = member(&pg, PgOptions::node("b")).await;
    let c = member(&pg, PgOptions::node("c")).await;
    let mut all = clients(&b, 2).await;
    all.extend(clients(&c, 2).await);
    let ids: Vec<SessionId> = all.iter().map(|(id, _)| *id).collect();
    let n = 500;
    let readers: Vec<_> = all
        .into_iter()
        .map(|(_, client)| {
            tokio::spawn(async move {
                expect_in_order(&client, "m", n).await;
                client
            })
        })
        .collect();
    send_numbered(&a, &ids, "m", n).await;
    let all: Vec<Client> = futures_join(readers).await;
    // Many at once, in one statement: in order, a receipt each.
    let batch = (0..300).map(|i| format!("x{i}"));
    let receipts = a.send_all_to(ids[0], batch).await.unwrap();
    assert_eq!(receipts.len(), 300);
    expect_in_order(&all[0], "x", 300).await;
    for r in receipts {
        tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .unwrap()
            .unwrap();
    }
    // No such session: an error at once, nothing stored.
    let unknown = a.send_to(SessionId([9; 16]), "lost?").await;
    assert_eq!(unknown.unwrap_err(), steadfast::SendToError::NoSuchSession);
    let unknown = a.send_all_to(SessionId([9; 16]), ["a", "b"]).await;
    assert_eq!(unknown.unwrap_err(), steadfast::SendToError::NoSuchSession);
    // The fleet's sessions, as any server sees them.
    let listed = a.fleet_sessions().await.unwrap();
    let mut nodes: Vec<String> = listed.iter().map(|s| s.node.clone()).collect();
    nodes.sort();
    assert_eq!(nodes, ["b", "b", "c", "c"]);
    // Nothing left behind: every mail was delivered and its receipt collected.
    assert_eq!(pg.sql("SELECT count(*) FROM steadfast_mail"), "0");
    drop(all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_notifications_the_sweep_alone_delivers() {
    let pg = Postgres::start("sweep");
    let quiet = |node: &str| {
        PgOptions::node(node)
            .notifications(false)
            .heartbeat(Duration::from_millis(100))
    };
    let a = member(&pg, quiet("a")).await;
    let b = member(&pg, quiet("b")).await;
    let all = clients(&b, 1).await;
    let ids = [all[0].0];
    let reader = {
        let (_, client) = all.into_iter().next().unwrap();
        // The client is kept (handed back): dropping it would end the session unacknowledged.
        tokio::spawn(async move {
            expect_in_order(&client, "q", 50).await;
            client
        })
    };
    send_numbered(&a, &ids, "q", 50).await;
    let client = reader.await.unwrap();
    // Nothing was told: no listener, no notification sent by any statement.
    assert_eq!(
        pg.sql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"),
        "0"
    );
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_broadcast_reaches_every_session_each_with_its_receipt() {
    let pg = Postgres::start("broadcast");
    let servers = [
        member(&pg, PgOptions::node("a")).await,
        member(&pg, PgOptions::node("b")).await,
        member(&pg, PgOptions::node("c")).await,
    ];
    let mut all = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        all.extend(clients(s, [400, 300, 300][i]).await);
    }
    let started = std::time::Instant::now();
    let posted = servers[0].broadcast_fleet("to all").await.unwrap();
    let stored = started.elapsed();
    assert_eq!(posted.len(), 1_000);
    let mut expected: Vec<SessionId> = all.iter().map(|(id, _)| *id).collect();
    let mut got: Vec<SessionId> = posted.iter().map(|(id, _)| *id).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    let readers: Vec<_> = all
        .into_iter()
        .map(|(_, client)| {
            tokio::spawn(async move {
                let m = tokio::time::timeout(Duration::from_secs(60), client.recv())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(m.body, Bytes::from("to all"));
                client
            })
        })
        .collect();
    let clients = futures_join(readers).await;
    for (_, r) in posted {
        tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .unwrap()
            .unwrap();
    }
    println!(
        "fleet broadcast to 1,000 sessions on 3 servers: stored in {:.1} ms, every receipt \
         resolved after {:.1} ms; {} bytes of mail table",
        stored.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64() * 1e3,
        pg.sql("SELECT pg_total_relation_size('steadfast_mail')")
    );
    drop(clients);
}

async fn futures_join<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_owners_own_messages_and_fleet_mail_share_one_sequence() {
    let pg = Postgres::start("one-sequence");
    let a = member(&pg, PgOptions::node("a")).await;
    let b = member(&pg, PgOptions::node("b")).await;
    let (id, client) = clients(&b, 1).await.pop().unwrap();
    let n = 200;
    // The owner's own sends and another server's send_to, at the same time.
    let local = {
        let peer = b.peer(id).unwrap();
        tokio::spawn(async move {
            for i in 0..n {
                peer.send(format!("L{i}")).await.unwrap();
            }
        })
    };
    let remote = {
        let a = a.clone();
        tokio::spawn(async move {
            let mut receipts = Vec::new();
            for i in 0..n {
                receipts.push(a.send_to(id, format!("M{i}")).await.unwrap());
            }
            // A typed value goes the same way.
            receipts.push(a.send_value_to(id, &("typed", 7u32)).await.unwrap());
            for r in receipts {
                r.await.unwrap();
            }
        })
    };
    let (mut next_local, mut next_remote, mut last_seq) = (0, 0, None);
    while next_local < n || next_remote <= n {
        let m = tokio::time::timeout(Duration::from_secs(60), client.recv())
            .await
            .unwrap()
            .unwrap();
        // One sequence: numbers follow each other whoever appended.
        if let Some(s) = last_seq {
            assert_eq!(m.seq.0, s + 1);
        }
        last_seq = Some(m.seq.0);
        if next_remote == n && m.body.first() != Some(&b'L') {
            let v: (String, u32) = m.decode().unwrap();
            assert_eq!(v, ("typed".to_owned(), 7));
            next_remote += 1;
        } else if m.body.first() == Some(&b'L') {
            assert_eq!(m.body, Bytes::from(format!("L{next_local}")));
            next_local += 1;
        } else {
            assert_eq!(m.body, Bytes::from(format!("M{next_remote}")));
            next_remote += 1;
        }
    }
    local.await.unwrap();
    remote.await.unwrap();
}
