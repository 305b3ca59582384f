//! Prompt exit on SIGTERM/SIGINT. As PID 1 in a container a process gets no default action for
//! SIGTERM, so without a handler `docker stop` would wait out its whole grace period. std has no
//! signal API; libc is linked anyway, so we declare `signal(2)` and `_exit(2)` ourselves.

use std::os::raw::c_int;

const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;

unsafe extern "C" {
    fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
    fn _exit(status: c_int) -> !;
}

extern "C" fn on_terminate(_signum: c_int) {
    // Only async-signal-safe calls here: `_exit` skips atexit handlers and stdio flushing.
    unsafe { _exit(0) }
}

/// Makes SIGTERM and SIGINT end the process at once with exit code 0.
pub fn exit_on_terminate() {
    unsafe {
        signal(SIGTERM, on_terminate);
        signal(SIGINT, on_terminate);
    }
}
