//! MQTT over WebSocket (RFC 6455), on plain TCP or on TLS: the handshake and the framing
//! are the sans-IO modules below; this file moves their bytes through io_uring.

pub(crate) mod frame;
pub(crate) mod handshake;

use std::cell::{Cell, RefCell};
use std::io;

use tokio_uring::net::TcpStream;
use tracing::debug;

use self::frame::{Control, Deframer};
use super::tls::{TlsState, TlsStream};

/// What the WebSocket frames travel on.
pub(crate) enum Carrier {
    Tcp(TcpStream),
    Tls(Box<TlsStream>),
}

impl Carrier {
    async fn read(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            Carrier::Tcp(s) => s.read(buf).await,
            Carrier::Tls(s) => s.read(buf).await,
        }
    }

    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        match self {
            Carrier::Tcp(s) => s.write_all(buf).await,
            Carrier::Tls(s) => s.write_all(buf).await,
        }
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Carrier::Tcp(s) => s,
            Carrier::Tls(s) => s.tcp(),
        }
    }

    pub(crate) fn tls(&self) -> Option<&TlsStream> {
        match self {
            Carrier::Tcp(_) => None,
            Carrier::Tls(s) => Some(s),
        }
    }
}

/// A WebSocket connection after its handshake.
pub(crate) struct WsStream {
    carrier: Carrier,
    deframer: RefCell<Deframer>,
    /// Frame bytes read with the handshake, or left after a control frame.
    unread: RefCell<Vec<u8>>,
    /// Whole frames only: a pong must not land inside a data frame being written.
    write_lock: tokio::sync::Mutex<()>,
    /// A close frame went out: RFC 6455 allows no frame after it.
    close_sent: Cell<bool>,
}

/// A WebSocket connection's state, to move it to another worker.
pub(crate) struct WsState {
    tls: Option<TlsState>,
    deframer: Deframer,
    unread: Vec<u8>,
}

impl WsStream {
    /// Reads the HTTP upgrade request for `path` and answers it; refuses anything else with
    /// an HTTP error. The caller bounds it with a timeout.
    pub(crate) async fn accept(carrier: Carrier, path: &str) -> io::Result<WsStream> {
        let mut request = Vec::new();
        let upgrade = loop {
            match handshake::parse_request(&request, path) {
                Ok(Some(upgrade)) => break upgrade,
                Ok(None) => {}
                Err(refusal) => {
                    debug!("WebSocket handshake refused: {refusal:?}");
                    let _ = carrier.write_all(refusal.response()).await;
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("WebSocket handshake refused: {refusal:?}"),
                    ));
                }
            }
            let (result, buf) = carrier.read(Vec::with_capacity(1024)).await;
            match result? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => request.extend_from_slice(&buf[..n]),
            }
        };
        let (result, _) = carrier.write_all(upgrade.response()).await;
        result?;
        request.drain(..upgrade.request_len);
        Ok(WsStream {
            carrier,
            deframer: RefCell::new(Deframer::new()),
            unread: RefCell::new(request),
            write_lock: tokio::sync::Mutex::new(()),
            close_sent: Cell::new(false),
        })
    }

    pub(crate) fn carrier(&self) -> &Carrier {
        &self.carrier
    }

    /// Reads MQTT bytes (the binary frames' payload) into `buf`: 0 at the end of the
    /// stream, including a close frame.
    pub(crate) async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        buf.clear();
        loop {
            if self.deframer.borrow().is_closed() {
                return (Ok(0), buf);
            }
            let unread = std::mem::take(&mut *self.unread.borrow_mut());
            if !unread.is_empty() {
                let fed = self.deframer.borrow_mut().feed(&unread, &mut buf);
                match fed {
                    Ok((used, control)) => {
                        self.unread.borrow_mut().extend_from_slice(&unread[used..]);
                        if let Some(control) = control {
                            if let Err(e) = self.answer(control).await {
                                return (Err(e), buf);
                            }
                        }
                    }
                    Err(e) => {
                        debug!("WebSocket framing error: {e}");
                        let mut close = Vec::new();
                        frame::encode_close(e.status(), &mut close);
                        let _ = self.write_frame(close).await;
                        return (Err(io::Error::new(io::ErrorKind::InvalidData, e)), buf);
                    }
                }
                if !buf.is_empty() {
                    let n = buf.len();
                    return (Ok(n), buf);
                }
                continue;
            }
            let capacity = buf.capacity().max(1);
            let (result, raw) = self.carrier.read(Vec::with_capacity(capacity)).await;
            match result {
                Ok(0) => return (Ok(0), buf),
                Ok(n) => self.unread.borrow_mut().extend_from_slice(&raw[..n]),
                Err(e) => return (Err(e), buf),
            }
        }
    }

    async fn answer(&self, control: Control) -> io::Result<()> {
        let mut out = Vec::new();
        match control {
            Control::Ping(payload) => frame::encode_pong(&payload, &mut out),
            Control::Close(_) => frame::encode_close(frame::status::NORMAL, &mut out),
        }
        let (result, _) = self.write_frame(out).await;
        result
    }

    async fn write_frame(&self, frame: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let _turn = self.write_lock.lock().await;
        if self.close_sent.get() {
            return (Err(io::ErrorKind::BrokenPipe.into()), frame);
        }
        // The opcode is in the low bits of the first byte (frames here are never empty).
        if frame.first().is_some_and(|b| b & 0x0F == frame::CLOSE) {
            self.close_sent.set(true);
        }
        self.carrier.write_all(frame).await
    }

    /// Writes `data` as one binary frame.
    pub(crate) async fn write_all<B: AsRef<[u8]>>(&self, data: B) -> (io::Result<()>, B) {
        let mut frame = Vec::with_capacity(data.as_ref().len() + frame::MAX_HEADER_LEN);
        frame::encode_binary(data.as_ref(), &mut frame);
        let (result, _) = self.write_frame(frame).await;
        (result, data)
    }

    /// Sends a close frame (1000, normal closure), and close_notify under TLS, then shuts
    /// the socket down.
    pub(crate) async fn close(&self) {
        let mut close = Vec::new();
        frame::encode_close(frame::status::NORMAL, &mut close);
        let _ = self.write_frame(close).await;
        match &self.carrier {
            Carrier::Tls(tls) => tls.close().await,
            Carrier::Tcp(_) => self.shutdown(),
        }
    }

    pub(crate) fn shutdown(&self) {
        let _ = self.carrier.tcp().shutdown(std::net::Shutdown::Both);
    }

    /// The state to rebuild this stream on another worker.
    pub(crate) fn into_state(self) -> WsState {
        WsState {
            tls: match self.carrier {
                Carrier::Tcp(_) => None,
                Carrier::Tls(tls) => Some(tls.into_state()),
            },
            deframer: self.deframer.into_inner(),
            unread: self.unread.into_inner(),
        }
    }

    /// Rebuilds a stream another worker handed over.
    pub(crate) fn from_state(tcp: TcpStream, state: WsState) -> WsStream {
        WsStream {
            carrier: match state.tls {
                None => Carrier::Tcp(tcp),
                Some(tls) => Carrier::Tls(Box::new(TlsStream::from_state(tcp, tls))),
            },
            deframer: RefCell::new(state.deframer),
            unread: RefCell::new(state.unread),
            write_lock: tokio::sync::Mutex::new(()),
            close_sent: Cell::new(false),
        }
    }
}
