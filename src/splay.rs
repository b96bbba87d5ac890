//! Splay (`--splay DURATION`): a random sleep before fetching, so a fleet on cron does not hit the Git server
//! in the same second. (Under systemd the timer's `RandomizedDelaySec=` does the same.)

use std::io::Read;
use std::time::Duration;

/// Sleep a random time between zero and `max`, and say so.
pub fn sleep(max: Duration) {
    let delay = scale(random_u64(), max);
    log::info!("sleeping {delay:.1?} before fetching (--splay {max:?})");
    std::thread::sleep(delay);
}

/// Map a uniformly random `u64` onto `0..=max`, to the millisecond.
pub fn scale(random: u64, max: Duration) -> Duration {
    let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(random % max_ms.saturating_add(1))
}

/// 8 bytes from the kernel's random source; a splay needs no more, and no crate.
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)) {
        Ok(()) => u64::from_le_bytes(bytes),
        // Without /dev/urandom, hosts still differ in pid and start time, which is all a splay needs.
        Err(_) => {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ nanos.as_nanos() as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_the_bound() {
        let max = Duration::from_secs(90);
        assert_eq!(scale(0, max), Duration::ZERO);
        assert_eq!(scale(90_000, max), max);
        assert_eq!(scale(90_001, max), Duration::ZERO);
        assert!(scale(u64::MAX, max) <= max);
        assert_eq!(scale(u64::MAX, Duration::ZERO), Duration::ZERO);
        let draws: Vec<Duration> = (0..32).map(|_| scale(random_u64(), max)).collect();
        assert!(draws.iter().all(|d| *d <= max));
        assert!(draws.windows(2).any(|w| w[0] != w[1]), "32 equal draws: not random");
    }
}
