//! Child processes that die with their parent, free ports, and readiness by condition.

use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`; gives up at the
/// deadline or as soon as `gave_up` says the server process is gone.
pub fn wait_for_port(port: u16, within: Duration, mut gave_up: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline && !gave_up() {
        if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
            .is_ok()
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// Makes the kernel send `signal` to the child when the thread that spawned it exits, so
/// servers never outlive a crashed or killed parent (a failed test run, a SIGKILLed `shop up`).
///
/// Spawn from a thread that lives as long as the servers should: the signal follows the
/// spawning *thread*, not the process.
#[allow(unsafe_code)]
pub fn die_with_parent(command: &mut Command, signal: i32) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl and getppid are async-signal-safe and touch no memory of the parent.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guarantee the test harness and `shop up` rely on: when the spawning thread ends
    /// (as it does when the process dies), the kernel kills the child.
    #[test]
    fn a_child_dies_with_the_thread_that_spawned_it() {
        let child = std::thread::spawn(|| {
            let mut command = Command::new("sleep");
            command.arg("300");
            die_with_parent(&mut command, libc::SIGKILL);
            command.spawn().expect("spawning sleep")
        })
        .join()
        .expect("spawner thread");
        let mut child = child;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(!status.success(), "sleep was killed, not finished");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the child outlived its spawning thread"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
