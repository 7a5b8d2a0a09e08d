//! The raw framing layer alone: length-prefixed frames over TCP with a size limit, no sessions.
//! An oversized announcement is refused before any buffer is grown for it.
//!
//! `cargo run -p steadfast --example raw`

use steadfast::raw::{Framed, RawError};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let echo = tokio::spawn(async move {
        let (s, _) = listener.accept().await?;
        let mut f = Framed::new(s, 1 << 20);
        while let Some(frame) = f.recv().await? {
            f.send(&frame).await?;
        }
        Ok::<_, RawError>(())
    });
    let mut f = Framed::new(TcpStream::connect(addr).await?, 1 << 20);
    for text in ["one", "two", "three"] {
        f.send(text.as_bytes()).await?;
        let back = f.recv().await?.ok_or("echo closed")?;
        assert_eq!(&back[..], text.as_bytes());
    }
    drop(f);
    echo.await??;

    // A hostile length prefix: 4 GiB − 1 announced, refused at once.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut evil = TcpStream::connect(addr).await?;
    let (s, _) = listener.accept().await?;
    evil.write_all(&[0xff, 0xff, 0xff, 0xff]).await?;
    let mut f = Framed::new(s, 1 << 20);
    match f.recv().await {
        Err(RawError::TooLarge { len, max }) => {
            println!("refused a {len}-byte frame (limit {max})")
        }
        other => return Err(format!("expected TooLarge, got {other:?}").into()),
    }
    println!("raw: three frames echoed, an oversized one refused");
    Ok(())
}
