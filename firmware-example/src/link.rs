//! Moves bytes between a byte stream and a [`Client`]: the I/O half of the sans-IO client.
//!
//! A [`Link`] owns the transport and a receive buffer. [`Link::poll`] writes what the client
//! has queued, feeds every complete packet received to [`Client::handle_bytes`], handles the
//! client's timers, and hands each [`ClientEvent`] to a callback. It never blocks on input:
//! the transport's [`ReadReady`] says whether bytes are waiting.

use embedded_io::{Read, ReadReady, Write};
use petrel_state::client::{Client, ClientError, ClientEvent};
use petrel_state::Instant;

/// Why [`Link::poll`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LinkError {
    /// The transport failed.
    Io,
    /// The client reported an error; [`ClientError::is_fatal`] says whether the connection
    /// is over.
    Client(ClientError),
}

impl From<ClientError> for LinkError {
    fn from(e: ClientError) -> Self {
        LinkError::Client(e)
    }
}

/// A transport and its receive buffer of `RX` bytes (the largest packet the client can
/// take: set `ClientOptions::max_packet_size` to `RX`).
pub struct Link<T, const RX: usize> {
    io: T,
    rx: [u8; RX],
    rx_len: usize,
}

impl<T: Read + ReadReady + Write, const RX: usize> Link<T, RX> {
    /// A link over `io` with an empty receive buffer.
    pub const fn new(io: T) -> Self {
        Link {
            io,
            rx: [0; RX],
            rx_len: 0,
        }
    }

    /// Forgets bytes received on the previous connection (call it with
    /// [`Client::connection_lost`]).
    pub fn reset(&mut self) {
        self.rx_len = 0;
    }

    /// Writes everything the client has queued.
    pub fn flush<const I: usize, const B: usize>(
        &mut self,
        client: &mut Client<'_, I, B>,
        now: Instant,
    ) -> Result<(), LinkError> {
        let mut chunk = [0u8; 64];
        loop {
            let n = client.poll_transmit(now, &mut chunk);
            if n == 0 {
                return self.io.flush().map_err(io_error);
            }
            self.io
                .write_all(chunk.get(..n).unwrap_or(&[]))
                .map_err(io_error)?;
        }
    }

    /// One round: send what is queued, run the client's timers, take in what has arrived and
    /// pass each event to `on_event`, then send the acknowledgements that caused.
    pub fn poll<const I: usize, const B: usize>(
        &mut self,
        client: &mut Client<'_, I, B>,
        now: Instant,
        mut on_event: impl FnMut(&mut Client<'_, I, B>, &ClientEvent<'_>),
    ) -> Result<(), LinkError> {
        self.flush(client, now)?;
        if client.poll_timeout().is_some_and(|t| now >= t) {
            client.handle_timeout(now)?;
            self.flush(client, now)?;
        }
        while self.rx_len < RX && self.io.read_ready().map_err(io_error)? {
            let free = self.rx.get_mut(self.rx_len..).unwrap_or(&mut []);
            self.rx_len += self.io.read(free).map_err(io_error)?;
        }
        loop {
            let received = match client.handle_bytes(now, self.rx.get(..self.rx_len).unwrap_or(&[]))
            {
                Ok(received) => received,
                Err(ClientError::BufferFull) => {
                    self.flush(client, now)?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if received.needs_more() {
                break;
            }
            let consumed = received.consumed.min(self.rx_len);
            // Lent, not moved: a 5.0 event is large, and each move is a copy on the stack.
            if let Some(event) = &received.event {
                on_event(client, event);
            }
            // A byte at a time: `copy_within` would link `memmove` (1.5 KB of flash).
            for i in consumed..self.rx_len {
                if let Some(&byte) = self.rx.get(i) {
                    if let Some(dst) = self.rx.get_mut(i - consumed) {
                        *dst = byte;
                    }
                }
            }
            self.rx_len -= consumed;
            self.flush(client, now)?;
        }
        while let Some(event) = client.poll_event() {
            on_event(client, &event);
        }
        self.flush(client, now)
    }

    /// The transport, for a reset or a reconnection.
    pub fn io(&mut self) -> &mut T {
        &mut self.io
    }
}

fn io_error(_: impl embedded_io::Error) -> LinkError {
    LinkError::Io
}
