//! The petrel-state client behind one trait, so that one driver serves clients of every
//! capacity (the capacities are const generics, picked per role at run time).

use petrel_codec::SubscribeFilter;
use petrel_state::client::{
    Client, ClientError, ClientEvent, ClientOptions, ConnectionState, PacketId, QoS, Received,
};
use petrel_state::Instant;

/// The operations of [`Client`] that the driver uses.
pub(crate) trait Session: Send {
    fn connect(&mut self, now: Instant) -> Result<(), ClientError>;
    fn publish(
        &mut self,
        now: Instant,
        topic: &str,
        payload: &[u8],
        qos: QoS,
    ) -> Result<Option<PacketId>, ClientError>;
    fn subscribe(
        &mut self,
        now: Instant,
        filters: &[SubscribeFilter<'_>],
    ) -> Result<PacketId, ClientError>;
    fn disconnect(&mut self, now: Instant) -> Result<(), ClientError>;
    fn handle_bytes<'b>(
        &mut self,
        now: Instant,
        input: &'b [u8],
    ) -> Result<Received<'b>, ClientError>;
    fn handle_timeout(&mut self, now: Instant) -> Result<(), ClientError>;
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> usize;
    fn poll_event(&mut self) -> Option<ClientEvent<'static>>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn state(&self) -> ConnectionState;
    fn inflight(&self) -> usize;
    fn pending_transmit(&self) -> usize;
}

impl<const I: usize, const B: usize> Session for Client<'_, I, B> {
    fn connect(&mut self, now: Instant) -> Result<(), ClientError> {
        Client::connect(self, now)
    }
    fn publish(
        &mut self,
        now: Instant,
        topic: &str,
        payload: &[u8],
        qos: QoS,
    ) -> Result<Option<PacketId>, ClientError> {
        Client::publish(self, now, topic, payload, qos, false)
    }
    fn subscribe(
        &mut self,
        now: Instant,
        filters: &[SubscribeFilter<'_>],
    ) -> Result<PacketId, ClientError> {
        Client::subscribe(self, now, filters)
    }
    fn disconnect(&mut self, now: Instant) -> Result<(), ClientError> {
        Client::disconnect(self, now)
    }
    fn handle_bytes<'b>(
        &mut self,
        now: Instant,
        input: &'b [u8],
    ) -> Result<Received<'b>, ClientError> {
        Client::handle_bytes(self, now, input)
    }
    fn handle_timeout(&mut self, now: Instant) -> Result<(), ClientError> {
        Client::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> usize {
        Client::poll_transmit(self, now, buf)
    }
    fn poll_event(&mut self) -> Option<ClientEvent<'static>> {
        Client::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Client::poll_timeout(self)
    }
    fn state(&self) -> ConnectionState {
        Client::state(self)
    }
    fn inflight(&self) -> usize {
        Client::inflight(self)
    }
    fn pending_transmit(&self) -> usize {
        Client::pending_transmit(self)
    }
}

/// Connections that only connect and hold (`conn`): a CONNECT, PINGREQs and a DISCONNECT.
/// Small, because `conn` opens thousands.
pub(crate) type IdleClient<'a> = Client<'a, 2, 1024>;

/// Subscribers: up to 1,024 inbound QoS 2 messages between PUBREC and PUBREL (a 3.1.1
/// broker is not bound by a receive maximum, and rumqttd's default window is 100), and a
/// buffer for a burst of acknowledgements. They never publish, so it stores nothing.
pub(crate) type SubClient<'a> = Client<'a, 1024, { 32 * 1024 }>;

/// Publishers of packets up to [`SMALL_PACKET`] bytes: the buffer holds a 1,024-message
/// window of them (each stored once, and sent from the store) and 64 KiB of queued QoS 0
/// publishes, several hundred small ones per write.
pub(crate) type SmallPubClient<'a> = Client<'a, 1024, { 2 * 1024 * 1024 + 64 * 1024 }>;

/// Publishers of packets up to [`MAX_PACKET`] bytes; the window is whatever of them 8 MiB
/// of the buffer holds (64 at the largest size), beside 256 KiB of queued QoS 0 publishes.
pub(crate) type LargePubClient<'a> = Client<'a, 1024, { 8 * 1024 * 1024 + 256 * 1024 }>;

/// The largest PUBLISH packet a [`SmallPubClient`] is used for.
pub(crate) const SMALL_PACKET: usize = 2 * 1024;

/// The largest PUBLISH packet the generator sends (payload limit: this minus the topic and
/// header, see `--size`).
pub(crate) const MAX_PACKET: usize = 128 * 1024;

/// Bytes of retransmission store of each publisher type.
pub(crate) const SMALL_STORE: usize = 2 * 1024 * 1024;
/// See [`SMALL_STORE`].
pub(crate) const LARGE_STORE: usize = 8 * 1024 * 1024;

/// Options for a client of the run.
pub(crate) fn options<'a>(
    version: petrel_codec::ProtocolVersion,
    client_id: &'a str,
    keep_alive: u16,
    username: Option<&'a str>,
    password: Option<&'a [u8]>,
) -> ClientOptions<'a> {
    let mut o = ClientOptions::new(version, client_id);
    o.keep_alive = keep_alive;
    o.username = username;
    o.password = password;
    o
}
