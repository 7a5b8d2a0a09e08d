//! A chat room, after pnetwork's chat: a server with named routes (`chat.join`, `chat.send`)
//! that relays every chat line to all the other members, and three clients talking at once.
//! Each client checks that it received every other client's lines exactly once and in that
//! client's order, and a route nobody handles gets the defined error reply
//! ([`UNKNOWN_ROUTE`]). Exits non-zero if anything is wrong.
//!
//! The relay is a broadcast at the route level: once a peer is driven by an [`Rpc`], every
//! message to it must be an rpc envelope, so the server sends each line with
//! [`Rpc::notify`] to every member's `chat.line` route rather than with the raw
//! `Server::broadcast` (which sends the same plain body to every session and suits peers
//! that read with `recv`).
//!
//! `cargo run -p steadfast --features serde --example chat`

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use steadfast::rpc::{RequestError, Router, Rpc, UNKNOWN_ROUTE};
use steadfast::{Client, ClientConfig, Server, ServerConfig, ServerEvent, SessionId};

const NAMES: [&str; 3] = ["ada", "grace", "linus"];
const LINES: u32 = 100;
const WAIT: Duration = Duration::from_secs(10);

/// A chat line as relayed to the members.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Line {
    from: String,
    text: String,
}

/// The server's state: every session's rpc handle, and the nickname of those who joined.
#[derive(Default)]
struct Room {
    sessions: HashMap<SessionId, Arc<Rpc>>,
    members: BTreeMap<SessionId, String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn chat_router(room: Arc<Mutex<Room>>) -> Router {
    let (join_room, send_room) = (room.clone(), room);
    Router::new()
        // A request: takes a nickname, answers with the members' nicknames, sorted.
        .route("chat.join", move |ctx, nick: String| {
            let room = join_room.clone();
            async move {
                let id = ctx.peer.id().ok_or("no session id")?;
                let mut room = lock(&room);
                room.members.insert(id, nick);
                let mut present: Vec<String> = room.members.values().cloned().collect();
                present.sort();
                Ok::<_, String>(present)
            }
        })
        // A one-way message: one chat line, relayed to every other member. One-way messages
        // of a session are handled one at a time, in order, so each sender's lines go out in
        // the order they were said.
        .route("chat.send", move |ctx, text: String| {
            let room = send_room.clone();
            async move {
                let id = ctx.peer.id().ok_or("no session id")?;
                let (line, others) = {
                    let room = lock(&room);
                    let from = room.members.get(&id).ok_or("join first")?.clone();
                    let others: Vec<Arc<Rpc>> = room
                        .members
                        .keys()
                        .filter(|m| **m != id)
                        .filter_map(|m| room.sessions.get(m).cloned())
                        .collect();
                    (Line { from, text }, others)
                };
                for rpc in others {
                    // A member that left meanwhile is simply skipped.
                    let _ = rpc.notify("chat.line", &line).await;
                }
                Ok::<_, String>(())
            }
        })
}

/// Runs the server until `expected` sessions have ended; returns how many it saw.
async fn serve(server: Server, expected: usize) -> usize {
    let room: Arc<Mutex<Room>> = Arc::default();
    let router = chat_router(room.clone());
    let mut ended = 0;
    while let Some(event) = server.next_event().await {
        match event {
            ServerEvent::Connected { peer } => {
                if let Some(id) = peer.id() {
                    // Registered under the lock, so a `chat.join` handled at once finds it.
                    let mut room = lock(&room);
                    room.sessions
                        .insert(id, Arc::new(Rpc::new(peer, router.clone())));
                }
            }
            ServerEvent::Ended { peer, .. } | ServerEvent::Expired { peer, .. } => {
                if let Some(id) = peer.id() {
                    let mut room = lock(&room);
                    room.members.remove(&id);
                    room.sessions.remove(&id);
                }
                ended += 1;
                if ended == expected {
                    break;
                }
            }
            _ => {}
        }
    }
    let _ = server.shutdown(Duration::from_millis(100)).await;
    ended
}

/// A chat client: its rpc handle and the lines it has received.
struct Member {
    name: &'static str,
    client: Client,
    rpc: Rpc,
    heard: Arc<Mutex<Vec<Line>>>,
}

async fn member(addr: &str, name: &'static str) -> Result<Member, Box<dyn std::error::Error>> {
    let client = Client::connect(addr, ClientConfig::default().name(name)).await?;
    let heard: Arc<Mutex<Vec<Line>>> = Arc::default();
    let sink = heard.clone();
    let router = Router::new().route("chat.line", move |_ctx, line: Line| {
        let sink = sink.clone();
        async move {
            lock(&sink).push(line);
            Ok::<_, String>(())
        }
    });
    let rpc = Rpc::new(client.peer().clone(), router);
    Ok(Member {
        name,
        client,
        rpc,
        heard,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::bind(["127.0.0.1:0"], ServerConfig::default()).await?;
    let addr = server.local_addrs()[0].to_string();
    let server_task = tokio::spawn(serve(server, NAMES.len()));

    // Everyone joins before anyone talks, so every line has all three listeners.
    let mut members = Vec::new();
    for name in NAMES {
        let m = member(&addr, name).await?;
        let present: Vec<String> = m.rpc.request("chat.join", name, WAIT).await?;
        println!("chat: {name} joined; present: {present:?}");
        members.push(Arc::new(m));
    }

    // All three talk at once.
    let mut talkers = Vec::new();
    for m in &members {
        let m = m.clone();
        talkers.push(tokio::spawn(async move {
            for i in 0..LINES {
                m.rpc
                    .notify("chat.send", &format!("{} says {i}", m.name))
                    .await?;
            }
            Ok::<_, RequestError>(())
        }));
    }
    for t in talkers {
        t.await??;
    }

    // Each member hears the other two: all their lines, once each, each sender's in order.
    let expected = (NAMES.len() as u32 - 1) * LINES;
    for m in &members {
        let deadline = Instant::now() + WAIT;
        while lock(&m.heard).len() < expected as usize {
            if Instant::now() > deadline {
                return Err(format!("{} heard only {} lines", m.name, lock(&m.heard).len()).into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await; // room for a duplicate to show up
    for m in &members {
        let heard = lock(&m.heard).clone();
        if heard.len() != expected as usize {
            return Err(format!("{} heard {} lines, not {expected}", m.name, heard.len()).into());
        }
        for other in NAMES.iter().filter(|n| **n != m.name) {
            let got: Vec<&str> = heard
                .iter()
                .filter(|l| l.from == *other)
                .map(|l| l.text.as_str())
                .collect();
            let want: Vec<String> = (0..LINES).map(|i| format!("{other} says {i}")).collect();
            if got != want {
                return Err(
                    format!("{} did not hear {other}'s lines once each in order", m.name).into(),
                );
            }
        }
        println!(
            "chat: {} heard {} lines from the other two, once each, in order",
            m.name,
            heard.len()
        );
    }

    // A route nobody handles: the defined error reply, never silence.
    match members[0]
        .rpc
        .request::<_, ()>("chat.kick", "linus", WAIT)
        .await
    {
        Err(RequestError::Handler(e)) if e == UNKNOWN_ROUTE => {
            println!("chat: chat.kick answered {e:?}");
        }
        other => return Err(format!("expected {UNKNOWN_ROUTE:?}, got {other:?}").into()),
    }

    for m in &members {
        m.client.close("bye").await;
    }
    let ended = tokio::time::timeout(WAIT, server_task).await??;
    if ended != NAMES.len() {
        return Err(format!("the server saw {ended} sessions end").into());
    }
    Ok(())
}
