//! Crash points for the reliability tests: `GITOPS_TEST_FAILPOINT=<name>` makes the process SIGKILL
//! itself at that point, exactly where a power cut or an OOM kill could land.

use std::sync::OnceLock;

/// Die here, as if by `kill -9`, when the test asked for this point.
pub fn hit(name: &str) {
    static WANTED: OnceLock<Option<String>> = OnceLock::new();
    if WANTED.get_or_init(|| std::env::var("GITOPS_TEST_FAILPOINT").ok()).as_deref() == Some(name) {
        // SAFETY: raising a signal on ourselves has no memory-safety preconditions.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
