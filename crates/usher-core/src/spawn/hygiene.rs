//! Process hygiene of spawned servers: the only place in usher-core that
//! calls into libc unchecked, kept to the few calls a supervisor needs.
//!
//! - each child leads its own process group (`process_group(0)`), so a
//!   stop signal reaches whatever it forked too, and a Ctrl-C at usher's
//!   terminal does not hit the children behind usher's back;
//! - each child is killed by the kernel if usher dies without stopping it
//!   (`PR_SET_PDEATHSIG` = SIGKILL, set between fork and exec): a SIGKILL
//!   of usher leaves no server behind. The signal fires when the thread
//!   that forked ends; the supervisor forks from its arbiter's thread,
//!   which lives as long as the broker;
//! - each child runs under the machine's transparent-huge-page policy, not
//!   usher's: the broker turns huge pages off for its own process
//!   (`PR_SET_THP_DISABLE`, `broker/huge_pages.rs`), a flag children
//!   inherit across exec;
//! - stopping a child signals its whole group.
#![allow(unsafe_code)]

use std::io;

use tokio::process::Command;

/// Makes `command` start its child in a process group of its own, killed
/// when usher dies.
pub fn confine(command: &mut Command) {
    command.process_group(0);
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe system calls (prctl, getppid, _exit); it
    // allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // A database or a JVM behind usher keeps the huge pages it asks
            // for: usher turned them off for its own latency only.
            if libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // usher died between fork and prctl: the signal will never
            // come, so the child must not run on alone.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Sends `signal` to the process group led by `pid`. `false` when no such
/// group is left (it exited and was reaped).
pub fn signal_group(pid: u32, signal: i32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    if pid <= 1 {
        // Never a group usher did not make: -1 and -0 mean "everyone" and
        // "usher's own group".
        return false;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe { libc::kill(-pid, signal) == 0 }
}

/// Whether any process of the group led by `pid` is still there.
pub fn group_alive(pid: u32) -> bool {
    signal_group(pid, 0)
}
