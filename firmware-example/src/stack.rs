//! Peak stack use by stack painting: fill the unused stack with a pattern, run, and find the
//! deepest word the pattern no longer holds.

use core::ptr::{addr_of, read_volatile, write_volatile};

/// The pattern painted into unused stack.
const PAINT: u32 = 0x5AC7_C0DE;
/// How far below the stack top painting reaches (the stack of a program measured this way
/// must stay within it).
const WINDOW: usize = 32 * 1024;
/// Words just below the current stack pointer left alone: `paint`'s own frame and calls.
const MARGIN: usize = 256;

extern "C" {
    /// The initial stack pointer (top of RAM), from cortex-m-rt's linker script.
    static _stack_start: u32;
}

fn stack_top() -> usize {
    // Only the address of the linker symbol is taken, never its value.
    addr_of!(_stack_start) as usize
}

/// Paints the stack below the current frame. Call it first thing in `main`.
#[inline(never)]
pub fn paint() {
    let sp = cortex_m::register::msp::read() as usize;
    let bottom = stack_top() - WINDOW;
    let mut addr = bottom;
    while addr < sp - MARGIN {
        // SAFETY: [bottom, sp - MARGIN) is RAM below every live frame.
        unsafe { write_volatile(addr as *mut u32, PAINT) };
        addr += 4;
    }
}

/// The deepest the stack has reached since [`paint`], in bytes below the stack top.
#[inline(never)]
pub fn peak() -> usize {
    let bottom = stack_top() - WINDOW;
    let mut addr = bottom;
    // SAFETY: reads within the painted window, which is RAM.
    while addr < stack_top() && unsafe { read_volatile(addr as *const u32) } == PAINT {
        addr += 4;
    }
    stack_top() - addr
}

/// Writes `label`, then `value` in decimal and a newline, to the host's stdout (semihosting),
/// without `core::fmt`.
pub fn report(label: &str, value: usize) {
    let mut digits = [0u8; 21];
    let mut i = digits.len() - 1;
    digits[i] = b'\n';
    let mut v = value;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if let Ok(mut out) = cortex_m_semihosting::hio::hstdout() {
        let _ = out.write_all(label.as_bytes());
        let _ = out.write_all(&digits[i..]);
    }
}
