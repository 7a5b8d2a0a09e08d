//! How messages are cut out of stdin and written to stdout: one per line (the default, bytes
//! kept exactly), NUL-delimited, or each behind a 4-byte big-endian length. Nothing is ever
//! altered: a message the chosen framing cannot show (a newline inside, with `--lines`) is an
//! error that names it, never a changed line.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

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
}

/// Cuts records out of an input, as they come. All its state is in the struct, so that a
/// `next` dropped at its await (in a `select!`) loses nothing; it holds at most one record
/// of `max` bytes plus one read's worth, and a longer record is counted to its end, not kept.
pub(crate) struct RecordReader<R> {
    input: R,
    framing: Framing,
    max: u32,
    buf: Vec<u8>,
    /// Where the next record starts in `buf`.
    start: usize,
    /// Bytes after `start` already searched for the delimiter.
    scanned: usize,
    /// Bytes of the current record dropped already: it is longer than `max`.
    overlong: u64,
    eof: bool,
}

/// Bytes asked of the input per read.
const READ: usize = 64 << 10;

impl<R: AsyncRead + Unpin> RecordReader<R> {
    pub(crate) fn new(input: R, framing: Framing, max: u32) -> Self {
        RecordReader {
            input,
            framing,
            max,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            overlong: 0,
            eof: false,
        }
    }

    /// The next record; `None` at the end of input. An error (input ending inside a
    /// length-prefixed record, a record above `max`, a failed read) consumes the record.
    pub(crate) async fn next(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(r) = self.parse()? {
                return Ok(Some(r));
            }
            if self.eof {
                return self.last();
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            self.buf.reserve(READ);
            if self.input.read_buf(&mut self.buf).await? == 0 {
                self.eof = true;
            }
        }
    }

    fn too_large(&self, len: u64) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "is {len} bytes, above the largest message of {} bytes (--max-message)",
                self.max
            ),
        )
    }

    /// A complete record from what is buffered, if there is one.
    fn parse(&mut self) -> io::Result<Option<Vec<u8>>> {
        let pending = &self.buf[self.start..];
        match self.framing {
            Framing::Delimited(d) => {
                let Some(i) = pending[self.scanned..].iter().position(|b| *b == d) else {
                    self.scanned = pending.len();
                    if pending.len() > self.max as usize {
                        // Too long already: count it, keep none of it.
                        self.overlong += pending.len() as u64;
                        self.start = self.buf.len();
                        self.scanned = 0;
                    }
                    return Ok(None);
                };
                let end = self.scanned + i;
                let total = std::mem::take(&mut self.overlong) + end as u64;
                let record = (total <= u64::from(self.max)).then(|| pending[..end].to_vec());
                self.start += end + 1;
                self.scanned = 0;
                match record {
                    Some(r) => Ok(Some(r)),
                    None => Err(self.too_large(total)),
                }
            }
            Framing::LengthPrefixed => {
                let Some(len) = pending.get(..4) else {
                    return Ok(None);
                };
                let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
                if len > self.max {
                    // The rest of the input cannot be framed reliably: it ends here.
                    self.start = self.buf.len();
                    self.eof = true;
                    return Err(self.too_large(u64::from(len)));
                }
                let Some(body) = pending.get(4..4 + len as usize) else {
                    return Ok(None);
                };
                let record = body.to_vec();
                self.start += 4 + len as usize;
                Ok(Some(record))
            }
        }
    }

    /// At the end of input: what is left is a last record without its delimiter, or a cut
    /// length-prefixed one.
    fn last(&mut self) -> io::Result<Option<Vec<u8>>> {
        let pending = &self.buf[self.start..];
        if pending.is_empty() && self.overlong == 0 {
            return Ok(None);
        }
        let left = pending.len();
        let record = pending.to_vec();
        self.start = self.buf.len();
        self.scanned = 0;
        match self.framing {
            Framing::Delimited(_) => {
                let total = std::mem::take(&mut self.overlong) + left as u64;
                if total > u64::from(self.max) {
                    return Err(self.too_large(total));
                }
                Ok(Some(record))
            }
            Framing::LengthPrefixed => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the input ends inside a record ({left} bytes of it)"),
            )),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{Framing, RecordReader};

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
            let mut rx = RecordReader::new(std::io::Cursor::new(wire), framing, 1 << 20);
            let mut back = Vec::new();
            while let Some(r) = rx.next().await.unwrap() {
                back.push(r);
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
            let mut rx =
                RecordReader::new(std::io::Cursor::new(wire), Framing::LengthPrefixed, max);
            assert!(rx.next().await.is_err());
            assert!(rx.next().await.unwrap().is_none());
        }
        // A last NUL-delimited record without its NUL is still a record.
        let mut rx = RecordReader::new(
            std::io::Cursor::new(b"a\0b".to_vec()),
            Framing::Delimited(0),
            9,
        );
        assert_eq!(rx.next().await.unwrap().unwrap(), b"a");
        assert_eq!(rx.next().await.unwrap().unwrap(), b"b");
        assert!(rx.next().await.unwrap().is_none());
        // A line longer than the limit, in pieces of any size, is counted and skipped past
        // as an error; the next one is read.
        let mut input = vec![b'x'; 200_000];
        input.extend_from_slice(b"\nok\n");
        let mut rx =
            RecordReader::new(std::io::Cursor::new(input), Framing::Delimited(b'\n'), 1000);
        let e = rx.next().await.unwrap_err();
        assert!(e.to_string().contains("is 200000 bytes"), "{e}");
        assert_eq!(rx.next().await.unwrap().unwrap(), b"ok");
    }
}
