//! The one clock: wall time for what leaves the process (traffic minutes,
//! staleness), monotonic time for ejections; and a coarse one for what a
//! second's precision serves (idle connections, traffic counts), which a
//! worker thread refreshes every second instead of reading the clock per
//! request.

use std::cell::Cell;
use std::sync::LazyLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Unix milliseconds.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Milliseconds since the process started (monotonic).
pub fn mono_ms() -> u64 {
    u64::try_from(START.elapsed().as_millis()).unwrap_or(u64::MAX)
}

thread_local! {
    /// This thread's coarse clock: (monotonic, unix ms) at its last tick.
    static COARSE: Cell<Option<(Instant, i64)>> = const { Cell::new(None) };
}

/// Refreshes this thread's coarse clock (each worker does every second).
pub fn tick() {
    COARSE.set(Some((Instant::now(), wall_ms())));
}

/// Now, to within about a second on a thread that ticks (exact on others).
pub fn coarse_instant() -> Instant {
    COARSE.get().map_or_else(Instant::now, |(i, _)| i)
}

/// Unix milliseconds, to within about a second on a thread that ticks
/// (exact on others).
pub fn coarse_wall_ms() -> i64 {
    COARSE.get().map_or_else(wall_ms, |(_, w)| w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clock_holds_between_ticks() {
        std::thread::spawn(|| {
            let before = wall_ms();
            assert!(coarse_wall_ms() >= before, "exact before the first tick");
            tick();
            let (i, w) = (coarse_instant(), coarse_wall_ms());
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert_eq!((coarse_instant(), coarse_wall_ms()), (i, w));
            tick();
            assert!(coarse_instant() > i);
            assert!(coarse_wall_ms() >= w);
        })
        .join()
        .unwrap();
    }
}
