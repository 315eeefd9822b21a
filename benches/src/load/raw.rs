//! How the generator's connections reach `petrel-bench relay` (`--relay`).
//!
//! Every connection opens with a 16-byte hello — magic `PBR1`, role (`P` publisher or `S`
//! subscriber), three zero bytes, the group (u32 LE) and the frame size (u32 LE) — and
//! waits for one byte `1` back, sent once the relay has registered it. From then on the
//! connection is an ordinary MQTT client session whose broker is simulated at the two
//! points where the relay cannot answer: the CONNACK and the SUBACK are fed to the
//! session locally (and the CONNECT and SUBSCRIBE it wrote are dropped). Everything else —
//! encoding each PUBLISH in the session, batching, writing, reading, decoding each packet
//! back, the tallies — is the same code as against a broker, so a run through the relay
//! measures the generator's whole MQTT path.
//!
//! The relay sends no acknowledgements, so runs through it publish at QoS 0 whatever
//! `--qos` says, and keep-alive is off (a PINGREQ in a publisher's stream would be
//! forwarded to its subscribers as if it were a frame).

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The first bytes of every hello.
pub(crate) const MAGIC: &[u8; 4] = b"PBR1";
/// The length of the hello.
pub const HELLO_LEN: usize = 16;

/// The hello a client sends.
pub fn hello(publisher: bool, group: u32, frame_len: u32) -> [u8; HELLO_LEN] {
    let mut h = [0u8; HELLO_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4] = if publisher { b'P' } else { b'S' };
    h[8..12].copy_from_slice(&group.to_le_bytes());
    h[12..16].copy_from_slice(&frame_len.to_le_bytes());
    h
}

/// Sends the hello and waits for the relay's welcome.
pub(crate) async fn handshake(
    stream: &mut TcpStream,
    publisher: bool,
    group: u32,
    frame_len: usize,
) -> io::Result<()> {
    let frame_len = u32::try_from(frame_len).map_err(io::Error::other)?;
    stream
        .write_all(&hello(publisher, group, frame_len))
        .await?;
    let mut welcome = [0u8; 1];
    stream.read_exact(&mut welcome).await?;
    if welcome[0] != 1 {
        return Err(io::Error::other("unexpected relay welcome"));
    }
    Ok(())
}
