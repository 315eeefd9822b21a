//! The footprint job with minimq (MQTT 5.0): connect, subscribe at QoS 1, publish at QoS 1,
//! receive the message back and its PUBACK, disconnect.
#![no_std]
#![no_main]

use core::task::Waker;

use cortex_m_rt::entry;
use minimq::{Buffers, ConfigBuilder, Publication, QoS, Session, SubscriptionOptions, TopicFilter};
use petrel_firmware::clock;
use petrel_footprint::{block_on, AsyncUart};

/// 1 KiB packet buffers: receive, and transmit (which also keeps QoS 1 packets for replay).
const BUF: usize = 1024;

#[entry]
fn main() -> ! {
    petrel_footprint::start();
    let mut rx = [0u8; BUF];
    let mut tx = [0u8; BUF];
    let ok = block_on(job(&mut rx, &mut tx));
    petrel_footprint::finish(ok)
}

async fn job(rx: &mut [u8], tx: &mut [u8]) -> bool {
    let Ok(config) = ConfigBuilder::new(Buffers::new(rx, tx)).client_id("fp-minimq") else {
        return false;
    };
    let mut session = Session::new(config);
    let Ok(mut conn) = session.connect(AsyncUart(petrel_footprint::uart())).await else {
        return false;
    };
    let topic = TopicFilter::new("fp/minimq")
        .options(SubscriptionOptions::default().maximum_qos(QoS::AtLeastOnce));
    let Ok(sub) = conn.subscribe(&[topic], &[]).await else {
        return false;
    };
    while conn.is_pending(&sub) {
        if conn.poll().await.is_err() {
            return false;
        }
    }
    let publication = Publication::bytes("fp/minimq", b"hello").qos(QoS::AtLeastOnce);
    let Ok(Some(op)) = conn.publish(publication).await else {
        return false;
    };
    let mut received = false;
    while !received || conn.is_pending(&op) {
        match conn.poll().await {
            Ok(Some(message)) => received |= message.payload() == b"hello",
            Ok(None) => {}
            Err(_) => return false,
        }
    }
    conn.disconnect().await.is_ok()
}

/// embassy-time's clock (1 MHz ticks), which minimq reads, from the same timer as the other
/// programs; wake-ups need no scheduling since `block_on` polls continuously.
struct TimeDriver;

impl embassy_time_driver::Driver for TimeDriver {
    fn now(&self) -> u64 {
        clock::now().as_micros()
    }

    fn schedule_wake(&self, _at: u64, _waker: &Waker) {}
}

embassy_time_driver::time_driver_impl!(static DRIVER: TimeDriver = TimeDriver);
