//! Connection transports: what a worker reads MQTT bytes from and writes them to.
//!
//! Every transport is driven through io_uring; a worker sees only [`Stream`]. TLS
//! ([`tls`], with certificates in [`certs`]) and WebSocket ([`ws`]) live in their own
//! modules; a listener's [`Endpoint`] says which of them its connections go through.

pub(crate) mod certs;
pub(crate) mod tls;
pub(crate) mod ws;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use bytes::BytesMut;
use petrel_state::broker::PeerIdentity;

use self::certs::TlsAcceptor;
use self::tls::{TlsState, TlsStream};
use self::ws::{Carrier, WsState, WsStream};
use crate::config::ListenerConfig;

/// Frames offered to one [`Stream::try_send`], on the stack.
pub(crate) const TRY_SEND_SLICES: usize = 64;

/// A connection's transport.
pub(crate) enum Stream {
    Tcp(tokio_uring::net::TcpStream),
    Unix(tokio_uring::net::UnixStream),
    Tls(Box<TlsStream>),
    Ws(Box<WsStream>),
}

/// What a TCP listener's connections go through before MQTT: TLS, WebSocket, both or
/// neither.
#[derive(Debug, Clone, Default)]
pub(crate) struct Endpoint {
    pub(crate) tls: Option<Arc<TlsAcceptor>>,
    /// The WebSocket path.
    pub(crate) websocket: Option<Arc<str>>,
}

impl Endpoint {
    /// Loads a listener's certificates; the error names the listener and the file.
    pub(crate) fn for_listener(listener: &ListenerConfig) -> Result<Endpoint, String> {
        let tls = match &listener.tls {
            Some(settings) => Some(Arc::new(TlsAcceptor::new(settings.clone()).map_err(
                |e| match listener.bind {
                    Some(bind) => format!("[[listener]] {bind}: {e}"),
                    None => e,
                },
            )?)),
            None => None,
        };
        Ok(Endpoint {
            tls,
            websocket: listener
                .websocket
                .as_ref()
                .map(|w| Arc::from(w.path.as_str())),
        })
    }

    /// Runs the TLS and WebSocket handshakes the listener asks for on an accepted socket.
    /// The caller bounds this with a timeout.
    pub(crate) async fn establish(&self, tcp: tokio_uring::net::TcpStream) -> io::Result<Stream> {
        let carrier = match &self.tls {
            Some(acceptor) => Carrier::Tls(Box::new(TlsStream::accept(tcp, acceptor).await?)),
            None => Carrier::Tcp(tcp),
        };
        match (&self.websocket, carrier) {
            (Some(path), carrier) => {
                Ok(Stream::Ws(Box::new(WsStream::accept(carrier, path).await?)))
            }
            (None, Carrier::Tls(tls)) => Ok(Stream::Tls(tls)),
            (None, Carrier::Tcp(tcp)) => Ok(Stream::Tcp(tcp)),
        }
    }
}

/// A connection on its way to another worker: a duplicate of its socket and the state of
/// the protocols above it.
pub(crate) struct Handover {
    fd: OwnedFd,
    kind: HandoverKind,
}

enum HandoverKind {
    Tcp,
    Unix,
    Tls(Box<TlsState>),
    Ws(Box<WsState>),
}

impl Stream {
    pub(crate) async fn read(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            Stream::Tcp(s) => s.read(buf).await,
            Stream::Unix(s) => s.read(buf).await,
            // Boxed: a connection's task keeps room for its posted read as long as it
            // lives, and these futures are several times a plain socket read's size.
            Stream::Tls(s) => Box::pin(s.read(buf)).await,
            Stream::Ws(s) => Box::pin(s.read(buf)).await,
        }
    }

    pub(crate) async fn write_all(&self, buf: BytesMut) -> (io::Result<()>, BytesMut) {
        match self {
            Stream::Tcp(s) => s.write_all(buf).await,
            Stream::Unix(s) => s.write_all(buf).await,
            Stream::Tls(s) => s.write_all(buf).await,
            Stream::Ws(s) => s.write_all(buf).await,
        }
    }

    /// Writes the frames with one gathering write per call (nothing copied), until every
    /// byte is out. The proxy forwards the frames it read this way.
    pub(crate) async fn write_frames(&self, mut frames: Vec<bytes::Bytes>) -> io::Result<()> {
        // Encrypted or framed streams copy anyway: each frame goes through their writer.
        match self {
            Stream::Tls(s) => {
                for frame in frames {
                    s.write_all(frame).await.0?;
                }
                return Ok(());
            }
            Stream::Ws(s) => {
                for frame in frames {
                    s.write_all(frame).await.0?;
                }
                return Ok(());
            }
            Stream::Tcp(_) | Stream::Unix(_) => {}
        }
        while !frames.is_empty() {
            let (result, rest) = match self {
                Stream::Tcp(s) => s.writev(frames).await,
                Stream::Unix(s) => s.writev(frames).await,
                Stream::Tls(_) | Stream::Ws(_) => return Ok(()),
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

    /// Sends what the socket takes of `frames` at once, without waiting: one non-blocking
    /// gathering send (nothing copied), `Ok(0)` when the socket is full. `None` for TLS and
    /// WebSocket streams, which write only through [`write_frames`](Self::write_frames).
    pub(crate) fn try_send<'a>(
        &self,
        frames: impl Iterator<Item = &'a bytes::Bytes>,
    ) -> Option<io::Result<usize>> {
        let fd = match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tls(_) | Stream::Ws(_) => return None,
        };
        let mut slices = [io::IoSlice::new(&[]); TRY_SEND_SLICES];
        let mut count = 0;
        for (slot, frame) in slices.iter_mut().zip(frames) {
            *slot = io::IoSlice::new(frame);
            count += 1;
        }
        // SAFETY: `fd` belongs to `self`, which outlives this borrow; the socket is only
        // written to here, not closed.
        #[allow(unsafe_code)]
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        Some(
            match socket2::SockRef::from(&borrowed)
                .send_vectored_with_flags(&slices[..count], flags)
            {
                Ok(n) => Ok(n),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    Ok(0)
                }
                Err(e) => Err(e),
            },
        )
    }

    /// Ends the connection the way its protocol ends a stream (TLS close_notify, a
    /// WebSocket close frame), then shuts the socket down. A peer that does not read gets
    /// a second, not more: the socket is shut down either way.
    pub(crate) async fn close(&self) {
        let goodbye = async {
            match self {
                Stream::Tls(s) => s.close().await,
                Stream::Ws(s) => s.close().await,
                Stream::Tcp(_) | Stream::Unix(_) => {}
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), goodbye).await;
        self.shutdown();
    }

    pub(crate) fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Tls(s) => {
                s.shutdown();
                Ok(())
            }
            Stream::Ws(s) => {
                s.shutdown();
                Ok(())
            }
        };
    }

    /// What the transport proved about the peer (a verified client certificate).
    pub(crate) fn identity(&self) -> Option<PeerIdentity> {
        match self {
            Stream::Tcp(_) | Stream::Unix(_) => None,
            Stream::Tls(s) => s.identity().cloned(),
            Stream::Ws(s) => s.carrier().tls().and_then(|t| t.identity().cloned()),
        }
    }

    /// The socket to poll for readiness while the connection is quiet: only plain sockets,
    /// since TLS and WebSocket streams may hold bytes already taken from theirs.
    pub(crate) fn pollable_fd(&self) -> Option<i32> {
        match self {
            Stream::Tcp(s) => Some(s.as_raw_fd()),
            Stream::Unix(s) => Some(s.as_raw_fd()),
            Stream::Tls(_) | Stream::Ws(_) => None,
        }
    }

    fn raw_fd(&self) -> i32 {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.tcp().as_raw_fd(),
            Stream::Ws(s) => s.carrier().tcp().as_raw_fd(),
        }
    }

    /// Packs the connection up to hand it to another worker. Nothing may be reading or
    /// writing it.
    pub(crate) fn into_handover(self) -> io::Result<Handover> {
        let raw = self.raw_fd();
        // SAFETY: `raw` belongs to `self`, which is alive until the end of this call, so
        // the borrowed descriptor is open; `try_clone_to_owned` dups it into a new owned
        // one, which outlives `self` (whose drop closes the original).
        #[allow(unsafe_code)]
        let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
        let fd = borrowed.try_clone_to_owned()?;
        let kind = match self {
            Stream::Tcp(_) => HandoverKind::Tcp,
            Stream::Unix(_) => HandoverKind::Unix,
            Stream::Tls(s) => HandoverKind::Tls(Box::new(s.into_state())),
            Stream::Ws(s) => HandoverKind::Ws(Box::new(s.into_state())),
        };
        Ok(Handover { fd, kind })
    }
}

impl Handover {
    /// Rebuilds the stream on the worker it was handed to.
    pub(crate) fn into_stream(self) -> Stream {
        let tcp =
            |fd: OwnedFd| tokio_uring::net::TcpStream::from_std(std::net::TcpStream::from(fd));
        match self.kind {
            HandoverKind::Tcp => Stream::Tcp(tcp(self.fd)),
            HandoverKind::Unix => Stream::Unix(tokio_uring::net::UnixStream::from_std(
                std::os::unix::net::UnixStream::from(self.fd),
            )),
            HandoverKind::Tls(state) => {
                Stream::Tls(Box::new(TlsStream::from_state(tcp(self.fd), *state)))
            }
            HandoverKind::Ws(state) => {
                Stream::Ws(Box::new(WsStream::from_state(tcp(self.fd), *state)))
            }
        }
    }
}
