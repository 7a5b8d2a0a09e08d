//! Sessions shared by a fleet of servers in PostgreSQL (feature `postgres`, PROTOCOL.md §13).
//!
//! Every server of the fleet opens the same database. A session lives in one row of
//! `steadfast_sessions` with an *epoch*; its unacknowledged messages live in
//! `steadfast_outbox`, one row per commit (a segment), not one per message. A resume on any
//! server [claims](SessionStore::claim) the session: one `UPDATE` checks the token's hash and
//! moves the epoch on. Every later write of a server names the epoch it holds; a write with an
//! older one changes no row, the store answers [`StoreError::Fenced`], and that server drops
//! the session at once.
//!
//! One task per store writes: it takes every change waiting, from every session, and commits
//! them in one statement (one transaction, one WAL flush). Claims go through the same task, in
//! order with the commits. Lost connections, serialization failures (SQLSTATE 40001) and
//! deadlocks are retried with backoff, for as long as it takes: meanwhile the sessions' commits
//! wait, so nothing is acknowledged or sent that is not stored, and senders wait on their full
//! outboxes.
//!
//! Client: [tokio-postgres](https://docs.rs/tokio-postgres). It is asynchronous on the same
//! runtime, pipelines, takes arrays as statement parameters (a whole commit group is one
//! statement), and needs no database at build time. The connection is plain TCP: keep the
//! database on loopback or a private network.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};
use tracing::{debug, warn};

use super::encoding::{assemble, decode_segment, encode_segment, segment_key};
use super::{
    Change, Claim, ClaimFuture, FleetSession, Mail, MailFuture, OwnerFuture, PostAllFuture,
    PostFuture, PostManyFuture, ReceiptFuture, SessionStore, SessionsFuture, StoreError, StoreKey,
    StoredSession,
};
use crate::proto::{ResumeToken, Role, Seq, SessionId, SessionRecord};

/// The schema version this library writes and reads.
const SCHEMA: &str = "2";
/// The advisory lock under which the schema is created or migrated (servers starting at once
/// wait for each other).
const MIGRATION_LOCK: i64 = 0x5374_6466_7374_0001;
/// Most jobs folded into one commit.
const GROUP: usize = 4_096;
/// How often a server renews its lease and expires sessions, by default. A lease lasts three
/// of these: a server silent that long is dead, and the sessions it carried linger from then.
const HEARTBEAT: Duration = Duration::from_secs(5);

const CREATE: &str = "
CREATE TABLE IF NOT EXISTS steadfast_sessions (
    id bytea PRIMARY KEY,
    epoch bigint NOT NULL,
    owner text NOT NULL,
    token_hash bytea,
    issued_hash bytea,
    name text,
    transforms text NOT NULL,
    next_seq bigint NOT NULL,
    acked bigint NOT NULL,
    delivered bigint NOT NULL,
    lingering boolean NOT NULL,
    last_seen timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS steadfast_sessions_owner ON steadfast_sessions (owner);
CREATE TABLE IF NOT EXISTS steadfast_outbox (
    session bytea NOT NULL,
    first_seq bigint NOT NULL,
    end_seq bigint NOT NULL,
    messages bytea NOT NULL,
    PRIMARY KEY (session, first_seq)
);
CREATE TABLE IF NOT EXISTS steadfast_nodes (
    name text PRIMARY KEY,
    alive_until timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS steadfast_mail (
    id bigserial PRIMARY KEY,
    session bytea NOT NULL,
    sender text NOT NULL,
    body bytea NOT NULL,
    seq bigint,
    state smallint NOT NULL DEFAULT 0,
    posted timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS steadfast_mail_open ON steadfast_mail (session, id) WHERE state = 0;
CREATE INDEX IF NOT EXISTS steadfast_mail_done ON steadfast_mail (sender) WHERE state <> 0;
";

/// The notification channel of a node, in SQL (channel names are identifiers of at most 63
/// bytes; node names are any text): see [`channel`].
macro_rules! channel_sql {
    ($node:literal) => {
        concat!(
            "'steadfast_' || substr(encode(sha256(convert_to(",
            $node,
            ", 'UTF8')), 'hex'), 1, 16)"
        )
    };
}

/// One commit group: every session's record (a new session's row — epoch 0 in `$2`, sent only
/// with [`Change::Created`] — is created with epoch 1; an existing one's is written only under
/// the epoch this server holds, so that a server fenced out of a session can neither write it
/// nor create it again once its new owner has ended it), the outbox segments of
/// the sessions written, the acknowledged segments trimmed, ended sessions deleted. Returns
/// the sessions written.
const COMMIT: &str = concat!(
    "
WITH c AS (
    SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[], $4::bytea[], $5::text[],
                         $6::text[], $7::int8[], $8::int8[], $9::int8[], $10::bool[])
        AS c(id, epoch, token_hash, issued_hash, name, transforms, next_seq, acked, delivered,
             lingering)
),
created AS (
    INSERT INTO steadfast_sessions AS s
        (id, epoch, owner, token_hash, issued_hash, name, transforms, next_seq, acked,
         delivered, lingering, last_seen)
    SELECT id, 1, $11, token_hash, issued_hash, name, transforms, next_seq, acked,
           delivered, lingering, now()
    FROM c WHERE c.epoch = 0
    ON CONFLICT (id) DO UPDATE SET
        token_hash = EXCLUDED.token_hash, issued_hash = EXCLUDED.issued_hash,
        name = EXCLUDED.name, transforms = EXCLUDED.transforms, next_seq = EXCLUDED.next_seq,
        acked = EXCLUDED.acked, delivered = EXCLUDED.delivered,
        lingering = EXCLUDED.lingering, last_seen = now()
        WHERE s.epoch = 1 AND s.owner = EXCLUDED.owner
    RETURNING s.id, s.acked
),
updated AS (
    UPDATE steadfast_sessions AS s SET
        token_hash = c.token_hash, issued_hash = c.issued_hash, name = c.name,
        transforms = c.transforms, next_seq = c.next_seq, acked = c.acked,
        delivered = c.delivered, lingering = c.lingering, last_seen = now()
    FROM c WHERE c.epoch >= 1 AND s.id = c.id AND s.epoch = c.epoch
    RETURNING s.id, s.acked
),
written AS (SELECT * FROM created UNION ALL SELECT * FROM updated),
segments AS (
    SELECT * FROM unnest($12::bytea[], $13::int8[], $14::int8[], $15::bytea[])
        AS m(session, first_seq, end_seq, messages)
),
added AS (
    INSERT INTO steadfast_outbox (session, first_seq, end_seq, messages)
    SELECT m.session, m.first_seq, m.end_seq, m.messages
    FROM segments m JOIN written w ON w.id = m.session
    WHERE m.end_seq > w.acked
    ON CONFLICT (session, first_seq) DO UPDATE SET
        end_seq = EXCLUDED.end_seq, messages = EXCLUDED.messages
),
trimmed AS (
    DELETE FROM steadfast_outbox o USING written w
    WHERE o.session = w.id AND o.end_seq <= w.acked
      AND NOT EXISTS (SELECT 1 FROM segments m
                      WHERE m.session = o.session AND m.first_seq = o.first_seq)
),
ended AS (
    DELETE FROM steadfast_sessions s
    USING unnest($16::bytea[], $17::int8[], $20::int8[]) AS d(id, epoch, acked)
    WHERE s.id = d.id AND s.epoch = d.epoch
    RETURNING s.id, greatest(s.acked, d.acked) AS acked
),
ended_outbox AS (
    DELETE FROM steadfast_outbox o USING ended e WHERE o.session = e.id
),
queued AS (
    UPDATE steadfast_mail m SET seq = q.seq
    FROM unnest($18::int8[], $19::int8[]) AS q(id, seq), written w
    WHERE m.id = q.id AND m.session = w.id AND m.state = 0 AND m.seq IS NULL
),
delivered_mail AS (
    UPDATE steadfast_mail m SET state = 1
    FROM written w
    WHERE m.session = w.id AND m.state = 0 AND m.seq IS NOT NULL AND m.seq < w.acked
    RETURNING m.sender
),
ended_mail AS (
    UPDATE steadfast_mail m
    SET state = CASE WHEN m.seq IS NOT NULL AND m.seq < e.acked THEN 1 ELSE 2 END
    FROM ended e WHERE m.session = e.id AND m.state = 0
    RETURNING m.sender
),
told AS (
    SELECT pg_notify(",
    channel_sql!("x.sender"),
    ", 'r')
    FROM (SELECT sender FROM delivered_mail UNION SELECT sender FROM ended_mail) x
    WHERE $21
)
SELECT id FROM written WHERE (SELECT count(*) FROM told) >= 0"
);

/// A resume on a server that holds the session: moves the epoch on if it is still the one
/// this server holds and the token is the session's.
const CLAIM_KEPT: &str = "
UPDATE steadfast_sessions SET epoch = epoch + 1, owner = $3, lingering = false, last_seen = now()
WHERE id = $1 AND epoch = $2 AND (token_hash = $4 OR issued_hash = $4)
RETURNING epoch";

/// A resume of a session held elsewhere (or nowhere): the token checked and the epoch moved
/// on in one statement, unless the session has lingered past its time.
const CLAIM: &str = "
UPDATE steadfast_sessions SET epoch = epoch + 1, owner = $2, lingering = false, last_seen = now()
WHERE id = $1 AND (token_hash = $3 OR issued_hash = $3)
  AND NOT (lingering AND last_seen < now() - make_interval(secs => $4))
RETURNING epoch, name, transforms, next_seq, acked, delivered";

/// The epochs the store holds now of the sessions being checked.
const EPOCHS: &str = "SELECT id, epoch FROM steadfast_sessions WHERE id = ANY($1)";

/// The outbox of a claimed session (read after the claim committed: nobody else writes it).
const OUTBOX: &str = "
SELECT first_seq, messages FROM steadfast_outbox WHERE session = $1 ORDER BY first_seq";

/// A server renews its lease.
const HEARTBEAT_SQL: &str = "
INSERT INTO steadfast_nodes (name, alive_until) VALUES ($1, now() + make_interval(secs => $2))
ON CONFLICT (name) DO UPDATE SET alive_until = EXCLUDED.alive_until";

/// Expiry by the database's clock: a session lingering longer than the linger time, or one
/// whose server's lease ran out longer than the linger time ago.
const EXPIRE: &str = concat!(
    "
WITH gone AS (
    DELETE FROM steadfast_sessions s
    WHERE (s.lingering AND s.last_seen < now() - make_interval(secs => $1))
       OR (NOT s.lingering AND NOT EXISTS (
               SELECT 1 FROM steadfast_nodes n
               WHERE n.name = s.owner AND n.alive_until > now() - make_interval(secs => $1)))
    RETURNING s.id, s.acked, s.next_seq - s.acked AS unacknowledged
),
gone_outbox AS (DELETE FROM steadfast_outbox o USING gone g WHERE o.session = g.id),
gone_mail AS (
    UPDATE steadfast_mail m
    SET state = CASE WHEN m.seq IS NOT NULL AND m.seq < g.acked THEN 1 ELSE 2 END
    FROM gone g WHERE m.session = g.id AND m.state = 0
    RETURNING m.sender
),
told AS (
    SELECT pg_notify(",
    channel_sql!("x.sender"),
    ", 'r') FROM (SELECT DISTINCT sender FROM gone_mail) x
),
forgotten AS (
    -- Receipts nobody collected (their sender is gone) once the linger time has passed.
    DELETE FROM steadfast_mail WHERE state <> 0 AND posted < now() - make_interval(secs => $1)
)
SELECT id, unacknowledged FROM gone WHERE (SELECT count(*) FROM told) >= 0"
);

/// Posts messages to sessions, whichever server owns them, in the order given; the owners
/// are told. A session that does not exist gets no row.
const POST: &str = concat!(
    "
WITH p AS (
    SELECT * FROM unnest($1::bytea[], $2::bytea[]) WITH ORDINALITY AS p(session, body, ord)
),
m AS (
    INSERT INTO steadfast_mail (session, sender, body)
    SELECT p.session, $3, p.body FROM p JOIN steadfast_sessions s ON s.id = p.session
    ORDER BY p.ord
    RETURNING id, session
),
told AS (
    SELECT pg_notify(",
    channel_sql!("x.owner"),
    ", 'm')
    FROM (SELECT DISTINCT s.owner FROM m JOIN steadfast_sessions s ON s.id = m.session) x
    WHERE $4
)
SELECT id, session FROM m WHERE (SELECT count(*) FROM told) >= 0"
);

/// Posts one message to every session of the fleet.
const POST_ALL: &str = concat!(
    "
WITH m AS (
    INSERT INTO steadfast_mail (session, sender, body)
    SELECT id, $1, $2 FROM steadfast_sessions ORDER BY id
    RETURNING id, session
),
told AS (
    SELECT pg_notify(",
    channel_sql!("x.owner"),
    ", 'm')
    FROM (SELECT DISTINCT owner FROM steadfast_sessions) x
    WHERE $3
)
SELECT id, session FROM m WHERE (SELECT count(*) FROM told) >= 0"
);

/// Mail for the sessions this server holds (under the epoch it holds), oldest first, not
/// handed out already, within a byte budget (the first always).
const FETCH_MAIL: &str = "
SELECT id, session, body FROM (
    SELECT m.id, m.session, m.body, sum(octet_length(m.body)) OVER (ORDER BY m.id) AS upto
    FROM steadfast_mail m
    JOIN unnest($1::bytea[], $2::int8[]) AS h(id, epoch) ON h.id = m.session
    JOIN steadfast_sessions s ON s.id = h.id AND s.epoch = h.epoch
    WHERE m.state = 0 AND m.seq IS NULL AND NOT (m.id = ANY($3)) AND NOT (m.session = ANY($5))
    ORDER BY m.id
    LIMIT 1024
) x
WHERE upto - octet_length(body) < $4
ORDER BY id";

/// Mail the owner refused (too large for the session): reported lost to its sender.
const REFUSE_MAIL: &str = concat!(
    "
WITH r AS (
    UPDATE steadfast_mail SET state = 2 WHERE id = ANY($1) AND state = 0 RETURNING sender
)
SELECT pg_notify(",
    channel_sql!("x.sender"),
    ", 'r') FROM (SELECT DISTINCT sender FROM r) x"
);

/// The receipts of this server's posts that are settled: taken (the rows go). By sender, on
/// its partial index: the cost follows what settled, not how many wait.
const RECEIPTS: &str = "
DELETE FROM steadfast_mail WHERE sender = $1 AND state <> 0 RETURNING id, state";

/// Every session of the fleet.
const SESSIONS: &str = "
SELECT id, name, owner, lingering, next_seq - acked FROM steadfast_sessions ORDER BY owner, id";

/// How a [`PgStore`] runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PgOptions {
    /// This server's name in the fleet, unique to it: shown in logs, stored as the owner of
    /// its sessions. A server restarted under the same name takes its sessions' linger over
    /// at once; under another name they linger until its old lease runs out.
    pub node: String,
    /// How long a session without a connection stays resumable, by the database's clock
    /// (the servers' [`linger`](crate::ServerConfig::linger); the same on every server).
    pub linger: Duration,
    /// How often this server renews its lease and sweeps out expired sessions (default 5 s);
    /// a lease is valid for three of these.
    pub heartbeat: Duration,
    /// Whether servers tell each other of fleet mail and receipts at once with PostgreSQL's
    /// `LISTEN`/`NOTIFY` (default true). Off (a connection pooler in transaction mode cannot
    /// carry it), the heartbeat's sweep alone finds them.
    pub notifications: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        let mut tag = [0u8; 4];
        let _ = getrandom::fill(&mut tag);
        PgOptions {
            node: format!("node-{:08x}", u32::from_be_bytes(tag)),
            linger: Duration::from_secs(60),
            heartbeat: HEARTBEAT,
            notifications: true,
        }
    }
}

impl PgOptions {
    /// Options with this node name and the default linger.
    pub fn node(name: impl Into<String>) -> Self {
        PgOptions {
            node: name.into(),
            ..PgOptions::default()
        }
    }

    /// Sets the linger time (the servers' [`linger`](crate::ServerConfig::linger)).
    #[must_use]
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Sets how often the lease is renewed and expired sessions swept out (at least 10 ms; a
    /// lease is valid for three of these).
    #[must_use]
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every.max(Duration::from_millis(10));
        self
    }

    /// Turns `LISTEN`/`NOTIFY` on or off (see [`PgOptions::notifications`]).
    #[must_use]
    pub fn notifications(mut self, on: bool) -> Self {
        self.notifications = on;
        self
    }
}

/// Changes to commit and who waits for them.
type Commit = (Vec<Change>, oneshot::Sender<Result<(), StoreError>>);

enum Job {
    Commit(Vec<Change>, oneshot::Sender<Result<(), StoreError>>),
    Claim {
        key: StoreKey,
        token: ResumeToken,
        local: bool,
        answer: oneshot::Sender<Result<Claim, StoreError>>,
    },
    Check(StoreKey, oneshot::Sender<Result<(), StoreError>>),
    Post {
        key: StoreKey,
        /// In order.
        bodies: Vec<Bytes>,
        /// The mails' ids once stored (or why not).
        answer: oneshot::Sender<Result<Vec<i64>, StoreError>>,
        receipts: Vec<oneshot::Sender<Result<bool, StoreError>>>,
    },
    PostAll {
        body: Bytes,
        answer: oneshot::Sender<Result<Vec<(StoreKey, Waiter)>, StoreError>>,
    },
    /// Mail to hand out, and whether some sessions are left out for now (ask again soon).
    FetchMail(oneshot::Sender<Result<(Vec<Mail>, bool), StoreError>>),
    ReturnMail {
        back: Vec<i64>,
        refused: Vec<i64>,
    },
    /// Collect settled receipts (told by a notification, or the heartbeat's sweep).
    Receipts,
    Sessions(oneshot::Sender<Result<Vec<FleetSession>, StoreError>>),
}

/// The receiving end of a posted message's receipt.
type Waiter = oneshot::Receiver<Result<bool, StoreError>>;

/// Posts whose receipts are outstanding, per store: a further post waits for one to settle.
const MAX_POSTS: usize = 65_536;

/// How long a session whose mail came back (its outbox full) is left out of fetches.
const BLOCKED_FOR: Duration = Duration::from_millis(20);

/// Bytes of mail bodies handed to the server in one batch (at least one mail).
const MAIL_BATCH_BYTES: i64 = 4 << 20;

/// The notification channel of a node (as [`channel_sql!`] computes it in SQL).
fn channel(node: &str) -> String {
    let digest = Sha256::digest(node.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("steadfast_{hex}")
}

/// A [`SessionStore`] in PostgreSQL, shared by a fleet of servers (feature `postgres`,
/// PROTOCOL.md §13).
///
/// - **Ownership**: each session is one row of `steadfast_sessions` with an epoch. A resume on
///   any server [claims](SessionStore::claim) it: one `UPDATE` checks the token's SHA-256 (no
///   token is stored) and moves the epoch on. Every later write names the epoch this server
///   holds; a write with an older one changes no row, the store answers
///   [`StoreError::Fenced`], and the server drops the session at once.
/// - **Group commit**: one task writes; it takes every change waiting, from every session,
///   and commits them in one statement (one transaction, one WAL flush). Unacknowledged
///   messages are stored as one `steadfast_outbox` row per session per commit, not one per
///   message, and trimmed as they are acknowledged.
/// - **Failures**: lost connections, serialization failures (SQLSTATE 40001) and deadlocks
///   are retried with backoff for as long as they last; meanwhile commits wait, so nothing is
///   sent or acknowledged that is not stored.
/// - **Schema**: created on first use under an advisory lock (servers starting at once wait
///   for each other) and versioned in `steadfast_meta`; another version is refused with
///   [`StoreError::Foreign`].
/// - **Expiry**: by the database's clock — lingering longer than the linger time, or held by
///   a server whose lease (renewed every 5 s, valid 15 s: [`PgOptions::heartbeat`]) ran out longer than that ago.
/// - **Client**: [tokio-postgres](https://docs.rs/tokio-postgres), asynchronous on the same
///   runtime, arrays as statement parameters (a whole group is one statement), no database
///   needed at build time. The connection is plain TCP: keep the database on loopback or a
///   private network.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use steadfast::store::{PgOptions, PgStore};
///
/// let store = PgStore::connect("postgres://steadfast@db:5432/steadfast", PgOptions::node("a")).await?;
/// let config = steadfast::ServerConfig::default().store(Arc::new(store));
/// let server = steadfast::Server::bind(["0.0.0.0:7000"], config).await?;
/// # Ok(()) }
/// ```
pub struct PgStore {
    jobs: mpsc::UnboundedSender<Job>,
    node: Arc<str>,
    stop: tokio_util::sync::CancellationToken,
    /// Mail may be waiting for this server (a notification, the sweep, mail put back).
    mail: Arc<Notify>,
    /// Room for outstanding posts ([`MAX_POSTS`]).
    posts: Arc<Semaphore>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn db_err(e: &tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(d) => StoreError::Database(format!("{} ({})", d.message(), d.code().code())),
        None => StoreError::Database(e.to_string()),
    }
}

/// Whether an error passes if the same work is tried again: a lost connection, a database
/// shutting down or restarting, a serialization failure or a deadlock.
fn retryable(e: &tokio_postgres::Error) -> bool {
    let Some(code) = e.code() else {
        return true;
    };
    *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || code.code().starts_with("08")
        || code.code().starts_with("57P")
}

/// A SHA-256 of a resume token: the store keeps no token itself.
fn token_hash(t: &ResumeToken) -> Vec<u8> {
    Sha256::digest(t.0).to_vec()
}

/// Sequence numbers as the database keeps them (`bigint`; never beyond 2⁶³ in practice).
fn sql_seq(s: Seq) -> i64 {
    i64::try_from(s.0).unwrap_or(i64::MAX)
}

fn seq_of(v: i64) -> Result<Seq, StoreError> {
    u64::try_from(v)
        .map(Seq)
        .map_err(|_| StoreError::Corrupt("a negative sequence number".into()))
}

async fn open(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            debug!(error = %e, "session store connection ended");
        }
    });
    Ok(client)
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST:PORT/DB`, or the
    /// `key=value` form), creates or checks the schema (under an advisory lock: servers
    /// starting at once wait for each other), marks this node's sessions as lingering from
    /// now (a restart is their disconnect), and starts the writer and the lease.
    ///
    /// # Errors
    /// [`StoreError::Database`] if the database cannot be reached or refuses;
    /// [`StoreError::Foreign`] if it holds a schema of another version.
    pub async fn connect(url: &str, options: PgOptions) -> Result<PgStore, StoreError> {
        if options.node.is_empty() || options.node.len() > 255 {
            return Err(StoreError::Io(
                "the node name must be 1 to 255 bytes".into(),
            ));
        }
        let mut client = open(url).await.map_err(|e| db_err(&e))?;
        migrate(&mut client).await?;
        let linger = options.linger.as_secs_f64();
        client
            .execute(
                "UPDATE steadfast_sessions SET lingering = true, last_seen = now()
                 WHERE owner = $1 AND NOT lingering",
                &[&options.node],
            )
            .await
            .map_err(|e| db_err(&e))?;
        client
            .execute(
                HEARTBEAT_SQL,
                &[&options.node, &(options.heartbeat * 3).as_secs_f64()],
            )
            .await
            .map_err(|e| db_err(&e))?;
        let node: Arc<str> = options.node.into();
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = tokio_util::sync::CancellationToken::new();
        let mail = Arc::new(Notify::new());
        let writer = Writer {
            url: url.to_owned(),
            node: node.clone(),
            linger,
            notify: options.notifications,
            epochs: HashMap::new(),
            conn: None,
            taken: HashMap::new(),
            waiters: HashMap::new(),
            blocked: HashMap::new(),
        };
        tokio::spawn(writer.run(rx, Some(client)));
        let wake = Wake {
            mail: mail.clone(),
            jobs: tx.clone(),
        };
        tokio::spawn(lease(
            url.to_owned(),
            node.clone(),
            linger,
            options.heartbeat,
            stop.clone(),
            wake.clone(),
        ));
        if options.notifications {
            tokio::spawn(listen(url.to_owned(), channel(&node), stop.clone(), wake));
        }
        Ok(PgStore {
            jobs: tx,
            node,
            stop,
            mail,
            posts: Arc::new(Semaphore::new(MAX_POSTS)),
        })
    }

    /// This server's name in the fleet.
    pub fn node(&self) -> &str {
        &self.node
    }
}

async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let err = |e: tokio_postgres::Error| db_err(&e);
    let txn = client.transaction().await.map_err(err)?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS steadfast_meta (key text PRIMARY KEY, value text NOT NULL)",
    )
    .await
    .map_err(err)?;
    let version: Option<String> = txn
        .query_opt("SELECT value FROM steadfast_meta WHERE key = 'schema'", &[])
        .await
        .map_err(err)?
        .map(|r| r.get(0));
    match version.as_deref() {
        None => {
            txn.batch_execute(CREATE).await.map_err(err)?;
            txn.execute(
                "INSERT INTO steadfast_meta (key, value) VALUES ('schema', $1)",
                &[&SCHEMA],
            )
            .await
            .map_err(err)?;
        }
        Some(SCHEMA) => {}
        // Schema 1 lacks the mail table (fleet messaging); the rest is the same.
        Some("1") => {
            txn.batch_execute(CREATE).await.map_err(err)?;
            txn.execute(
                "UPDATE steadfast_meta SET value = $1 WHERE key = 'schema'",
                &[&SCHEMA],
            )
            .await
            .map_err(err)?;
        }
        Some(other) => {
            return Err(StoreError::Foreign(format!(
                "the database holds steadfast schema {other}; this version reads schema {SCHEMA}"
            )));
        }
    }
    txn.commit().await.map_err(err)
}

/// Renews this node's lease and expires sessions by the database's clock, until the store is
/// dropped.
async fn lease(
    url: String,
    node: Arc<str>,
    linger: f64,
    heartbeat: Duration,
    stop: tokio_util::sync::CancellationToken,
    wake: Wake,
) {
    let mut client: Option<Client> = None;
    let valid = (heartbeat * 3).as_secs_f64();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(heartbeat) => {}
        }
        // The sweep behind the notifications: mail and receipts a lost one would have told.
        wake.all();
        if client.as_ref().is_none_or(Client::is_closed) {
            client = open(&url).await.ok();
        }
        let Some(c) = &client else { continue };
        let renewed = c.execute(HEARTBEAT_SQL, &[&&*node, &valid]).await;
        if let Err(e) = renewed {
            warn!(error = %e, "session store: renewing the lease failed");
            continue;
        }
        match c.query(EXPIRE, &[&linger]).await {
            Ok(rows) => {
                for r in rows {
                    let id: Vec<u8> = r.get(0);
                    let lost: i64 = r.get(1);
                    let id = <[u8; 16]>::try_from(id.as_slice()).map(SessionId);
                    if let Ok(id) = id {
                        if lost > 0 {
                            warn!(session = %id, unacknowledged = lost, "a session expired in the store with messages its client never acknowledged");
                        } else {
                            debug!(session = %id, "a session expired in the store");
                        }
                    }
                }
            }
            Err(e) => warn!(error = %e, "session store: expiring sessions failed"),
        }
    }
}

/// A post waiting for its statement: session, bodies, where their ids go, their receipts'
/// senders.
type PostJob = (
    StoreKey,
    Vec<Bytes>,
    oneshot::Sender<Result<Vec<i64>, StoreError>>,
    Vec<oneshot::Sender<Result<bool, StoreError>>>,
);

/// Wakes the parts of a store that act on fleet mail.
#[derive(Clone)]
struct Wake {
    mail: Arc<Notify>,
    jobs: mpsc::UnboundedSender<Job>,
}

impl Wake {
    fn all(&self) {
        self.mail.notify_one();
        let _ = self.jobs.send(Job::Receipts);
    }
}

/// Listens on this node's channel: `m`, mail for sessions it holds; `r`, receipts of its
/// posts settled. After every (re)connection it acts as if both came (some may have been
/// missed meanwhile).
async fn listen(
    url: String,
    channel: String,
    stop: tokio_util::sync::CancellationToken,
    wake: Wake,
) {
    let mut delay = Duration::from_millis(50);
    loop {
        let listened = async {
            let (client, mut conn) = tokio_postgres::connect(&url, NoTls).await?;
            let (tx, mut rx) = mpsc::channel::<u8>(64);
            let driver = tokio::spawn(async move {
                while let Some(message) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                    match message {
                        Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                            // Full: a wake-up of the same kind is pending already.
                            let _ = tx.try_send(n.payload().bytes().next().unwrap_or(b'm'));
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            });
            client.batch_execute(&format!("LISTEN {channel}")).await?;
            wake.all();
            while let Some(kind) = rx.recv().await {
                if kind == b'r' {
                    let _ = wake.jobs.send(Job::Receipts);
                } else {
                    wake.mail.notify_one();
                }
            }
            drop(client);
            driver.abort();
            Ok::<(), tokio_postgres::Error>(())
        };
        tokio::select! {
            () = stop.cancelled() => return,
            r = listened => {
                if let Err(e) = r {
                    debug!(error = %e, "session store: listening failed");
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// What a commit group writes of one session.
enum Merged {
    Put {
        record: SessionRecord,
        lingering: bool,
        /// Outbox segments by their first sequence number: (end, encoded messages).
        segments: BTreeMap<u64, (u64, Vec<u8>)>,
        /// Fleet mail these segments carry: (mail id, sequence number).
        mail: Vec<(i64, Seq)>,
    },
    /// The session ended; the acknowledged position it ended at.
    Delete(Seq),
}

/// The statement's parameters for one commit group.
#[derive(Default)]
struct Group {
    ids: Vec<Vec<u8>>,
    epochs: Vec<i64>,
    token_hashes: Vec<Option<Vec<u8>>>,
    issued_hashes: Vec<Option<Vec<u8>>>,
    names: Vec<Option<String>>,
    transforms: Vec<String>,
    next_seqs: Vec<i64>,
    ackeds: Vec<i64>,
    delivereds: Vec<i64>,
    lingerings: Vec<bool>,
    seg_sessions: Vec<Vec<u8>>,
    seg_firsts: Vec<i64>,
    seg_ends: Vec<i64>,
    seg_messages: Vec<Vec<u8>>,
    del_ids: Vec<Vec<u8>>,
    del_epochs: Vec<i64>,
    del_ackeds: Vec<i64>,
    mail_ids: Vec<i64>,
    mail_seqs: Vec<i64>,
}

struct Writer {
    url: String,
    node: Arc<str>,
    linger: f64,
    /// The epoch this server holds of each session it carries (1: created here).
    epochs: HashMap<StoreKey, i64>,
    conn: Option<(Client, Statement)>,
    /// `LISTEN`/`NOTIFY` in use.
    notify: bool,
    /// Mail handed to the server and not yet queued in a commit (or put back), by id.
    taken: HashMap<i64, StoreKey>,
    /// Receipts of this server's posts, by mail id.
    waiters: HashMap<i64, oneshot::Sender<Result<bool, StoreError>>>,
    /// Sessions whose mail came back (outbox full): left out of fetches until then, so that
    /// the others' mail flows meanwhile.
    blocked: HashMap<StoreKey, tokio::time::Instant>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>, first: Option<Client>) {
        if let Some(c) = first
            && let Ok(s) = c.prepare(COMMIT).await
        {
            self.conn = Some((c, s));
        }
        while let Some(job) = rx.recv().await {
            // Every job waiting, up to a group: commits, checks and posts are merged into one
            // statement each; the rest run in order between them.
            let mut batch = vec![job];
            while batch.len() < GROUP {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            let mut commits = Vec::new();
            let mut checks = Vec::new();
            let mut posts = Vec::new();
            let mut receipts = false;
            for job in batch {
                match job {
                    Job::Commit(changes, answer) => commits.push((changes, answer)),
                    Job::Check(key, answer) => checks.push((key, answer)),
                    Job::Post {
                        key,
                        bodies,
                        answer,
                        receipts,
                    } => posts.push((key, bodies, answer, receipts)),
                    Job::Receipts => receipts = true,
                    other => {
                        // Commits before it first: they were submitted before it.
                        self.commit(std::mem::take(&mut commits)).await;
                        self.post(std::mem::take(&mut posts)).await;
                        self.check(std::mem::take(&mut checks)).await;
                        self.one(other).await;
                    }
                }
            }
            self.commit(commits).await;
            self.post(posts).await;
            self.check(checks).await;
            if receipts {
                self.receipts().await;
            }
        }
    }

    /// A job that runs by itself.
    async fn one(&mut self, job: Job) {
        match job {
            Job::Claim {
                key,
                token,
                local,
                answer,
            } => {
                if !answer.is_closed() {
                    let claimed = self.claim(key, &token, local).await;
                    let _ = answer.send(claimed);
                }
            }
            Job::PostAll { body, answer } => {
                let posted = self.post_all(body).await;
                let _ = answer.send(posted);
            }
            Job::FetchMail(answer) => {
                let mail = self
                    .fetch_mail()
                    .await
                    .map(|m| (m, !self.blocked.is_empty()));
                if let Err(Ok((m, _))) = answer.send(mail) {
                    // Nobody takes it: it is not handed out.
                    for mail in m {
                        self.taken.remove(&mail.id);
                    }
                }
            }
            Job::ReturnMail { back, refused } => {
                let until = tokio::time::Instant::now() + BLOCKED_FOR;
                for id in &back {
                    if let Some(key) = self.taken.remove(id) {
                        self.blocked.insert(key, until);
                    }
                }
                for id in &refused {
                    self.taken.remove(id);
                }
                if !refused.is_empty() {
                    let r = self
                        .retrying(move |(client, _)| {
                            let ids = refused.clone();
                            Box::pin(async move { client.query(REFUSE_MAIL, &[&ids]).await })
                        })
                        .await;
                    if let Err(e) = r {
                        warn!(error = %e, "session store: reporting refused mail failed");
                    }
                }
            }
            Job::Sessions(answer) => {
                let sessions = self.sessions().await;
                let _ = answer.send(sessions);
            }
            Job::Commit(..) | Job::Check(..) | Job::Post { .. } | Job::Receipts => {
                unreachable!("merged jobs are not run one by one")
            }
        }
    }

    /// Stores posted messages, all in one statement, and keeps their receipts' senders.
    async fn post(&mut self, posts: Vec<PostJob>) {
        if posts.is_empty() {
            return;
        }
        let sessions: Vec<Vec<u8>> = posts
            .iter()
            .flat_map(|p| std::iter::repeat_n(p.0.to_vec(), p.1.len()))
            .collect();
        let bodies: Vec<Vec<u8>> = posts
            .iter()
            .flat_map(|p| p.1.iter().map(|b| b.to_vec()))
            .collect();
        let (node, notify) = (self.node.clone(), self.notify);
        let rows = self
            .retrying(move |(client, _)| {
                let (sessions, bodies, node) = (sessions.clone(), bodies.clone(), node.clone());
                Box::pin(async move {
                    client
                        .query(POST, &[&sessions, &bodies, &&*node, &notify])
                        .await
                })
            })
            .await;
        let mut ids: HashMap<StoreKey, std::collections::VecDeque<i64>> = HashMap::new();
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                for (_, _, answer, _) in posts {
                    let _ = answer.send(Err(e.clone()));
                }
                return;
            }
        };
        let mut sorted: Vec<(i64, StoreKey)> = rows
            .iter()
            .filter_map(|r| Some((r.get(0), <[u8; 16]>::try_from(r.get::<_, &[u8]>(1)).ok()?)))
            .collect();
        sorted.sort_unstable();
        for (id, key) in sorted {
            ids.entry(key).or_default().push_back(id);
        }
        for (key, bodies, answer, receipts) in posts {
            // The session existed for all of them or for none (one statement).
            let Some(queue) = ids.get_mut(&key).filter(|q| q.len() >= bodies.len()) else {
                let _ = answer.send(Err(StoreError::NoSuchSession));
                continue;
            };
            let mine: Vec<i64> = queue.drain(..bodies.len()).collect();
            for (id, receipt) in mine.iter().zip(receipts) {
                self.waiters.insert(*id, receipt);
            }
            let _ = answer.send(Ok(mine));
        }
    }

    /// Stores one message for every session of the fleet.
    async fn post_all(&mut self, body: Bytes) -> Result<Vec<(StoreKey, Waiter)>, StoreError> {
        let (node, notify) = (self.node.clone(), self.notify);
        let body = body.to_vec();
        let rows = self
            .retrying(move |(client, _)| {
                let (body, node) = (body.clone(), node.clone());
                Box::pin(async move { client.query(POST_ALL, &[&&*node, &body, &notify]).await })
            })
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let Ok(key) = <[u8; 16]>::try_from(r.get::<_, &[u8]>(1)) else {
                continue;
            };
            let (tx, rx) = oneshot::channel();
            self.waiters.insert(r.get(0), tx);
            out.push((key, rx));
        }
        Ok(out)
    }

    /// Mail waiting for the sessions this server holds, not handed out already.
    async fn fetch_mail(&mut self) -> Result<Vec<Mail>, StoreError> {
        if self.epochs.is_empty() {
            return Ok(Vec::new());
        }
        let held: Vec<Vec<u8>> = self.epochs.keys().map(|k| k.to_vec()).collect();
        let epochs: Vec<i64> = self.epochs.values().copied().collect();
        let taken: Vec<i64> = self.taken.keys().copied().collect();
        let now = tokio::time::Instant::now();
        self.blocked.retain(|_, until| *until > now);
        let blocked: Vec<Vec<u8>> = self.blocked.keys().map(|k| k.to_vec()).collect();
        let rows = self
            .retrying(move |(client, _)| {
                let (held, epochs, taken) = (held.clone(), epochs.clone(), taken.clone());
                let blocked = blocked.clone();
                Box::pin(async move {
                    client
                        .query(
                            FETCH_MAIL,
                            &[&held, &epochs, &taken, &MAIL_BATCH_BYTES, &blocked],
                        )
                        .await
                })
            })
            .await?;
        let mut mail = Vec::with_capacity(rows.len());
        for r in rows {
            let Ok(key) = <[u8; 16]>::try_from(r.get::<_, &[u8]>(1)) else {
                continue;
            };
            let id: i64 = r.get(0);
            self.taken.insert(id, key);
            mail.push(Mail {
                id,
                key,
                body: Bytes::copy_from_slice(r.get::<_, &[u8]>(2)),
            });
        }
        Ok(mail)
    }

    /// Hands settled receipts to the posts waiting for them.
    async fn receipts(&mut self) {
        self.waiters.retain(|_, w| !w.is_closed());
        if self.waiters.is_empty() {
            return;
        }
        let node = self.node.clone();
        let rows = self
            .retrying(move |(client, _)| {
                let node = node.clone();
                Box::pin(async move { client.query(RECEIPTS, &[&&*node]).await })
            })
            .await;
        match rows {
            Ok(rows) => {
                for r in rows {
                    let (id, state): (i64, i16) = (r.get(0), r.get(1));
                    if let Some(w) = self.waiters.remove(&id) {
                        let _ = w.send(Ok(state == 1));
                    }
                }
            }
            Err(e) => warn!(error = %e, "session store: collecting receipts failed"),
        }
    }

    /// Every session of the fleet.
    async fn sessions(&mut self) -> Result<Vec<FleetSession>, StoreError> {
        let rows = self
            .retrying(|(client, _)| Box::pin(async move { client.query(SESSIONS, &[]).await }))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let Ok(id) = <[u8; 16]>::try_from(r.get::<_, &[u8]>(0)) else {
                continue;
            };
            out.push(FleetSession {
                id: SessionId(id),
                name: r.get(1),
                node: r.get(2),
                lingering: r.get(3),
                unacknowledged: u64::try_from(r.get::<_, i64>(4)).unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// Answers ownership checks, all in one query: a session is still this server's if the
    /// store holds the epoch this server holds.
    async fn check(&mut self, checks: Vec<(StoreKey, oneshot::Sender<Result<(), StoreError>>)>) {
        if checks.is_empty() {
            return;
        }
        let ids: Vec<Vec<u8>> = checks.iter().map(|(k, _)| k.to_vec()).collect();
        let rows = self
            .retrying(move |(client, _)| {
                let ids = ids.clone();
                Box::pin(async move { client.query(EPOCHS, &[&ids]).await })
            })
            .await;
        let stored: Result<HashMap<Vec<u8>, i64>, StoreError> =
            rows.map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect());
        for (key, answer) in checks {
            let outcome = match &stored {
                Err(e) => Err(e.clone()),
                Ok(stored) => match (self.epochs.get(&key), stored.get(&key[..])) {
                    (Some(mine), Some(theirs)) if mine == theirs => Ok(()),
                    // Not held (fenced, or never stored: then nothing was visible yet), or
                    // gone (ended by its new owner).
                    _ => Err(StoreError::Fenced),
                },
            };
            let _ = answer.send(outcome);
        }
    }

    /// The connection and its prepared commit, reconnecting with backoff until it works.
    async fn connection(&mut self) -> &(Client, Statement) {
        let mut delay = Duration::from_millis(50);
        loop {
            if self.conn.as_ref().is_some_and(|(c, _)| !c.is_closed()) {
                break;
            }
            self.conn = None;
            match open(&self.url).await {
                Ok(c) => match c.prepare(COMMIT).await {
                    Ok(s) => {
                        self.conn = Some((c, s));
                        break;
                    }
                    Err(e) => warn!(error = %e, "session store: preparing failed; retrying"),
                },
                Err(e) => {
                    warn!(error = %e, "session store: database unreachable; commits wait");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
        match &self.conn {
            Some(c) => c,
            None => unreachable!("set above"),
        }
    }

    /// Runs `f` on the connection until it succeeds or fails for a reason that retrying does
    /// not cure.
    async fn retrying<T, F>(&mut self, mut f: F) -> Result<T, StoreError>
    where
        F: for<'c> FnMut(
            &'c (Client, Statement),
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send + 'c>,
        >,
    {
        let mut delay = Duration::from_millis(20);
        loop {
            let conn = self.connection().await;
            match f(conn).await {
                Ok(v) => return Ok(v),
                Err(e) if retryable(&e) => {
                    debug!(error = %e, "session store: retrying");
                    if e.is_closed() || e.code().is_none() {
                        self.conn = None;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(db_err(&e)),
            }
        }
    }

    async fn commit(&mut self, jobs: Vec<Commit>) {
        if jobs.is_empty() {
            return;
        }
        // The group's changes merged per session, in order: the last record wins, segments
        // accumulate, an end removes what came before it.
        let mut merged: HashMap<StoreKey, Merged> = HashMap::new();
        let mut creating: HashSet<StoreKey> = HashSet::new();
        let mut puts_of_job: Vec<Vec<StoreKey>> = Vec::with_capacity(jobs.len());
        for (changes, _) in &jobs {
            let mut puts = Vec::new();
            for change in changes {
                match change {
                    Change::Put {
                        key,
                        record,
                        new_messages,
                        lingering,
                        ..
                    } => {
                        puts.push(*key);
                        let entry = merged.entry(*key).or_insert_with(|| Merged::Put {
                            record: record.clone(),
                            lingering: *lingering,
                            segments: BTreeMap::new(),
                            mail: Vec::new(),
                        });
                        if let Merged::Delete(_) = entry {
                            *entry = Merged::Put {
                                record: record.clone(),
                                lingering: *lingering,
                                segments: BTreeMap::new(),
                                mail: Vec::new(),
                            };
                        }
                        if let Merged::Put {
                            record: r,
                            lingering: l,
                            segments,
                            ..
                        } = entry
                        {
                            *r = record.clone();
                            *l = *lingering;
                            if let (Some(first), Some(last)) =
                                (new_messages.first(), new_messages.last())
                            {
                                segments.insert(
                                    first.seq.0,
                                    (last.seq.0.saturating_add(1), encode_segment(new_messages)),
                                );
                            }
                        }
                    }
                    Change::Delete { key } => {
                        // The last acknowledged position written before it, if any (fleet
                        // mail acknowledged at the end is delivered).
                        let acked = match merged.get(key) {
                            Some(Merged::Put { record, .. }) => record.acked,
                            _ => Seq(0),
                        };
                        merged.insert(*key, Merged::Delete(acked));
                    }
                    Change::MailQueued { key, mail } => {
                        if let Some(Merged::Put { mail: m, .. }) = merged.get_mut(key) {
                            m.extend_from_slice(mail);
                        }
                    }
                    Change::Created { key } => {
                        creating.insert(*key);
                    }
                }
            }
            puts_of_job.push(puts);
        }
        let mut g = Group::default();
        for (key, m) in &merged {
            let epoch = self.epochs.get(key).copied();
            match m {
                Merged::Put {
                    record,
                    lingering,
                    segments,
                    mail,
                } => {
                    for (id, seq) in mail {
                        g.mail_ids.push(*id);
                        g.mail_seqs.push(sql_seq(*seq));
                    }
                    g.ids.push(key.to_vec());
                    // Created here now (0), held (its epoch), or not this server's (-1: no
                    // row matches, the write is refused).
                    g.epochs.push(match epoch {
                        Some(e) => e,
                        None if creating.contains(key) => 0,
                        None => -1,
                    });
                    g.token_hashes.push(record.token.as_ref().map(token_hash));
                    g.issued_hashes.push(record.issued.as_ref().map(token_hash));
                    g.names.push(record.name.clone());
                    g.transforms.push(record.transforms.join(" "));
                    g.next_seqs.push(sql_seq(record.next_seq));
                    g.ackeds.push(sql_seq(record.acked));
                    g.delivereds.push(sql_seq(record.delivered));
                    g.lingerings.push(*lingering);
                    for (first, (end, bytes)) in segments {
                        g.seg_sessions.push(key.to_vec());
                        g.seg_firsts.push(sql_seq(Seq(*first)));
                        g.seg_ends.push(sql_seq(Seq(*end)));
                        g.seg_messages.push(bytes.clone());
                    }
                }
                Merged::Delete(acked) => {
                    if let Some(e) = epoch {
                        g.del_ids.push(key.to_vec());
                        g.del_epochs.push(e);
                        g.del_ackeds.push(sql_seq(*acked));
                    }
                }
            }
        }
        let node = self.node.clone();
        let notify = self.notify;
        let g = Arc::new(g);
        let result = self
            .retrying(|(client, statement)| {
                let g = g.clone();
                let node = node.clone();
                Box::pin(async move {
                    client
                        .query(
                            statement,
                            &[
                                &g.ids,
                                &g.epochs,
                                &g.token_hashes,
                                &g.issued_hashes,
                                &g.names,
                                &g.transforms,
                                &g.next_seqs,
                                &g.ackeds,
                                &g.delivereds,
                                &g.lingerings,
                                &&*node,
                                &g.seg_sessions,
                                &g.seg_firsts,
                                &g.seg_ends,
                                &g.seg_messages,
                                &g.del_ids,
                                &g.del_epochs,
                                &g.mail_ids,
                                &g.mail_seqs,
                                &g.del_ackeds,
                                &notify,
                            ],
                        )
                        .await
                })
            })
            .await;
        let written: HashSet<StoreKey> = match &result {
            Ok(rows) => rows
                .iter()
                .filter_map(|r| <[u8; 16]>::try_from(r.get::<_, &[u8]>(0)).ok())
                .collect(),
            Err(_) => HashSet::new(),
        };
        let mut gone = HashSet::new();
        for (key, m) in &merged {
            match m {
                Merged::Put { mail, .. } if written.contains(key) => {
                    self.epochs.entry(*key).or_insert(1);
                    // Queued for good: the store will never hand this mail out again.
                    for (id, _) in mail {
                        self.taken.remove(id);
                    }
                }
                Merged::Put { .. } if result.is_ok() => {
                    // Refused: another server holds a newer epoch.
                    self.epochs.remove(key);
                    gone.insert(*key);
                }
                Merged::Put { .. } => {}
                Merged::Delete(_) => {
                    self.epochs.remove(key);
                    gone.insert(*key);
                }
            }
        }
        if !gone.is_empty() {
            // Mail handed out for sessions no longer here: the next holder takes it.
            self.taken.retain(|_, key| !gone.contains(key));
        }
        for ((_, answer), puts) in jobs.into_iter().zip(puts_of_job) {
            let outcome = match &result {
                Err(e) => Err(e.clone()),
                Ok(_) if puts.iter().all(|k| written.contains(k)) => Ok(()),
                Ok(_) => Err(StoreError::Fenced),
            };
            let _ = answer.send(outcome);
        }
    }

    async fn claim(
        &mut self,
        key: StoreKey,
        token: &ResumeToken,
        local: bool,
    ) -> Result<Claim, StoreError> {
        let hash = token_hash(token);
        let node = self.node.clone();
        let id = key.to_vec();
        if local && let Some(&epoch) = self.epochs.get(&key) {
            let (id, hash, node) = (id.clone(), hash.clone(), node.clone());
            let kept = self
                .retrying(move |(client, _)| {
                    let (id, hash, node) = (id.clone(), hash.clone(), node.clone());
                    Box::pin(async move {
                        client
                            .query_opt(CLAIM_KEPT, &[&id, &epoch, &&*node, &hash])
                            .await
                    })
                })
                .await?;
            if let Some(row) = kept {
                self.epochs.insert(key, row.get(0));
                return Ok(Claim::Kept);
            }
        }
        let linger = self.linger;
        let (cid, chash, cnode) = (id.clone(), hash.clone(), node.clone());
        let claimed = self
            .retrying(move |(client, _)| {
                let (id, hash, node) = (cid.clone(), chash.clone(), cnode.clone());
                Box::pin(async move {
                    client
                        .query_opt(CLAIM, &[&id, &&*node, &hash, &linger])
                        .await
                })
            })
            .await?;
        let Some(row) = claimed else {
            return Ok(Claim::Unknown);
        };
        let epoch: i64 = row.get(0);
        self.epochs.insert(key, epoch);
        let transforms: String = row.get(2);
        let record = SessionRecord {
            role: Role::Server,
            id: Some(SessionId(key)),
            token: Some(token.clone()),
            issued: None,
            name: row.get(1),
            transforms: transforms
                .split(' ')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
            next_seq: seq_of(row.get(3))?,
            acked: seq_of(row.get(4))?,
            delivered: seq_of(row.get(5))?,
        };
        let oid = id.clone();
        let rows = self
            .retrying(move |(client, _)| {
                let id = oid.clone();
                Box::pin(async move { client.query(OUTBOX, &[&id]).await })
            })
            .await?;
        let mut messages = Vec::new();
        for r in rows {
            let first = seq_of(r.get(0))?;
            let bytes: &[u8] = r.get(1);
            messages.extend(decode_segment(&segment_key(&key, first), bytes)?);
        }
        let mut by_key = BTreeMap::new();
        by_key.insert(key, messages);
        let session = assemble(vec![(key, record, 0, false, true)], by_key)?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("a claimed session vanished".into()))?;
        Ok(Claim::Loaded(StoredSession {
            lingering: false,
            ..session
        }))
    }
}

impl SessionStore for PgStore {
    /// Nothing: a shared store's sessions are claimed one by one as their clients resume.
    fn load(&self) -> Result<Vec<StoredSession>, StoreError> {
        Ok(Vec::new())
    }

    fn submit(&self, changes: Vec<Change>) -> oneshot::Receiver<Result<(), StoreError>> {
        let (tx, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(Job::Commit(_, tx))) =
            self.jobs.send(Job::Commit(changes, tx))
        {
            let _ = tx.send(Err(StoreError::Closed));
        }
        rx
    }

    fn shared(&self) -> bool {
        true
    }

    fn claim(&self, key: StoreKey, token: ResumeToken, local: bool) -> ClaimFuture {
        let (tx, rx) = oneshot::channel();
        let sent = self.jobs.send(Job::Claim {
            key,
            token,
            local,
            answer: tx,
        });
        Box::pin(async move {
            if sent.is_err() {
                return Err(StoreError::Closed);
            }
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn post(&self, key: StoreKey, body: Bytes) -> PostFuture {
        let many = self.post_many(key, vec![body]);
        Box::pin(async move {
            many.await?
                .pop()
                .ok_or(StoreError::Corrupt("a post without a receipt".into()))
        })
    }

    fn post_many(&self, key: StoreKey, bodies: Vec<Bytes>) -> PostManyFuture {
        let jobs = self.jobs.clone();
        let posts = self.posts.clone();
        Box::pin(async move {
            if bodies.is_empty() {
                return Ok(Vec::new());
            }
            let n = u32::try_from(bodies.len())
                .ok()
                .filter(|n| *n as usize <= MAX_POSTS)
                .ok_or_else(|| {
                    StoreError::Io(format!("at most {MAX_POSTS} messages in one post"))
                })?;
            let mut permits = posts
                .acquire_many_owned(n)
                .await
                .map_err(|_| StoreError::Closed)?;
            let (answer, ids) = oneshot::channel();
            let (receipts, settled): (Vec<_>, Vec<_>) =
                (0..bodies.len()).map(|_| oneshot::channel()).unzip();
            jobs.send(Job::Post {
                key,
                bodies,
                answer,
                receipts,
            })
            .map_err(|_| StoreError::Closed)?;
            ids.await.map_err(|_| StoreError::Closed)??;
            Ok(settled
                .into_iter()
                .map(|settled| {
                    // Each receipt holds one of the permits until it settles or is dropped.
                    let permit = permits.split(1);
                    let receipt: ReceiptFuture = Box::pin(async move {
                        let _permit = permit;
                        settled.await.map_err(|_| StoreError::Closed)?
                    });
                    receipt
                })
                .collect())
        })
    }

    fn post_all(&self, body: Bytes) -> PostAllFuture {
        let jobs = self.jobs.clone();
        let posts = self.posts.clone();
        Box::pin(async move {
            let (answer, posted) = oneshot::channel();
            jobs.send(Job::PostAll { body, answer })
                .map_err(|_| StoreError::Closed)?;
            let posted = posted.await.map_err(|_| StoreError::Closed)??;
            // The fleet's size is known only now: the broadcast counts against the outstanding
            // posts like any other, and waits here (stored already) until they have room.
            let n = u32::try_from(posted.len().min(MAX_POSTS)).unwrap_or(u32::MAX);
            let mut permits = posts
                .acquire_many_owned(n)
                .await
                .map_err(|_| StoreError::Closed)?;
            Ok(posted
                .into_iter()
                .map(|(key, settled)| {
                    let permit = permits.split(1);
                    let receipt: ReceiptFuture = Box::pin(async move {
                        let _permit = permit;
                        settled.await.map_err(|_| StoreError::Closed)?
                    });
                    (key, receipt)
                })
                .collect())
        })
    }

    fn take_mail(&self) -> MailFuture {
        let jobs = self.jobs.clone();
        let wake = self.mail.clone();
        Box::pin(async move {
            loop {
                let (answer, mail) = oneshot::channel();
                jobs.send(Job::FetchMail(answer))
                    .map_err(|_| StoreError::Closed)?;
                let (mail, blocked) = mail.await.map_err(|_| StoreError::Closed)??;
                if !mail.is_empty() {
                    return Ok(mail);
                }
                // A wake-up that came meanwhile is kept (`notify_one`): none is missed.
                // Sessions left out (their outboxes were full) are asked for again soon.
                if blocked {
                    let _ = tokio::time::timeout(BLOCKED_FOR, wake.notified()).await;
                } else {
                    wake.notified().await;
                }
            }
        })
    }

    fn return_mail(&self, back: Vec<i64>, refused: Vec<i64>) {
        let _ = self.jobs.send(Job::ReturnMail { back, refused });
    }

    fn sessions(&self) -> SessionsFuture {
        let jobs = self.jobs.clone();
        Box::pin(async move {
            let (answer, sessions) = oneshot::channel();
            jobs.send(Job::Sessions(answer))
                .map_err(|_| StoreError::Closed)?;
            sessions.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn check_owner(&self, key: StoreKey) -> OwnerFuture {
        let (tx, rx) = oneshot::channel();
        let sent = self.jobs.send(Job::Check(key, tx));
        Box::pin(async move {
            if sent.is_err() {
                return Err(StoreError::Closed);
            }
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }
}
