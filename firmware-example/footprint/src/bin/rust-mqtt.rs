//! The footprint job with rust-mqtt (MQTT 5.0): connect, subscribe at QoS 1, publish at QoS 1,
//! receive the message back and its PUBACK, disconnect.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use petrel_footprint::{block_on, AsyncUart};
use rust_mqtt::buffer::BumpBuffer;
use rust_mqtt::client::event::Event;
use rust_mqtt::client::options::{
    ConnectOptions, DisconnectOptions, PublicationOptions, SubscriptionOptions, TopicReference,
};
use rust_mqtt::client::Client;
use rust_mqtt::types::{MqttString, TopicFilter, TopicName};
use rust_mqtt::Bytes;

/// A 1 KiB buffer for received packets (rust-mqtt writes outgoing packets straight to the
/// transport).
const BUF: usize = 1024;

#[entry]
fn main() -> ! {
    petrel_footprint::start();
    let mut memory = [0u8; BUF];
    let ok = block_on(job(&mut memory));
    petrel_footprint::finish(ok)
}

async fn job(memory: &mut [u8]) -> bool {
    let mut buffer = BumpBuffer::new(memory);
    // One subscription, one publish in flight each way, no properties or topic aliases.
    let mut client = Client::<'_, '_, _, _, 1, 1, 1, 0, 0, 0, 0>::new(&mut buffer);
    let Ok(id) = MqttString::from_str("fp-rust-mqtt") else {
        return false;
    };
    let options = ConnectOptions::new().clean_start();
    if client
        .connect(AsyncUart(petrel_footprint::uart()), &options, Some(id))
        .await
        .is_err()
    {
        return false;
    }
    let Ok(topic) = MqttString::from_str("fp/rust-mqtt") else {
        return false;
    };
    let (Some(filter), Some(name)) = (
        TopicFilter::new(topic.as_borrowed()),
        TopicName::new(topic.as_borrowed()),
    ) else {
        return false;
    };
    let subscription = SubscriptionOptions::new().at_least_once();
    if client.subscribe(filter, &subscription).await.is_err() {
        return false;
    }
    let (mut subscribed, mut acked, mut received) = (false, false, false);
    while !subscribed {
        match client.poll().await {
            Ok(Event::Suback(_)) => subscribed = true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    let publication = PublicationOptions::new(TopicReference::Name(name)).at_least_once();
    if client
        .publish(&publication, Bytes::from(&b"hello"[..]))
        .await
        .is_err()
    {
        return false;
    }
    while !(acked && received) {
        match client.poll().await {
            Ok(Event::PublishAcknowledged(_)) => acked = true,
            Ok(Event::Publish(publish)) => received |= publish.message.as_bytes() == b"hello",
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    let disconnected = client.disconnect(&DisconnectOptions::new()).await.is_ok();
    disconnected
}
