//! TLS over an io_uring TCP socket: rustls' `ServerConnection` fed from buffers that
//! io_uring reads fill, its records written with io_uring writes. No blocking socket, no
//! second thread.
//!
//! The reader and the writer of a connection are two tasks on one thread. They share the
//! rustls state in a `RefCell` that is never borrowed across an `await`, and take turns on
//! the socket's write side through `write_lock`, so records are never interleaved (the
//! reader writes too: handshake messages, alerts, key updates).

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::sync::Arc;

use petrel_state::broker::PeerIdentity;
use rustls::ServerConnection;
use tokio_uring::net::TcpStream;

use super::certs::TlsAcceptor;

/// The smallest socket read during the handshake (a ClientHello with a few extensions).
const HANDSHAKE_READ: usize = 4096;

/// A TLS connection on a TCP socket.
pub(crate) struct TlsStream {
    tcp: TcpStream,
    conn: RefCell<ServerConnection>,
    /// Ciphertext read from the socket that rustls could not take yet (its plaintext
    /// buffer was full): fed before the next socket read.
    pending: RefCell<Vec<u8>>,
    write_lock: tokio::sync::Mutex<()>,
    identity: Option<PeerIdentity>,
}

/// A TLS connection's state, to move it to another worker.
pub(crate) struct TlsState {
    conn: ServerConnection,
    pending: Vec<u8>,
    identity: Option<PeerIdentity>,
}

impl TlsStream {
    /// Runs the handshake on an accepted socket. The caller bounds it with a timeout.
    pub(crate) async fn accept(tcp: TcpStream, acceptor: &Arc<TlsAcceptor>) -> io::Result<Self> {
        let conn = ServerConnection::new(acceptor.config()).map_err(io::Error::other)?;
        let mut stream = TlsStream {
            tcp,
            conn: RefCell::new(conn),
            pending: RefCell::new(Vec::new()),
            write_lock: tokio::sync::Mutex::new(()),
            identity: None,
        };
        while stream.conn.borrow().is_handshaking() {
            stream.flush().await?;
            if !stream.conn.borrow().is_handshaking() {
                break;
            }
            // Ciphertext that waited while rustls had records to send goes first.
            if stream.feed_waiting().await? {
                continue;
            }
            let (result, _) = stream.fill(Vec::with_capacity(HANDSHAKE_READ)).await;
            if !result? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        // The last flight (and TLS 1.3 session tickets).
        stream.flush().await?;
        stream.identity = acceptor.identity(&stream.conn.borrow());
        Ok(stream)
    }

    /// What the client certificate proved, if the client gave one.
    pub(crate) fn identity(&self) -> Option<&PeerIdentity> {
        self.identity.as_ref()
    }

    /// Reads plaintext into `buf`'s spare capacity, like a socket read: 0 at the end of the
    /// stream.
    pub(crate) async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        loop {
            match self.take_plaintext(&mut buf) {
                Ok(Some(n)) => return (Ok(n), buf),
                Ok(None) => {}
                Err(e) => return (Err(e), buf),
            }
            // Answers rustls owes the peer (key updates, alerts) go out before waiting.
            if let Err(e) = self.flush().await {
                return (Err(e), buf);
            }
            // The caller's buffer takes the ciphertext; rustls copies it in, and the
            // buffer is free again for the plaintext.
            let (result, scratch) = self.fill(buf).await;
            buf = scratch;
            buf.clear();
            match result {
                Ok(true) => {}
                Ok(false) => return (Ok(0), buf),
                Err(e) => return (Err(e), buf),
            }
        }
    }

    /// Copies plaintext rustls holds into `buf`: `Some(0)` at a clean close, `None` when
    /// there is nothing yet.
    fn take_plaintext(&self, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
        loop {
            let capacity = buf.capacity().max(1);
            buf.resize(capacity, 0);
            let read = self.conn.borrow_mut().reader().read(buf);
            match read {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(Some(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    buf.clear();
                    // Ciphertext rustls refused while it held plaintext: feed it now
                    // that the plaintext is drained.
                    let before = self.pending.borrow().len();
                    if before == 0 {
                        return Ok(None);
                    }
                    self.feed(&[])?;
                    if self.pending.borrow().len() == before {
                        return Ok(None);
                    }
                }
                Err(e) => {
                    buf.clear();
                    return Err(e);
                }
            }
        }
    }

    /// During the handshake: feeds the ciphertext that waited; true if rustls took some.
    async fn feed_waiting(&self) -> io::Result<bool> {
        let before = self.pending.borrow().len();
        if before == 0 {
            return Ok(false);
        }
        if let Err(e) = self.feed(&[]) {
            let _ = self.flush().await;
            return Err(e);
        }
        Ok(self.pending.borrow().len() < before)
    }

    /// Reads from the socket into `scratch` and feeds rustls; false at the end of the
    /// stream.
    async fn fill(&self, scratch: Vec<u8>) -> (io::Result<bool>, Vec<u8>) {
        let (result, scratch) = self.tcp.read(scratch).await;
        let n = match result {
            Ok(0) => return (Ok(false), scratch),
            Ok(n) => n,
            Err(e) => return (Err(e), scratch),
        };
        if let Err(e) = self.feed(&scratch[..n]) {
            // Send the alert rustls queued, then give up.
            let _ = self.flush().await;
            return (Err(e), scratch);
        }
        (Ok(true), scratch)
    }

    /// Hands rustls the ciphertext waiting in `pending`, then `input`, for as long as it
    /// takes more; what it does not take waits in `pending`, in order.
    ///
    /// rustls refuses ciphertext (with an error, not a short read) once it holds 16 KiB of
    /// plaintext, and `wants_read` turns false as soon as it holds any or has handshake
    /// records to send, so feeding stops there.
    fn feed(&self, input: &[u8]) -> io::Result<()> {
        let mut conn = self.conn.borrow_mut();
        let mut pending = self.pending.borrow_mut();
        if pending.is_empty() {
            let mut rest = input;
            let result = feed_rustls(&mut conn, &mut rest);
            pending.extend_from_slice(rest);
            return result;
        }
        pending.extend_from_slice(input);
        let mut rest: &[u8] = &pending;
        let result = feed_rustls(&mut conn, &mut rest);
        let used = pending.len() - rest.len();
        pending.drain(..used);
        result
    }

    /// Writes every record rustls has queued.
    async fn flush(&self) -> io::Result<()> {
        let _turn = self.write_lock.lock().await;
        loop {
            let mut records = Vec::new();
            {
                let mut conn = self.conn.borrow_mut();
                while conn.wants_write() {
                    conn.write_tls(&mut records)?;
                }
            }
            if records.is_empty() {
                return Ok(());
            }
            let (result, _) = self.tcp.write_all(records).await;
            result?;
        }
    }

    /// Encrypts and writes all of `plain`.
    pub(crate) async fn write_all<B: AsRef<[u8]>>(&self, plain: B) -> (io::Result<()>, B) {
        let mut written = 0;
        while written < plain.as_ref().len() {
            let accepted = self
                .conn
                .borrow_mut()
                .writer()
                .write(&plain.as_ref()[written..]);
            match accepted {
                Ok(n) => written += n,
                Err(e) => return (Err(e), plain),
            }
            if let Err(e) = self.flush().await {
                return (Err(e), plain);
            }
        }
        (Ok(()), plain)
    }

    /// Sends close_notify, so the peer knows the stream ended whole, then shuts the
    /// socket down.
    pub(crate) async fn close(&self) {
        self.conn.borrow_mut().send_close_notify();
        let _ = self.flush().await;
        self.shutdown();
    }

    pub(crate) fn shutdown(&self) {
        let _ = self.tcp.shutdown(std::net::Shutdown::Both);
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The state to rebuild this stream on another worker, around a duplicate of its
    /// socket.
    pub(crate) fn into_state(self) -> TlsState {
        TlsState {
            conn: self.conn.into_inner(),
            pending: self.pending.into_inner(),
            identity: self.identity,
        }
    }

    /// Rebuilds a stream another worker handed over.
    pub(crate) fn from_state(tcp: TcpStream, state: TlsState) -> TlsStream {
        TlsStream {
            tcp,
            conn: RefCell::new(state.conn),
            pending: RefCell::new(state.pending),
            write_lock: tokio::sync::Mutex::new(()),
            identity: state.identity,
        }
    }
}

/// Feeds `input` to rustls while it wants more, advancing `input` past what it took.
fn feed_rustls(conn: &mut ServerConnection, input: &mut &[u8]) -> io::Result<()> {
    while !input.is_empty() && conn.wants_read() {
        if conn.read_tls(input)? == 0 {
            break;
        }
        conn.process_new_packets().map_err(io::Error::other)?;
    }
    Ok(())
}
