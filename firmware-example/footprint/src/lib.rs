//! What the footprint programs share, so that they differ only in the MQTT client: the UART,
//! the clock and the panic handler of `petrel-firmware`, an async view of the UART for the
//! async clients, a polling `block_on`, and the end of the run (report peak stack, exit).
#![no_std]

use core::convert::Infallible;
use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use embedded_io::{Read as _, ReadReady as _, Write as _};
use petrel_firmware::uart::{Uart, UART0};
use petrel_firmware::{clock, exit, stack};

/// The broker connection every program uses: UART0, which QEMU connects to the broker.
pub fn uart() -> Uart {
    // SAFETY: UART0 is used by nothing else in these programs.
    unsafe { Uart::new(UART0) }
}

/// Paints the stack and starts the clock; call it first in `main`.
pub fn start() {
    stack::paint();
    if let Some(peripherals) = cortex_m::Peripherals::take() {
        clock::start(peripherals.SYST);
    }
}

/// Reports the peak stack and exits: status 0 if the job succeeded, 1 if not.
pub fn finish(ok: bool) -> ! {
    stack::report("peak stack bytes: ", stack::peak());
    exit::exit(if ok { 0 } else { 1 })
}

/// Runs a future to completion by polling it in a loop (no interrupt-driven wake-ups: the
/// UART raises none), sleeping a SysTick between polls.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        clock::idle();
    }
}

/// The UART as an `embedded-io-async` stream: a read with nothing received is pending.
pub struct AsyncUart(pub Uart);

impl embedded_io_async::ErrorType for AsyncUart {
    type Error = Infallible;
}

impl embedded_io_async::Read for AsyncUart {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        core::future::poll_fn(|_| match self.0.read_ready() {
            Ok(true) => Poll::Ready(()),
            _ => Poll::Pending,
        })
        .await;
        self.0.read(buf)
    }
}

impl embedded_io_async::Write for AsyncUart {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        self.0.write(buf)
    }

    async fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}
