//! `petrel-bench relay`: the ceiling a broker on this machine could reach.
//!
//! It accepts the raw connections of [`super::raw`], and copies every byte a publisher
//! sends to each subscriber of the publisher's group, without parsing anything: no
//! decoding, no topic matching, no session state, no acknowledgements. It only cuts the
//! stream at multiples of the frame size the publisher announced, so that frames from two
//! publishers sharing a subscriber (fan-in) interleave whole. What remains is the work no
//! broker can avoid — read from one socket, hand the bytes to another task, write to
//! another socket — on the same tokio runtime design a Rust broker would use, so its
//! throughput through the same load generator bounds what any broker can do here, and the
//! generator's figure against it shows the load the generator can produce.
//!
//! A subscriber's writer sits behind a bounded channel: when a subscriber reads slowly,
//! its publishers wait instead of the relay buffering without limit, so it never drops a
//! frame.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::raw::{HELLO_LEN, MAGIC};

/// Chunks queued per subscriber before its publishers wait.
const CHANNEL_DEPTH: usize = 64;

/// How much a publisher's read buffer takes per read: a publisher with a window of 1,024
/// small messages has about 90 KiB in flight, which one read then takes whole.
const READ_CHUNK: usize = 256 * 1024;

#[derive(Default)]
struct Groups {
    members: Mutex<HashMap<u32, Vec<mpsc::Sender<Bytes>>>>,
    /// Bumped on every change to `members`, so publishers re-read their group only then.
    version: AtomicU64,
}

impl Groups {
    fn snapshot(&self, group: u32) -> Vec<mpsc::Sender<Bytes>> {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.get(&group).cloned().unwrap_or_default()
    }

    fn join(&self, group: u32, tx: mpsc::Sender<Bytes>) {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        let list = members.entry(group).or_default();
        list.retain(|s| !s.is_closed());
        list.push(tx);
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    fn prune(&self, group: u32) {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = members.get_mut(&group) {
            list.retain(|s| !s.is_closed());
        }
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}

/// Accepts relay connections on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) -> io::Result<()> {
    let groups = Arc::new(Groups::default());
    loop {
        let (stream, _) = listener.accept().await?;
        let groups = groups.clone();
        tokio::spawn(async move {
            // A connection's failure ends only that connection.
            let _ = handle(stream, &groups).await;
        });
    }
}

async fn handle(mut stream: TcpStream, groups: &Groups) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut hello = [0u8; HELLO_LEN];
    stream.read_exact(&mut hello).await?;
    if &hello[..4] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a relay hello",
        ));
    }
    let group = u32::from_le_bytes([hello[8], hello[9], hello[10], hello[11]]);
    let frame_len = u32::from_le_bytes([hello[12], hello[13], hello[14], hello[15]]) as usize;
    match hello[4] {
        b'S' => {
            let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
            groups.join(group, tx);
            stream.write_all(&[1]).await?;
            write_out(stream, rx).await
        }
        b'P' if frame_len > 0 => {
            stream.write_all(&[1]).await?;
            forward(stream, group, frame_len, groups).await
        }
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, "bad relay role")),
    }
}

/// A publisher: reads, cuts at whole frames, hands each chunk (shared, not copied) to
/// every subscriber of the group.
async fn forward(
    mut stream: TcpStream,
    group: u32,
    frame_len: usize,
    groups: &Groups,
) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(4 * READ_CHUNK.max(frame_len));
    let mut version = groups.version.load(Ordering::Acquire);
    let mut subscribers = groups.snapshot(group);
    loop {
        if buf.capacity() - buf.len() < READ_CHUNK.max(frame_len) {
            buf.reserve(4 * READ_CHUNK.max(frame_len));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        let whole = buf.len() / frame_len * frame_len;
        if whole == 0 {
            continue;
        }
        let chunk = buf.split_to(whole).freeze();
        let current = groups.version.load(Ordering::Acquire);
        if current != version {
            version = current;
            subscribers = groups.snapshot(group);
        }
        let mut gone = false;
        for tx in &subscribers {
            gone |= tx.send(chunk.clone()).await.is_err();
        }
        if gone {
            groups.prune(group);
            subscribers.retain(|s| !s.is_closed());
        }
    }
}

/// A subscriber: writes what its publishers hand over, in order, everything queued at one
/// wake-up in one gathering write (fan-in: a chunk from each of eight publishers per
/// `writev`, not eight writes).
async fn write_out(mut stream: TcpStream, mut rx: mpsc::Receiver<Bytes>) -> io::Result<()> {
    let mut chunks = Vec::with_capacity(CHANNEL_DEPTH);
    while rx.recv_many(&mut chunks, CHANNEL_DEPTH).await > 0 {
        write_chunks(&mut stream, &chunks).await?;
        chunks.clear();
    }
    Ok(())
}

/// Writes `chunks` whole, in order, with as few `writev` calls as the socket allows.
async fn write_chunks(stream: &mut TcpStream, chunks: &[Bytes]) -> io::Result<()> {
    // The first chunk not yet written whole, and how much of it is.
    let (mut first, mut offset) = (0, 0);
    let mut slices = Vec::with_capacity(chunks.len());
    while first < chunks.len() {
        slices.clear();
        slices.push(IoSlice::new(&chunks[first][offset..]));
        slices.extend(chunks[first + 1..].iter().map(|c| IoSlice::new(c)));
        let mut n = stream.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let left = chunks[first].len() - offset;
            if n < left {
                offset += n;
                break;
            }
            n -= left;
            first += 1;
            offset = 0;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks far larger than a socket buffer make `writev` stop inside a chunk and between
    /// chunks; what arrives must still be every chunk whole and in order.
    #[tokio::test]
    async fn gathered_writes_keep_every_byte_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let chunks: Vec<Bytes> = (0..5u8)
            .map(|i| {
                let len = [1, 3 * 1024 * 1024 + 7, 5, 2 * 1024 * 1024, 4096][usize::from(i)];
                Bytes::from((0..len).map(|j| (j % 251) as u8 ^ i).collect::<Vec<u8>>())
            })
            .collect();
        let expected: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let reader = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut stream = TcpStream::connect(addr).await.unwrap();
        write_chunks(&mut stream, &chunks).await.unwrap();
        drop(stream);
        let got = reader.await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes reordered or lost");
    }
}
