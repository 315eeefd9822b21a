//! TLS (rustls) and WebSocket under a connection's MQTT byte stream.
//!
//! A plain TCP connection has no [`Layers`]: its buffers go straight to the socket, so the
//! TCP path costs what it did before these transports existed (one branch per read and
//! write). A TLS, WebSocket or secure WebSocket connection puts [`Layers`] between its
//! buffers and the socket:
//!
//! ```text
//! out: MQTT bytes → [WebSocket frame] → [TLS records] → socket
//! in:  socket → net_in → [TLS plaintext → mid_in] → [WebSocket deframe] → MQTT bytes
//! ```
//!
//! Every step is non-blocking and bounded, like the rest of the connection's loop: a layer
//! takes more only while what it holds for the next one is below a limit. The handshakes
//! (TLS, then the WebSocket upgrade) run before the MQTT session starts, inside the
//! connection's connect timeout, so a connection's connect latency includes them.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore};
use tokio::net::TcpStream;

use super::ws;

/// How a run's connections reach the broker beyond TCP. The default is plain TCP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportConfig {
    /// TLS, with these settings.
    pub tls: Option<TlsOptions>,
    /// WebSocket, at this path (on TLS when `tls` is set too: secure WebSocket).
    pub ws_path: Option<String>,
}

impl TransportConfig {
    /// What the report adds to the protocol's name: nothing for plain TCP.
    pub fn suffix(&self) -> &'static str {
        match (self.tls.is_some(), self.ws_path.is_some()) {
            (false, false) => "",
            (true, false) => " over TLS",
            (false, true) => " over WebSocket",
            (true, true) => " over secure WebSocket",
        }
    }
}

/// How the generator's TLS client is set up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the certificate authorities the broker's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (signatures of the handshake are still checked).
    pub insecure: bool,
    /// PEM certificate chain presented to the broker (mTLS).
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// The name the certificate is checked against and sent as SNI (default: the host).
    pub server_name: Option<String>,
}

/// What every connection of a run shares to set up its layers.
#[derive(Debug)]
pub(crate) struct Connector {
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    /// The WebSocket path and the `Host` header.
    ws: Option<(String, String)>,
}

fn read_err(what: &str, path: &std::path::Path, e: impl std::fmt::Display) -> String {
    format!("{what} {}: {e}", path.display())
}

impl Connector {
    /// Prepares the TLS configuration (certificates read once) for `host:port`; `None` for
    /// plain TCP.
    pub(crate) fn new(
        config: &TransportConfig,
        host: &str,
        port: u16,
    ) -> Result<Option<Connector>, String> {
        if config.tls.is_none() && config.ws_path.is_none() {
            return Ok(None);
        }
        let tls = match &config.tls {
            Some(t) => Some(tls_config(t, host)?),
            None => None,
        };
        let ws = config.ws_path.as_ref().map(|path| {
            let path = if path.starts_with('/') {
                path.clone()
            } else {
                format!("/{path}")
            };
            (path, format!("{host}:{port}"))
        });
        Ok(Some(Connector { tls, ws }))
    }

    /// Runs the TLS handshake and the WebSocket upgrade on a fresh connection.
    pub(crate) async fn establish(&self, stream: &TcpStream) -> io::Result<Box<Layers>> {
        let mut seed = RandomState::new().build_hasher();
        seed.write_usize(stream as *const TcpStream as usize);
        let seed = seed.finish();
        let mut layers = Box::new(Layers {
            tls: None,
            deframer: None,
            masks: ws::Masks::new(seed),
            net_in: Queue::default(),
            mid_in: Queue::default(),
            out: Queue::default(),
            frame: Vec::new(),
            scratch: vec![0; READ_CHUNK],
            eof: false,
            closed: false,
        });
        if let Some((config, name)) = &self.tls {
            let conn = ClientConnection::new(config.clone(), name.clone())
                .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
            layers.tls = Some(Box::new(conn));
            while layers.tls.as_ref().is_some_and(|c| c.is_handshaking()) {
                layers.flush(stream)?;
                if layers.tls.as_ref().is_some_and(|c| c.wants_write()) {
                    stream.writable().await?;
                    continue;
                }
                stream.readable().await?;
                layers.read_socket(stream)?;
                let mut none = [0u8; 0];
                layers.advance(&mut none)?;
                if layers.eof {
                    return Err(io::Error::other("TLS: closed during the handshake"));
                }
            }
        }
        if let Some((path, host)) = &self.ws {
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&seed.to_le_bytes());
            nonce[8..].copy_from_slice(&seed.rotate_left(29).wrapping_mul(31).to_le_bytes());
            let key = ws::key(nonce);
            layers.out.push(&ws::request(host, path, &key));
            layers.flush(stream)?;
            while layers.wants_write() {
                stream.writable().await?;
                layers.flush(stream)?;
            }
            let mut response = Vec::new();
            let mut chunk = [0u8; 1024];
            let end = loop {
                // Exactly the bytes taken so far are in `response`; what follows the
                // blank line is frames, handed back below.
                let n = layers.advance(&mut chunk)?;
                response.extend_from_slice(&chunk[..n]);
                if let Some(end) = ws::parse_response(&response, &key).map_err(io::Error::other)? {
                    break end;
                }
                if n == 0 {
                    if layers.eof {
                        return Err(io::Error::other("WebSocket: closed during the handshake"));
                    }
                    stream.readable().await?;
                    layers.read_socket(stream)?;
                }
            };
            // Frames that came with the answer go back in front of what is still queued.
            let frames = &response[end..];
            let queue = if layers.tls.is_some() {
                &mut layers.mid_in
            } else {
                &mut layers.net_in
            };
            let mut rest = frames.to_vec();
            rest.extend_from_slice(queue.pending());
            *queue = Queue::default();
            queue.push(&rest);
            layers.deframer = Some(ws::Deframer::default());
        }
        Ok(layers)
    }
}

fn tls_config(
    t: &TlsOptions,
    host: &str,
) -> Result<(Arc<ClientConfig>, ServerName<'static>), String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = if t.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    } else {
        let Some(ca_file) = &t.ca_file else {
            return Err("--tls needs --ca-file (or --insecure to accept any certificate)".into());
        };
        let mut roots = RootCertStore::empty();
        for cert in
            CertificateDer::pem_file_iter(ca_file).map_err(|e| read_err("--ca-file", ca_file, e))?
        {
            let cert = cert.map_err(|e| read_err("--ca-file", ca_file, e))?;
            roots
                .add(cert)
                .map_err(|e| read_err("--ca-file", ca_file, e))?;
        }
        if roots.is_empty() {
            return Err(read_err("--ca-file", ca_file, "no certificate in it"));
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match (&t.client_cert, &t.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| read_err("--client-cert", cert, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| read_err("--client-cert", cert, e))?;
            let key_der =
                PrivateKeyDer::from_pem_file(key).map_err(|e| read_err("--client-key", key, e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| read_err("--client-cert", cert, e))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("--client-cert and --client-key go together".into()),
    };
    // Every connection is a new device: a full handshake each, as a fleet connecting for
    // the first time does, and what a connection-rate figure over TLS should measure.
    config.resumption = Resumption::disabled();
    let name = t.server_name.as_deref().unwrap_or(host).to_owned();
    let name =
        ServerName::try_from(name.clone()).map_err(|e| format!("--server-name {name:?}: {e}"))?;
    Ok((Arc::new(config), name))
}

/// `--insecure`: any certificate is accepted; the handshake's signatures are still checked
/// (they cost the same as with verification, which keeps the figures comparable).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Bytes waiting for the next step, consumed from the front.
#[derive(Debug, Default)]
struct Queue {
    data: Vec<u8>,
    start: usize,
}

impl Queue {
    fn pending(&self) -> &[u8] {
        &self.data[self.start..]
    }
    fn len(&self) -> usize {
        self.data.len() - self.start
    }
    fn is_empty(&self) -> bool {
        self.start == self.data.len()
    }
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.data.len() {
            self.data.clear();
            self.start = 0;
        }
    }
    fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.data.extend_from_slice(bytes);
    }
    /// Moves the pending bytes to the front once the consumed part dominates.
    fn compact(&mut self) {
        if self.start > 0 && self.start >= self.data.len() / 2 {
            self.data.drain(..self.start);
            self.start = 0;
        }
    }
}

/// The most a layer holds for the next one before it takes no more: a few writes' worth.
const QUEUE_LIMIT: usize = 256 * 1024;

/// The most read from the socket at once (TLS records are at most 16 KiB; several per read).
const READ_CHUNK: usize = 64 * 1024;

/// The TLS session and WebSocket framing of one connection, with the bytes between them.
pub(crate) struct Layers {
    tls: Option<Box<ClientConnection>>,
    /// Set once the WebSocket upgrade succeeded.
    deframer: Option<ws::Deframer>,
    masks: ws::Masks,
    /// Bytes read from the socket, not yet taken by TLS or the deframer.
    net_in: Queue,
    /// TLS plaintext not yet deframed (secure WebSocket only).
    mid_in: Queue,
    /// Bytes for the layer below the MQTT buffer: WebSocket frames (and pongs) for TLS or
    /// the socket, or, before the upgrade, the upgrade request.
    out: Queue,
    /// Scratch for one outgoing frame (data, or the pongs answering pings); empty between
    /// calls.
    frame: Vec<u8>,
    /// Where reads land before they are queued (zeroed once, not per read).
    scratch: Vec<u8>,
    /// The socket reached its end.
    eof: bool,
    /// The peer closed the stream (TLS close_notify or a WebSocket close frame).
    closed: bool,
}

impl Layers {
    /// Whether bytes wait to reach the socket.
    pub(crate) fn wants_write(&self) -> bool {
        !self.out.is_empty() || self.tls.as_ref().is_some_and(|c| c.wants_write())
    }

    /// Takes MQTT bytes from the front of `data`, as many as the layers hold now; returns
    /// how many.
    pub(crate) fn send(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        if self.deframer.is_some() {
            if self.out.len() >= QUEUE_LIMIT {
                return Ok(0);
            }
            let n = data.len().min(ws::MAX_FRAME_PAYLOAD);
            ws::frame(&mut self.frame, ws::BINARY, &data[..n], &mut self.masks);
            self.out.push(&self.frame);
            // Empty again: `advance` appends pongs to it.
            self.frame.clear();
            return Ok(n);
        }
        match &mut self.tls {
            // rustls bounds what it holds (64 KiB of records by default) and takes less.
            Some(conn) => conn.writer().write(data),
            None => Err(io::Error::other("no transport layer")),
        }
    }

    /// Moves queued bytes down the layers and writes what the socket takes now. Returns
    /// whether anything reached the socket.
    pub(crate) fn flush(&mut self, stream: &TcpStream) -> io::Result<bool> {
        let mut progress = false;
        loop {
            let mut moved = false;
            if let Some(conn) = &mut self.tls {
                if !self.out.is_empty() {
                    let n = conn.writer().write(self.out.pending())?;
                    self.out.consume(n);
                }
                if conn.wants_write() {
                    match conn.write_tls(&mut Socket(stream)) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(_) => moved = true,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(progress),
                        Err(e) => return Err(e),
                    }
                }
            } else if !self.out.is_empty() {
                match stream.try_write(self.out.pending()) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        self.out.consume(n);
                        moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(progress),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            progress |= moved;
            if !moved {
                return Ok(progress);
            }
        }
    }

    /// Reads what the socket has now (if the layers have room for it); returns the bytes
    /// read.
    pub(crate) fn read_socket(&mut self, stream: &TcpStream) -> io::Result<usize> {
        if self.eof || self.net_in.len() >= QUEUE_LIMIT {
            return Ok(0);
        }
        let n = loop {
            match stream.try_read(&mut self.scratch) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            self.eof = true;
        }
        self.net_in.push(&self.scratch[..n]);
        Ok(n)
    }

    /// Moves what was read through TLS and the deframer into `out`; returns the MQTT bytes
    /// written there.
    pub(crate) fn advance(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut written = 0;
        loop {
            let mut moved = false;
            // The deframer's input: TLS plaintext, or the socket's bytes without TLS.
            if let Some(conn) = &mut self.tls {
                // Plaintext waiting in rustls first: it stops reading while it holds 16 KiB.
                let sink_room = if self.deframer.is_some() {
                    QUEUE_LIMIT.saturating_sub(self.mid_in.len())
                } else {
                    out.len() - written
                };
                if sink_room > 0 {
                    let n = if self.deframer.is_some() {
                        read_plaintext_into_queue(
                            conn,
                            &mut self.mid_in,
                            &mut self.scratch,
                            sink_room,
                        )?
                    } else {
                        read_plaintext(conn, &mut out[written..])?
                    };
                    if self.deframer.is_none() {
                        written += n;
                    }
                    moved |= n > 0;
                }
                if !self.net_in.is_empty() {
                    let mut input = self.net_in.pending();
                    match conn.read_tls(&mut input) {
                        Ok(n) => {
                            self.net_in.consume(n);
                            moved |= n > 0;
                        }
                        // rustls's plaintext buffer is full: drain it first (above).
                        Err(e) if e.kind() == io::ErrorKind::Other => {}
                        Err(e) => return Err(e),
                    }
                    let state = conn
                        .process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    if state.peer_has_closed() && state.plaintext_bytes_to_read() == 0 {
                        self.closed = true;
                    }
                }
            }
            if let Some(deframer) = &mut self.deframer {
                let input = if self.tls.is_some() {
                    &mut self.mid_in
                } else {
                    &mut self.net_in
                };
                if !input.is_empty() && written < out.len() {
                    let (r, w, stop) = deframer
                        .deframe(
                            input.pending(),
                            &mut out[written..],
                            &mut self.frame,
                            &mut self.masks,
                        )
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    input.consume(r);
                    written += w;
                    moved |= r > 0;
                    if stop == ws::Stop::Closed {
                        self.closed = true;
                    }
                    if !self.frame.is_empty() {
                        // Pongs, between whole frames.
                        self.out.push(&self.frame);
                        self.frame.clear();
                    }
                }
            } else if self.tls.is_none() && !self.net_in.is_empty() {
                let n = self.net_in.len().min(out.len() - written);
                out[written..written + n].copy_from_slice(&self.net_in.pending()[..n]);
                self.net_in.consume(n);
                written += n;
                moved |= n > 0;
            }
            if !moved {
                break;
            }
        }
        Ok(written)
    }

    /// Whether the stream is over and everything in it was handed on.
    pub(crate) fn ended(&self) -> bool {
        (self.closed || self.eof) && self.net_in.is_empty() && self.mid_in.is_empty()
    }
}

fn read_plaintext(conn: &mut ClientConnection, out: &mut [u8]) -> io::Result<usize> {
    match conn.reader().read(out) {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        // A close_notify with nothing left: reported through `closed`.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        Err(e) => Err(e),
    }
}

fn read_plaintext_into_queue(
    conn: &mut ClientConnection,
    queue: &mut Queue,
    scratch: &mut [u8],
    room: usize,
) -> io::Result<usize> {
    let len = room.min(scratch.len());
    let n = read_plaintext(conn, &mut scratch[..len])?;
    queue.push(&scratch[..n]);
    Ok(n)
}

/// The socket as `io::Write` for rustls: non-blocking, `WouldBlock` when full.
struct Socket<'a>(&'a TcpStream);

impl Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
