//! The PROXY protocol (versions 1 and 2, as HAProxy's `send-proxy` and `send-proxy-v2` send
//! it): a load balancer that forwards a TCP connection first writes one header naming the
//! client's real address, so that per-address limits, logs and metrics see the client rather
//! than the balancer.
//!
//! The header is read with reads that never go past its end, so whatever follows it (a
//! HELLO, a TLS ClientHello) stays in the socket for the next stage. Everything here is
//! bounded: a version-1 line is at most [`V1_MAX`] bytes, a version-2 header at most
//! [`V2_MAX`] (its TLVs, which this server does not use, included); anything else is refused
//! with a [`ProxyError`] naming what was wrong.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest version-1 line, `\r\n` included (the specification's bound).
pub const V1_MAX: usize = 107;
/// The longest version-2 header this server reads (16 bytes of header and up to 1,008 of
/// addresses and TLVs); the format allows 64 KiB, no balancer sends anything close.
pub const V2_MAX: usize = 1_024;

/// The first 12 bytes of a version-2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// What a PROXY header said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A connection on behalf of a client: its address and the address it connected to.
    Proxied {
        /// The client's address.
        source: SocketAddr,
        /// The address the client connected to (the balancer's front end).
        destination: SocketAddr,
    },
    /// The balancer's own connection (a health check: version 2 `LOCAL`), or a client whose
    /// address the balancer could not express (`UNKNOWN`, version 2 `UNSPEC`, UDP or Unix
    /// sockets): the connection's own peer address stands.
    Local,
}

impl ProxyHeader {
    /// The client's address, if the header gave one.
    pub fn source(&self) -> Option<SocketAddr> {
        match self {
            ProxyHeader::Proxied { source, .. } => Some(*source),
            ProxyHeader::Local => None,
        }
    }
}

/// Why a PROXY header was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The connection did not begin with a PROXY header (enabled on this listener, so every
    /// connection must).
    #[error("no PROXY protocol header (the listener expects one from its load balancer)")]
    Missing,
    /// The header was there but malformed.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    /// The connection ended or failed while the header was read.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one PROXY header (either version) from the start of `stream`, and nothing after it.
///
/// # Errors
/// [`ProxyError`] when the stream does not begin with a well-formed header. The caller bounds
/// the time it takes (a peer that sends part of a header and waits must not hold the
/// connection forever).
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    // Both forms are at least 15 bytes long; the first 6 tell them apart.
    let mut head = [0u8; 6];
    stream.read_exact(&mut head).await?;
    if head == *b"PROXY " {
        let mut line = Vec::with_capacity(V1_MAX);
        line.extend_from_slice(&head);
        // Byte by byte, so that nothing after the line is taken from the socket: at most
        // 101 small reads, once per connection.
        while !line.ends_with(b"\r\n") {
            if line.len() == V1_MAX {
                return Err(ProxyError::Malformed(
                    "version-1 line longer than 107 bytes",
                ));
            }
            line.push(stream.read_u8().await?);
        }
        return parse_v1(&line);
    }
    if head != V2_SIGNATURE[..6] {
        return Err(ProxyError::Missing);
    }
    let mut fixed = [0u8; 16];
    fixed[..6].copy_from_slice(&head);
    stream.read_exact(&mut fixed[6..]).await?;
    if fixed[..12] != V2_SIGNATURE {
        return Err(ProxyError::Missing);
    }
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if 16 + len > V2_MAX {
        return Err(ProxyError::Malformed(
            "version-2 header longer than 1,024 bytes",
        ));
    }
    let mut rest = vec![0u8; len];
    stream.read_exact(&mut rest).await?;
    parse_v2(&fixed, &rest)
}

/// Parses a whole version-1 line, `\r\n` included.
///
/// # Errors
/// [`ProxyError::Malformed`] naming the first thing wrong.
pub fn parse_v1(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let bad = ProxyError::Malformed;
    let text = line
        .strip_suffix(b"\r\n")
        .ok_or(bad("version-1 line without CRLF"))?;
    let text = std::str::from_utf8(text).map_err(|_| bad("version-1 line not ASCII"))?;
    let mut words = text.split(' ');
    if words.next() != Some("PROXY") {
        return Err(ProxyError::Missing);
    }
    let family = words
        .next()
        .ok_or(bad("version-1 line without a protocol"))?;
    if family == "UNKNOWN" {
        // Whatever follows is to be ignored (the specification's rule).
        return Ok(ProxyHeader::Local);
    }
    let v6 = match family {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(bad("version-1 protocol neither TCP4, TCP6 nor UNKNOWN")),
    };
    let mut field = || {
        words
            .next()
            .ok_or(bad("version-1 line with too few fields"))
    };
    let (src, dst, sport, dport) = (field()?, field()?, field()?, field()?);
    if words.next().is_some() {
        return Err(bad("version-1 line with too many fields"));
    }
    let ip = |s: &str| -> Result<IpAddr, ProxyError> {
        let ip = if v6 {
            s.parse::<Ipv6Addr>().map(IpAddr::V6)
        } else {
            s.parse::<Ipv4Addr>().map(IpAddr::V4)
        };
        ip.map_err(|_| bad("version-1 address not of its protocol's form"))
    };
    let port = |s: &str| -> Result<u16, ProxyError> {
        // Decimal without sign or leading zeros (a bare 0 is allowed).
        if s.is_empty()
            || (s.len() > 1 && s.starts_with('0'))
            || !s.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad("version-1 port not a decimal number"));
        }
        s.parse().map_err(|_| bad("version-1 port above 65535"))
    };
    Ok(ProxyHeader::Proxied {
        source: SocketAddr::new(ip(src)?, port(sport)?),
        destination: SocketAddr::new(ip(dst)?, port(dport)?),
    })
}

/// Parses a version-2 header: its 16 fixed bytes and the `len` bytes that follow.
///
/// # Errors
/// [`ProxyError`] naming the first thing wrong.
pub fn parse_v2(fixed: &[u8; 16], rest: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let bad = ProxyError::Malformed;
    if fixed[..12] != V2_SIGNATURE {
        return Err(ProxyError::Missing);
    }
    if usize::from(u16::from_be_bytes([fixed[14], fixed[15]])) != rest.len() {
        return Err(bad("version-2 length does not match the bytes given"));
    }
    if fixed[12] >> 4 != 2 {
        return Err(bad("version-2 header of an unknown version"));
    }
    match fixed[12] & 0x0f {
        0 => return Ok(ProxyHeader::Local),
        1 => {}
        _ => return Err(bad("version-2 command neither LOCAL nor PROXY")),
    }
    let addr =
        |ip: IpAddr, port: &[u8]| SocketAddr::new(ip, u16::from_be_bytes([port[0], port[1]]));
    match fixed[13] {
        // TCP over IPv4: 4 + 4 + 2 + 2 bytes, then TLVs (ignored).
        0x11 => {
            let a = rest
                .get(..12)
                .ok_or(bad("version-2 TCP4 addresses shorter than 12 bytes"))?;
            let ip = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            Ok(ProxyHeader::Proxied {
                source: addr(ip(&a[0..4]), &a[8..10]),
                destination: addr(ip(&a[4..8]), &a[10..12]),
            })
        }
        // TCP over IPv6: 16 + 16 + 2 + 2 bytes.
        0x21 => {
            let a = rest
                .get(..36)
                .ok_or(bad("version-2 TCP6 addresses shorter than 36 bytes"))?;
            let ip = |b: &[u8]| {
                let mut o = [0u8; 16];
                o.copy_from_slice(b);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            Ok(ProxyHeader::Proxied {
                source: addr(ip(&a[0..16]), &a[32..34]),
                destination: addr(ip(&a[16..32]), &a[34..36]),
            })
        }
        // UNSPEC, UDP, Unix sockets: a receiver accepts them and keeps the real peer address.
        0x00 | 0x12 | 0x22 | 0x31 | 0x32 => Ok(ProxyHeader::Local),
        _ => Err(bad("version-2 address family or protocol unknown")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn v1(s: &str) -> Result<ProxyHeader, ProxyError> {
        parse_v1(s.as_bytes())
    }

    #[test]
    fn version_1_lines() {
        assert_eq!(
            v1("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n").unwrap(),
            ProxyHeader::Proxied {
                source: "192.0.2.1:56324".parse().unwrap(),
                destination: "198.51.100.2:443".parse().unwrap(),
            }
        );
        assert_eq!(
            v1("PROXY TCP6 2001:db8::1 ::1 0 65535\r\n")
                .unwrap()
                .source(),
            Some("[2001:db8::1]:0".parse().unwrap())
        );
        assert_eq!(v1("PROXY UNKNOWN\r\n").unwrap(), ProxyHeader::Local);
        assert_eq!(
            v1("PROXY UNKNOWN ffff::1 x y z\r\n").unwrap(),
            ProxyHeader::Local
        );
        for bad in [
            "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\n",
            "PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
            "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 1\r\n",
            "PROXY TCP4 ::1 198.51.100.2 1 2\r\n",
            "PROXY TCP6 192.0.2.1 ::1 1 2\r\n",
            "PROXY TCP4 192.0.2.1 198.51.100.2 65536 1\r\n",
            "PROXY TCP4 192.0.2.1 198.51.100.2 080 1\r\n",
            "PROXY TCP4 192.0.2.1 198.51.100.2 +80 1\r\n",
            "PROXY TCP4  192.0.2.1 198.51.100.2 80 1\r\n",
            "PROXY UDP4 192.0.2.1 198.51.100.2 80 1\r\n",
            "PROXY \r\n",
        ] {
            assert!(matches!(v1(bad), Err(ProxyError::Malformed(_))), "{bad:?}");
        }
    }

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> ([u8; 16], Vec<u8>) {
        let mut f = [0u8; 16];
        f[..12].copy_from_slice(&V2_SIGNATURE);
        f[12] = 0x20 | cmd;
        f[13] = fam;
        f[14..].copy_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        (f, body.to_vec())
    }

    #[test]
    fn version_2_headers() {
        let mut tcp4 = vec![192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb];
        let (f, r) = v2(1, 0x11, &tcp4);
        assert_eq!(
            parse_v2(&f, &r).unwrap(),
            ProxyHeader::Proxied {
                source: "192.0.2.1:56324".parse().unwrap(),
                destination: "198.51.100.2:443".parse().unwrap(),
            }
        );
        // TLVs after the addresses are skipped.
        tcp4.extend_from_slice(&[0x04, 0x00, 0x02, b'i', b'd']);
        let (f, r) = v2(1, 0x11, &tcp4);
        assert!(parse_v2(&f, &r).unwrap().source().is_some());
        let mut tcp6 = vec![0u8; 36];
        tcp6[15] = 1;
        tcp6[31] = 2;
        tcp6[32..34].copy_from_slice(&7u16.to_be_bytes());
        let (f, r) = v2(1, 0x21, &tcp6);
        assert_eq!(
            parse_v2(&f, &r).unwrap().source(),
            Some("[::1]:7".parse().unwrap())
        );
        // LOCAL (health checks) and families without an IP address keep the peer's address.
        assert_eq!(
            parse_v2(&v2(0, 0x00, &[]).0, &[]).unwrap(),
            ProxyHeader::Local
        );
        let (f, r) = v2(1, 0x31, &[0u8; 216]);
        assert_eq!(parse_v2(&f, &r).unwrap(), ProxyHeader::Local);
        // Refused: short addresses, unknown command, family and version.
        let (f, r) = v2(1, 0x11, &[0u8; 11]);
        assert!(parse_v2(&f, &r).is_err());
        let (f, r) = v2(1, 0x21, &[0u8; 35]);
        assert!(parse_v2(&f, &r).is_err());
        let (f, r) = v2(2, 0x11, &[0u8; 12]);
        assert!(parse_v2(&f, &r).is_err());
        let (f, r) = v2(1, 0x41, &[0u8; 12]);
        assert!(parse_v2(&f, &r).is_err());
        let (mut f, r) = v2(1, 0x11, &[0u8; 12]);
        f[12] = 0x11;
        assert!(parse_v2(&f, &r).is_err());
    }

    async fn read(bytes: &[u8]) -> (Result<ProxyHeader, ProxyError>, Vec<u8>) {
        let mut input = bytes;
        let header = read_header(&mut input).await;
        (header, input.to_vec())
    }

    #[tokio::test]
    async fn reading_stops_at_the_end_of_the_header() {
        let (h, rest) = read(b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\nHELLO").await;
        assert_eq!(h.unwrap().source(), Some("10.0.0.1:1".parse().unwrap()));
        assert_eq!(rest, b"HELLO");
        let (f, r) = v2(1, 0x11, &[10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2]);
        let (h, rest) = read(&[&f[..], &r, b"HELLO"].concat()).await;
        assert_eq!(h.unwrap().source(), Some("10.0.0.1:1".parse().unwrap()));
        assert_eq!(rest, b"HELLO");
    }

    #[tokio::test]
    async fn hostile_or_missing_headers_are_refused_within_their_bound() {
        // A steadfast HELLO or a TLS ClientHello without a header: missing.
        assert!(matches!(
            read(b"\x01\x00\x00\x00\x00\x2aHELLO").await.0,
            Err(ProxyError::Missing)
        ));
        assert!(matches!(
            read(b"\x16\x03\x01\x02\x00\x01\x00").await.0,
            Err(ProxyError::Missing)
        ));
        // A line that never ends stops at 107 bytes, having read no more.
        let long = [b"PROXY ".as_slice(), &[b'1'; 200]].concat();
        let (h, rest) = read(&long).await;
        assert!(matches!(h, Err(ProxyError::Malformed(_))));
        assert_eq!(rest.len(), long.len() - V1_MAX);
        // A version-2 length beyond the bound is refused before anything of it is read.
        let (mut f, _) = v2(1, 0x11, &[]);
        f[14..].copy_from_slice(&u16::MAX.to_be_bytes());
        let (h, rest) = read(&[&f[..], &[0u8; 100]].concat()).await;
        assert!(matches!(h, Err(ProxyError::Malformed(_))));
        assert_eq!(rest.len(), 100);
        // A header cut short: an I/O error (end of stream), not a hang.
        assert!(matches!(
            read(b"PROXY TCP4 1.2.3.4").await.0,
            Err(ProxyError::Io(_))
        ));
        assert!(matches!(
            read(&V2_SIGNATURE[..9]).await.0,
            Err(ProxyError::Io(_))
        ));
    }
}
