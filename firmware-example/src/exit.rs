//! Ends the program with a status code, through semihosting's `SYS_EXIT_EXTENDED`: QEMU
//! (`-semihosting-config enable=on`) exits with that code.

/// ADP_Stopped_ApplicationExit: a normal exit whose subcode is the status.
const APPLICATION_EXIT: usize = 0x20026;
/// SYS_EXIT_EXTENDED.
const SYS_EXIT_EXTENDED: usize = 0x20;

/// Exits with `status` (0 for success). Under a debugger without semihosting this traps;
/// on a board running on its own, it stops in a loop.
pub fn exit(status: u32) -> ! {
    let block = [APPLICATION_EXIT, status as usize];
    // SAFETY: the semihosting call reads two words from `block`, which outlives it.
    unsafe {
        cortex_m_semihosting::syscall(SYS_EXIT_EXTENDED, &block);
    }
    loop {
        cortex_m::asm::wfi();
    }
}

/// A panic handler that does not format the message (formatting pulls `core::fmt` into
/// flash); a panic exits with status 101.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    exit(101)
}
