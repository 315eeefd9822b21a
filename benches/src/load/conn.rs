//! Byte buffers between a socket and a sans-IO session, shared by the MQTT and raw drivers.

use std::io;

use tokio::net::TcpStream;

use super::transport::Layers;

/// A non-blocking TCP stream with a read buffer and a write buffer.
///
/// Writes are batched: producers append to `wbuf` and one `try_write` sends everything
/// appended since the last one, so a flood of small messages costs one syscall per tens of
/// kilobytes, not one per message. With TLS or WebSocket, [`Layers`] sit between the
/// buffers and the socket; plain TCP has none and pays one branch per read and write.
pub(crate) struct Io {
    pub(crate) stream: TcpStream,
    layers: Option<Box<Layers>>,
    pub(crate) rbuf: Vec<u8>,
    pub(crate) rstart: usize,
    pub(crate) rend: usize,
    pub(crate) wbuf: Vec<u8>,
    pub(crate) wstart: usize,
    pub(crate) wend: usize,
}

/// The most the read buffer grows to for one packet that does not fit.
const MAX_READ_BUFFER: usize = 16 * 1024 * 1024;

impl Io {
    pub(crate) fn new(
        stream: TcpStream,
        layers: Option<Box<Layers>>,
        rcap: usize,
        wcap: usize,
    ) -> Io {
        Io {
            stream,
            layers,
            rbuf: vec![0; rcap],
            rstart: 0,
            rend: 0,
            wbuf: vec![0; wcap],
            wstart: 0,
            wend: 0,
        }
    }

    /// Whether bytes wait to be written.
    pub(crate) fn pending_write(&self) -> bool {
        self.wend > self.wstart || self.layers.as_ref().is_some_and(|l| l.wants_write())
    }

    /// Free bytes at the end of the write buffer, after compacting it.
    pub(crate) fn write_room(&mut self) -> usize {
        if self.wstart == self.wend {
            self.wstart = 0;
            self.wend = 0;
        } else if self.wstart > 0 && self.wbuf.len() - self.wend < self.wbuf.len() / 4 {
            self.wbuf.copy_within(self.wstart..self.wend, 0);
            self.wend -= self.wstart;
            self.wstart = 0;
        }
        self.wbuf.len() - self.wend
    }

    /// The free tail of the write buffer, to append to; call [`Io::wrote`] after.
    pub(crate) fn write_tail(&mut self) -> &mut [u8] {
        self.write_room();
        &mut self.wbuf[self.wend..]
    }

    /// Marks `n` bytes appended to the write buffer.
    pub(crate) fn wrote(&mut self, n: usize) {
        self.wend += n;
    }

    /// Writes what the socket takes now. Returns whether anything was written.
    pub(crate) fn flush(&mut self) -> io::Result<bool> {
        if let Some(layers) = &mut self.layers {
            return flush_layered(
                layers,
                &self.stream,
                &self.wbuf,
                &mut self.wstart,
                self.wend,
            );
        }
        let mut progress = false;
        while self.wstart < self.wend {
            match self.stream.try_write(&self.wbuf[self.wstart..self.wend]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.wstart += n;
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(progress)
    }

    /// Reads what the socket has now into the read buffer. Returns the bytes read (0 when
    /// nothing is there yet); the end of the stream is an error.
    pub(crate) fn fill(&mut self) -> io::Result<usize> {
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        } else if self.rstart > 0 {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
        }
        if self.rend == self.rbuf.len() {
            // A packet larger than the buffer: grow, up to a limit.
            if self.rbuf.len() >= MAX_READ_BUFFER {
                return Err(io::Error::other("packet larger than the read buffer limit"));
            }
            let len = (self.rbuf.len() * 2).min(MAX_READ_BUFFER);
            self.rbuf.resize(len, 0);
        }
        if let Some(layers) = &mut self.layers {
            let mut n = layers.advance(&mut self.rbuf[self.rend..])?;
            if self.rend + n < self.rbuf.len() && layers.read_socket(&self.stream)? > 0 {
                n += layers.advance(&mut self.rbuf[self.rend + n..])?;
            }
            self.rend += n;
            if n == 0 && layers.ended() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            return Ok(n);
        }
        loop {
            match self.stream.try_read(&mut self.rbuf[self.rend..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.rend += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// [`Io::flush`] through TLS or WebSocket: hands the buffered MQTT bytes to the layers and
/// writes what they produce, until the socket or the layers take no more.
fn flush_layered(
    layers: &mut Layers,
    stream: &TcpStream,
    wbuf: &[u8],
    wstart: &mut usize,
    wend: usize,
) -> io::Result<bool> {
    let mut progress = false;
    loop {
        let taken = layers.send(&wbuf[*wstart..wend])?;
        *wstart += taken;
        let wrote = layers.flush(stream)?;
        progress |= taken > 0 || wrote;
        if !wrote && (taken == 0 || *wstart == wend) {
            return Ok(progress);
        }
    }
}

/// A short, stable description of an I/O error for the failure counts.
pub(crate) fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "closed by peer".into(),
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::BrokenPipe => "broken pipe".into(),
        io::ErrorKind::TimedOut => "timed out".into(),
        io::ErrorKind::AddrNotAvailable => "no local port available".into(),
        _ => format!("io: {e}"),
    }
}
