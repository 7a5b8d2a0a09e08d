//! Configuration of the protocol core, with safe defaults (PROTOCOL.md §10).

use std::time::Duration;

use super::frame::{MAX_TRANSFORMS, MIN_MAX_FRAME, Seq, Window, is_valid_transform_name};

/// The protocol versions this implementation speaks. §4.6
pub const SUPPORTED_VERSIONS: (u16, u16) = (1, 2);

/// The longest a receiver may hold back an acknowledgement once its delivered position has
/// advanced (§5.2); `ack_delay` may not exceed it.
pub const MAX_ACK_DELAY: Duration = Duration::from_millis(100);

/// The shortest idle timeout: a version-2 WELCOME announces it, and a client pings at a third
/// of the server's (§8).
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_millis(100);

/// Settings of one side of a connection and of the sessions it carries.
///
/// Every default is chosen for safety first and written next to its field. Build with
/// [`Config::default`] and the chained setters, then [`Config::validate`] (the runtime calls it
/// for you).
///
/// ```
/// use std::time::Duration;
/// use steadfast::proto::Config;
///
/// let config = Config::default()
///     .max_message(1 << 20)
///     .idle_timeout(Duration::from_secs(5))
///     .keepalive_interval(Duration::from_millis(1_500));
/// config.validate().unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) max_frame: u32,
    pub(crate) max_chunk: u32,
    pub(crate) max_message: u32,
    pub(crate) window: Window,
    pub(crate) outbox_messages: usize,
    pub(crate) outbox_bytes: u64,
    pub(crate) keepalive_interval: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) ack_delay: Duration,
    pub(crate) transmit_batch: usize,
    pub(crate) initial_seq: Seq,
    pub(crate) versions: (u16, u16),
    pub(crate) transforms: Vec<String>,
    pub(crate) required_transforms: Vec<String>,
    pub(crate) manual_ack: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame: 65_536,
            max_chunk: 16_384,
            max_message: 16 << 20,
            window: Window {
                messages: 8_192,
                bytes: 8 << 20,
            },
            outbox_messages: 16_384,
            outbox_bytes: 32 << 20,
            keepalive_interval: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            ack_delay: Duration::from_millis(1),
            transmit_batch: 128 << 10,
            initial_seq: Seq(1),
            versions: SUPPORTED_VERSIONS,
            transforms: Vec::new(),
            required_transforms: Vec::new(),
            manual_ack: false,
        }
    }
}

/// A configuration whose values contradict each other or leave the allowed range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Largest frame payload accepted from the peer. Default 65,536; at least 8,192 (a HELLO
    /// with the longest name and credentials must fit). §3.1
    pub fn max_frame(mut self, bytes: u32) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Largest DATA chunk body this side sends (further capped by the peer's maximum frame).
    /// Small chunks let control frames overtake a large message sooner. Default 16,384. §5.3
    pub fn max_chunk(mut self, bytes: u32) -> Self {
        self.max_chunk = bytes;
        self
    }

    /// Largest message accepted from the peer, and sent to it. Default 16 MiB; at most
    /// 4 GiB − 1. §5.3
    pub fn max_message(mut self, bytes: u32) -> Self {
        self.max_message = bytes;
        self
    }

    /// Receive window granted to the peer: messages and body bytes it may have outstanding
    /// beyond what the application has taken. Default 8,192 messages and 8 MiB. It bounds the
    /// inbox to `window.bytes + max_message`. §6
    pub fn window(mut self, window: Window) -> Self {
        self.window = window;
        self
    }

    /// Bounds of the outbox (messages sent and not yet acknowledged, plus those waiting for
    /// window). Default 16,384 messages and 32 MiB. A full outbox makes `send` return
    /// [`SendError::Full`](super::SendError::Full). §6
    pub fn outbox(mut self, messages: usize, bytes: u64) -> Self {
        self.outbox_messages = messages;
        self.outbox_bytes = bytes;
        self
    }

    /// A PING is sent this often, so the peer always hears from a live connection and the
    /// round-trip time stays fresh. Default 3 s: three chances before the idle timeout. On a
    /// version-2 connection a client pings only once nothing arrived for its quiet interval
    /// (the longer of this, capped at a third of the server's idle timeout, and half the
    /// shorter idle timeout: 5 s at the defaults), so a client that hears the server's PINGs
    /// or traffic sends none; [`Connection::ping`](crate::proto::Connection::ping) still
    /// measures the round trip on request. §8
    pub fn keepalive_interval(mut self, d: Duration) -> Self {
        self.keepalive_interval = d;
        self
    }

    /// A connection on which nothing arrived for this long is dead (half-open detection).
    /// Default 10 s; at least 100 ms, and more than the keepalive interval. §8
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// A handshake not finished within this time ends the connection. Default 10 s. §4
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }

    /// How long an acknowledgement may wait to be coalesced with others when no frame is going
    /// out anyway. Default 1 ms; at most 100 ms (the protocol's bound, §5.2).
    pub fn ack_delay(mut self, d: Duration) -> Self {
        self.ack_delay = d;
        self
    }

    /// Bytes `poll_transmit` appends per call before it stops (one write for the driver).
    /// Default 128 KiB.
    pub fn transmit_batch(mut self, bytes: usize) -> Self {
        self.transmit_batch = bytes;
        self
    }

    /// Sequence number of the first message this side sends in a new session. Default 1.
    /// Tests use values near 2³² and 2⁶³. §5.1
    pub fn initial_seq(mut self, seq: Seq) -> Self {
        self.initial_seq = seq;
        self
    }

    /// Protocol versions offered (client) or accepted (server), inclusive. Default: the
    /// versions this implementation speaks. §4.6
    pub fn versions(mut self, min: u16, max: u16) -> Self {
        self.versions = (min, max);
        self
    }

    /// Message transforms (§4.7), by name. A client lists the chain it applies to every message
    /// body, in order, and the server must accept all of it; a server lists the transforms it
    /// supports, in any order. Default: none. The runtime sets this from the transforms given
    /// to its client and server configurations.
    pub fn transforms<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.transforms = names.into_iter().map(Into::into).collect();
        self
    }

    /// Server side: transforms every client must apply (for example a signature); a HELLO
    /// without all of them is refused with `Incompatible`. Each must also be supported. §4.7
    pub fn required_transforms<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.required_transforms = names.into_iter().map(Into::into).collect();
        self
    }

    /// Manual acknowledgement (§5.2): taking a message from the inbox does not acknowledge it;
    /// the application acknowledges it (and every message before it) when it has processed
    /// it, with [`Session::acknowledge`](super::Session::acknowledge). So "acknowledged" can
    /// mean "processed". Taken but unacknowledged messages still count against the window the
    /// sender sees, and are not resent after a link fault (the resume reports them received).
    /// Default: off (taking a message acknowledges it).
    pub fn manual_ack(mut self, on: bool) -> Self {
        self.manual_ack = on;
        self
    }

    /// Checks that the values are in range and consistent.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first contradiction found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |s: String| Err(ConfigError(s));
        if self.max_frame < MIN_MAX_FRAME {
            return err(format!(
                "max_frame {} is below {MIN_MAX_FRAME}",
                self.max_frame
            ));
        }
        if self.max_chunk < 1 {
            return err("max_chunk must be at least 1".into());
        }
        if self.max_message < 1 {
            return err("max_message must be at least 1".into());
        }
        if self.window.messages < 1 || self.window.bytes < 1 {
            return err("the receive window must allow at least one message and one byte".into());
        }
        if self.outbox_messages < 1 {
            return err("the outbox must hold at least one message".into());
        }
        if u64::from(self.max_message) > self.outbox_bytes {
            return err(format!(
                "max_message ({}) exceeds the outbox byte bound ({}): such a message could never be sent",
                self.max_message, self.outbox_bytes
            ));
        }
        if self.keepalive_interval.is_zero() || self.keepalive_interval >= self.idle_timeout {
            return err("keepalive_interval must be non-zero and shorter than idle_timeout".into());
        }
        if self.idle_timeout < MIN_IDLE_TIMEOUT {
            return err(format!(
                "idle_timeout must be at least {MIN_IDLE_TIMEOUT:?}"
            ));
        }
        if self.ack_delay > MAX_ACK_DELAY {
            return err(format!("ack_delay must be at most {MAX_ACK_DELAY:?}"));
        }
        if self.handshake_timeout.is_zero() {
            return err("handshake_timeout must be non-zero".into());
        }
        if self.transmit_batch < 1 {
            return err("transmit_batch must be at least 1".into());
        }
        if self.versions.0 > self.versions.1 || self.versions.0 == 0 {
            return err(format!("bad version range {:?}", self.versions));
        }
        if let Some(bad) = self
            .transforms
            .iter()
            .chain(&self.required_transforms)
            .find(|n| !is_valid_transform_name(n))
        {
            return err(format!(
                "transform name {bad:?} is not 1 to 32 bytes of visible ASCII"
            ));
        }
        for (i, name) in self.transforms.iter().enumerate() {
            if self.transforms[..i].contains(name) {
                return err(format!("transform {name:?} is listed twice"));
            }
        }
        if self.transforms.len() > MAX_TRANSFORMS {
            return err(format!("more than {MAX_TRANSFORMS} transforms"));
        }
        if let Some(missing) = self
            .required_transforms
            .iter()
            .find(|n| !self.transforms.contains(n))
        {
            return err(format!(
                "transform {missing:?} is required but not among the supported transforms"
            ));
        }
        Ok(())
    }
}
