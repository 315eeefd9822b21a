//! The footprint job with Petrel (MQTT 5.0): connect, subscribe at QoS 1, publish at QoS 1,
//! receive the message back and its PUBACK, disconnect.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use petrel_codec::{ProtocolVersion, QoS, SubscribeFilter, SubscriptionOptions};
use petrel_firmware::clock::now;
use petrel_firmware::link::Link;
use petrel_state::client::{Client, ClientEvent, ClientOptions, ConnectionState};

/// 1 KiB packet buffers: the link's receive buffer, and the client's one buffer for the
/// retransmission store and the transmit queue.
const BUF: usize = 1024;

#[entry]
fn main() -> ! {
    petrel_footprint::start();
    let mut options = ClientOptions::new(ProtocolVersion::V5, "fp-petrel");
    options.max_packet_size = BUF as u32;
    let mut client: Client<'_, 2, BUF> = Client::new(options);
    let mut link: Link<_, BUF> = Link::new(petrel_footprint::uart());
    let ok = job(&mut client, &mut link);
    petrel_footprint::finish(ok)
}

fn job(client: &mut Client<'_, 2, BUF>, link: &mut Link<petrel_firmware::uart::Uart, BUF>) -> bool {
    let (mut connected, mut subscribed, mut acked, mut received) = (false, false, false, false);
    if client.connect(now()).is_err() {
        return false;
    }
    let mut step = 0;
    loop {
        let polled = link.poll(client, now(), |_, event| match event {
            ClientEvent::Connected { .. } => connected = true,
            ClientEvent::Subscribed { .. } => subscribed = true,
            ClientEvent::Published { .. } => acked = true,
            ClientEvent::Message(publish) => received = publish.payload == b"hello",
            _ => {}
        });
        if polled.is_err() || client.state() == ConnectionState::Closing {
            return false;
        }
        if step == 0 && connected {
            let filters = [SubscribeFilter {
                filter: "fp/petrel",
                options: SubscriptionOptions::qos(QoS::AtLeastOnce),
            }];
            if client.subscribe(now(), &filters).is_err() {
                return false;
            }
            step = 1;
        } else if step == 1 && subscribed {
            if client
                .publish(now(), "fp/petrel", b"hello", QoS::AtLeastOnce, false)
                .is_err()
            {
                return false;
            }
            step = 2;
        } else if step == 2 && acked && received {
            return client.disconnect(now()).is_ok() && link.flush(client, now()).is_ok();
        }
        petrel_firmware::clock::idle();
    }
}
