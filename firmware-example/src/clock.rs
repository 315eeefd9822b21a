//! A monotonic clock from the CMSDK APB timer TIMER0 (0x4000_0000), counting down from
//! `u32::MAX` at the 25 MHz peripheral clock.
//!
//! The 32-bit counter wraps every 171 s; [`now`] extends it to 64 bits, so it must be read
//! at least that often (the demo reads it on every poll). A hardware timer rather than a
//! SysTick interrupt count: under QEMU, millisecond SysTick interrupts arrive late and such
//! a clock falls seconds behind the broker's. SysTick only wakes the core from [`idle`]
//! every millisecond, so a polling loop can sleep instead of spinning.

use core::cell::Cell;
use core::ptr::{read_volatile, write_volatile};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::exception;
use critical_section::Mutex;
use petrel_state::Instant;

/// TIMER0 of mps2-an385/an386.
const TIMER0: usize = 0x4000_0000;
const CTRL: usize = 0x00;
const VALUE: usize = 0x04;
const RELOAD: usize = 0x08;
const CTRL_ENABLE: u32 = 1;

/// The timer's input clock (the mps2 peripheral clock, also the core clock).
const TICKS_PER_MICRO: u32 = 25;
const CORE_HZ: u32 = 25_000_000;

/// The last counter value read, the microseconds counted up to it, and the ticks since the
/// last whole microsecond.
static STATE: Mutex<Cell<(u32, u64, u32)>> = Mutex::new(Cell::new((u32::MAX, 0, 0)));

/// Starts TIMER0 free-running from `u32::MAX`, and SysTick as a 1 kHz wake-up.
pub fn start(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CORE_HZ / 1000 - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
    // SAFETY: TIMER0's registers on this board; only this module touches them.
    unsafe {
        write_volatile((TIMER0 + RELOAD) as *mut u32, u32::MAX);
        write_volatile((TIMER0 + VALUE) as *mut u32, u32::MAX);
        write_volatile((TIMER0 + CTRL) as *mut u32, CTRL_ENABLE);
    }
}

/// The current time since [`start`], as the client sees it.
pub fn now() -> Instant {
    // SAFETY: as in `start`; reading VALUE has no side effect.
    let value = unsafe { read_volatile((TIMER0 + VALUE) as *const u32) };
    let micros = critical_section::with(|cs| {
        let state = STATE.borrow(cs);
        let (last, micros, spare) = state.get();
        // A down-counter: the ticks elapsed are how far it fell, modulo 2^32. They become
        // microseconds by 32-bit division, which the Cortex-M4 does in one instruction; a
        // 64-bit division would link a 0.9 KB library routine.
        let elapsed = last.wrapping_sub(value);
        let mut micros = micros + u64::from(elapsed / TICKS_PER_MICRO);
        let mut spare = spare + elapsed % TICKS_PER_MICRO;
        if spare >= TICKS_PER_MICRO {
            spare -= TICKS_PER_MICRO;
            micros += 1;
        }
        state.set((value, micros, spare));
        micros
    });
    Instant::from_micros(micros)
}

/// Sleeps until the next SysTick (at most a millisecond): UART input raises no interrupt,
/// so a loop that idles here finds it within a millisecond.
pub fn idle() {
    cortex_m::asm::wfi();
}

/// Sleeps until `deadline`.
pub fn wait_until(deadline: Instant) {
    while now() < deadline {
        idle();
    }
}

#[exception]
fn SysTick() {
    // Nothing to do: the interrupt only ends a `wfi`.
}
