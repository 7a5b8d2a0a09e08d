//! Admission of connections that have not finished their handshake, per source address.
//!
//! A connection that has sent no HELLO yet costs its sender nothing, so pending handshakes are
//! limited per address as well as in total. At a limit, the oldest pending handshake of the
//! address that is over its share (the newcomer's own address at the per-address limit; the
//! address with the most pending handshakes, if it holds more than an equal share, at the
//! total limit) is evicted so that the newcomer gets in; only when no address is over its
//! share, or eviction is turned off, is the newcomer refused. (Sessions are limited per
//! address the same way, in the server's registry.)

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

/// The per-address view of the handshakes in progress.
#[derive(Debug)]
pub(crate) struct Admission {
    state: Mutex<State>,
    per_addr: usize,
    total: usize,
    evict: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Pending handshakes per address, oldest first.
    by_addr: HashMap<IpAddr, VecDeque<(u64, CancellationToken)>>,
    count: usize,
    next_id: u64,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its address has `per_addr` handshakes in progress.
    Address,
    /// `total` handshakes are in progress and no address is over its share.
    Total,
}

/// A pending handshake's place; dropping it frees the place. Its token is cancelled when the
/// handshake is evicted for a newcomer.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    addr: IpAddr,
    id: u64,
    pub(crate) evicted: CancellationToken,
}

impl Admission {
    pub(crate) fn new(per_addr: usize, total: usize, evict: bool) -> Arc<Self> {
        Arc::new(Admission {
            state: Mutex::new(State::default()),
            per_addr,
            total,
            evict,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handshakes in progress.
    pub(crate) fn pending(&self) -> usize {
        self.lock().count
    }

    /// Admits a new connection from `addr`, evicting another pending handshake if that is
    /// what it takes and the policy allows it.
    pub(crate) fn admit(self: &Arc<Self>, addr: IpAddr) -> Result<Ticket, Refusal> {
        let mut st = self.lock();
        let own = st.by_addr.get(&addr).map_or(0, VecDeque::len);
        if own >= self.per_addr {
            if !self.evict || own == 0 {
                return Err(Refusal::Address);
            }
            evict_oldest(&mut st, addr);
        } else if st.count >= self.total {
            // The address holding the most, if it holds more than an equal share (the
            // newcomer's address counts among those sharing).
            let sharing = st.by_addr.len() + usize::from(own == 0);
            let share = self.total / sharing.max(1);
            let victim = st
                .by_addr
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .max_by_key(|(_, q)| q.len())
                .map(|(a, q)| (*a, q.len()));
            match victim {
                Some((victim, held)) if self.evict && (held > share || victim == addr) => {
                    evict_oldest(&mut st, victim);
                }
                _ => return Err(Refusal::Total),
            }
        }
        let id = st.next_id;
        st.next_id += 1;
        st.count += 1;
        let evicted = CancellationToken::new();
        st.by_addr
            .entry(addr)
            .or_default()
            .push_back((id, evicted.clone()));
        Ok(Ticket {
            admission: self.clone(),
            addr,
            id,
            evicted,
        })
    }
}

/// Evicts the oldest pending handshake of `addr` (its task sees the token and drops the
/// connection; its place is free at once).
fn evict_oldest(st: &mut State, addr: IpAddr) {
    let Some(q) = st.by_addr.get_mut(&addr) else {
        return;
    };
    if let Some((_, token)) = q.pop_front() {
        token.cancel();
        st.count -= 1;
        tracing::debug!(%addr, "evicted the oldest pending handshake of the address");
    }
    if q.is_empty() {
        st.by_addr.remove(&addr);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = self.admission.lock();
        let Some(q) = st.by_addr.get_mut(&self.addr) else {
            return;
        };
        let Some(i) = q.iter().position(|(id, _)| *id == self.id) else {
            // Evicted: its place was freed then.
            return;
        };
        q.remove(i);
        if q.is_empty() {
            st.by_addr.remove(&self.addr);
        }
        st.count -= 1;
    }
}
