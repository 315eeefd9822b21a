//! Connection transports: what a worker reads MQTT bytes from and writes them to.
//!
//! Every transport is driven through io_uring; a worker sees only [`Stream`].

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use bytes::BytesMut;

/// A connection's transport.
pub(crate) enum Stream {
    Tcp(tokio_uring::net::TcpStream),
    Unix(tokio_uring::net::UnixStream),
}

impl Stream {
    pub(crate) async fn read(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            Stream::Tcp(s) => s.read(buf).await,
            Stream::Unix(s) => s.read(buf).await,
        }
    }

    pub(crate) async fn write_all(&self, buf: BytesMut) -> (io::Result<()>, BytesMut) {
        match self {
            Stream::Tcp(s) => s.write_all(buf).await,
            Stream::Unix(s) => s.write_all(buf).await,
        }
    }

    /// Writes the frames with one gathering write per call (nothing copied), until every
    /// byte is out. The proxy forwards the frames it read this way.
    pub(crate) async fn write_frames(&self, mut frames: Vec<bytes::Bytes>) -> io::Result<()> {
        while !frames.is_empty() {
            let (result, rest) = match self {
                Stream::Tcp(s) => s.writev(frames).await,
                Stream::Unix(s) => s.writev(frames).await,
            };
            frames = rest;
            let mut written = result?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            // Drop what went out; a frame written in part keeps its tail.
            let done = frames
                .iter()
                .take_while(|f| {
                    let whole = written >= f.len();
                    if whole {
                        written -= f.len();
                    }
                    whole
                })
                .count();
            frames.drain(..done);
            if let Some(first) = frames.first_mut() {
                let _ = first.split_to(written);
            }
        }
        Ok(())
    }

    pub(crate) fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }

    /// A second descriptor for the same socket, to hand the connection to another worker.
    pub(crate) fn duplicate(&self) -> io::Result<OwnedFd> {
        let raw = match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        };
        // SAFETY: `raw` belongs to `self`, which is alive for this whole call, so the
        // borrowed descriptor is open; `try_clone_to_owned` dups it into a new owned one.
        #[allow(unsafe_code)]
        let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
        borrowed.try_clone_to_owned()
    }

    pub(crate) fn is_unix(&self) -> bool {
        matches!(self, Stream::Unix(_))
    }

    /// Rebuilds a stream from a descriptor another worker handed over.
    pub(crate) fn from_fd(fd: OwnedFd, unix: bool) -> Stream {
        if unix {
            Stream::Unix(tokio_uring::net::UnixStream::from_std(
                std::os::unix::net::UnixStream::from(fd),
            ))
        } else {
            Stream::Tcp(tokio_uring::net::TcpStream::from_std(
                std::net::TcpStream::from(fd),
            ))
        }
    }
}
