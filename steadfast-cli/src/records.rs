//! How messages are cut out of stdin and written to stdout: one per line (the default, bytes
//! kept exactly), NUL-delimited, or each behind a 4-byte big-endian length. Nothing is ever
//! altered: a message the chosen framing cannot show (a newline inside, with `--lines`) is an
//! error that names it, never a changed line.

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

/// The framing options shared by the commands that read or write messages.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
#[group(multiple = false)]
pub(crate) struct Records {
    /// One message per line, the default: the bytes between two newlines, kept exactly (a
    /// `\r` included). A message with a newline inside cannot be written this way.
    #[arg(long)]
    lines: bool,
    /// NUL-delimited messages, as `find -print0` and `xargs -0` use them; a last record
    /// without its NUL is still a record.
    #[arg(short = '0', long)]
    null: bool,
    /// Each message as a 4-byte big-endian length followed by its bytes (for programs: any
    /// bytes at all).
    #[arg(long)]
    length_prefixed: bool,
}

/// The framing chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Ended by this byte (`\n` or NUL).
    Delimited(u8),
    /// A 4-byte big-endian length first.
    LengthPrefixed,
}

impl Records {
    /// The framing the options chose.
    pub(crate) fn framing(self) -> Framing {
        if self.null {
            Framing::Delimited(0)
        } else if self.length_prefixed {
            Framing::LengthPrefixed
        } else {
            Framing::Delimited(b'\n')
        }
    }
}

impl Framing {
    /// Appends `body` framed to `out`, or says why it cannot be (it holds the delimiter).
    pub(crate) fn encode(self, body: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Framing::Delimited(d) => {
                if let Some(at) = body.iter().position(|b| *b == d) {
                    return Err(format!(
                        "it holds {} at byte {at}, which {} cannot show (use {})",
                        if d == 0 { "a NUL" } else { "a newline" },
                        if d == 0 { "--null" } else { "--lines" },
                        if d == 0 {
                            "--length-prefixed"
                        } else {
                            "-0 or --length-prefixed"
                        }
                    ));
                }
                out.extend_from_slice(body);
                out.push(d);
            }
            Framing::LengthPrefixed => {
                let Ok(len) = u32::try_from(body.len()) else {
                    return Err(format!("it is {} bytes, above 4 GiB − 1", body.len()));
                };
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(body);
            }
        }
        Ok(())
    }

    /// Reads `input` in a task of its own and hands over one record at a time (a channel of
    /// one: the reader stays at most one record ahead), then `None` at the end of input. An
    /// error (input ending inside a length-prefixed record, a length above `max`, a failed
    /// read) is the last item.
    pub(crate) fn reader<R>(self, input: R, max: u32) -> mpsc::Receiver<io::Result<Vec<u8>>>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let mut input = BufReader::new(input);
            loop {
                let record = self.read(&mut input, max).await;
                let end = !matches!(record, Ok(Some(_)));
                let item = match record {
                    Ok(Some(r)) => Ok(r),
                    Ok(None) => return,
                    Err(e) => Err(e),
                };
                if tx.send(item).await.is_err() || end {
                    return;
                }
            }
        });
        rx
    }

    async fn read<R: AsyncRead + Unpin>(
        self,
        input: &mut BufReader<R>,
        max: u32,
    ) -> io::Result<Option<Vec<u8>>> {
        match self {
            Framing::Delimited(d) => {
                // A record longer than `max` is counted to its end, not kept: memory stays
                // bounded and the error says how long it was.
                let mut record = Vec::new();
                let (mut total, mut any) = (0u64, false);
                loop {
                    let buf = input.fill_buf().await?;
                    if buf.is_empty() {
                        break;
                    }
                    any = true;
                    let (part, used, found) = match buf.iter().position(|b| *b == d) {
                        Some(i) => (&buf[..i], i + 1, true),
                        None => (buf, buf.len(), false),
                    };
                    total += part.len() as u64;
                    if total <= u64::from(max) {
                        record.extend_from_slice(part);
                    } else {
                        record = Vec::new();
                    }
                    input.consume(used);
                    if found {
                        break;
                    }
                }
                if !any {
                    return Ok(None);
                }
                if total > u64::from(max) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "is {total} bytes, above the largest message of {max} bytes \
                             (--max-message)"
                        ),
                    ));
                }
                Ok(Some(record))
            }
            Framing::LengthPrefixed => {
                let mut len = [0u8; 4];
                let mut got = 0;
                while got < 4 {
                    let n = input.read(&mut len[got..]).await?;
                    if n == 0 {
                        if got == 0 {
                            return Ok(None);
                        }
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("the input ends inside a length ({got} of 4 bytes)"),
                        ));
                    }
                    got += n;
                }
                let len = u32::from_be_bytes(len);
                if len > max {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "is {len} bytes, above the largest message of {max} bytes \
                             (--max-message)"
                        ),
                    ));
                }
                let mut record = vec![0u8; len as usize];
                input.read_exact(&mut record).await.map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("the input ends inside a record of {len} bytes"),
                    )
                })?;
                Ok(Some(record))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::Framing;

    #[tokio::test]
    async fn records_round_trip_byte_for_byte() {
        let bodies: Vec<Vec<u8>> = vec![
            b"plain".to_vec(),
            b"with\r".to_vec(),
            Vec::new(),
            vec![0xff, 0xfe, b'\n', 0, 7],
        ];
        for framing in [
            Framing::Delimited(b'\n'),
            Framing::Delimited(0),
            Framing::LengthPrefixed,
        ] {
            let mut wire = Vec::new();
            let mut kept = Vec::new();
            for b in &bodies {
                if framing.encode(b, &mut wire).is_ok() {
                    kept.push(b.clone());
                }
            }
            let mut rx = framing.reader(std::io::Cursor::new(wire), 1 << 20);
            let mut back = Vec::new();
            while let Some(r) = rx.recv().await {
                back.push(r.unwrap());
            }
            assert_eq!(back, kept, "{framing:?}");
            // Only the body holding the delimiter is refused, never altered.
            let refused = bodies.len() - kept.len();
            assert_eq!(refused, usize::from(framing != Framing::LengthPrefixed));
        }
    }

    #[tokio::test]
    async fn a_cut_or_oversized_length_prefixed_input_is_an_error() {
        for (wire, max) in [
            (vec![0, 0, 0, 5, b'a'], 100),
            (vec![0, 0], 100),
            (vec![0, 0, 1, 0], 255),
        ] {
            let mut rx = Framing::LengthPrefixed.reader(std::io::Cursor::new(wire), max);
            assert!(rx.recv().await.is_some_and(|r| r.is_err()));
            assert!(rx.recv().await.is_none());
        }
        // A last NUL-delimited record without its NUL is still a record.
        let mut rx = Framing::Delimited(0).reader(std::io::Cursor::new(b"a\0b".to_vec()), 9);
        assert_eq!(rx.recv().await.unwrap().unwrap(), b"a");
        assert_eq!(rx.recv().await.unwrap().unwrap(), b"b");
        assert!(rx.recv().await.is_none());
    }
}
