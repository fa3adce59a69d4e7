//! The sandbox's clocks. A plugin must give the same output when its input
//! is replayed (after a crash, on a rebuild, on another host), and no host
//! call may hold a thread past the call's deadline, so time inside the
//! sandbox is the event time, and it does not pass during a call:
//!
//! - `wasi:clocks/wall-clock.now` is the event time of the call: the
//!   newest record timestamp of the batch (enricher, projection), the
//!   command record's timestamp (command handler). `init` sees the time of
//!   the call it runs for; a query the time of the call before (0 at first).
//! - `monotonic-clock.now` is that time in nanoseconds, never going back
//!   within an instance.
//! - `subscribe-duration` / `subscribe-instant` (what `sleep` waits on) are
//!   ready at once: a sleeping plugin does not sleep, and a plugin waiting
//!   for time to pass spins until the call's deadline stops it.
//!
//! These replace WASI's own clock interfaces in the linker.

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::clocks::{monotonic_clock, wall_clock};
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};

use super::sandbox::StoreState;

/// The time a plugin instance sees.
#[derive(Debug, Default)]
pub(crate) struct EventClock {
    /// ms since the Unix epoch.
    event_time_ms: i64,
    /// The last monotonic reading given out.
    monotonic_ns: u64,
}

impl EventClock {
    /// Calls from now on run at `event_time_ms`.
    pub(crate) fn set(&mut self, event_time_ms: i64) {
        self.event_time_ms = event_time_ms;
    }

    fn wall(&self) -> wall_clock::Datetime {
        let ms = self.event_time_ms.max(0) as u64;
        wall_clock::Datetime {
            seconds: ms / 1000,
            nanoseconds: (ms % 1000) as u32 * 1_000_000,
        }
    }

    fn monotonic(&mut self) -> u64 {
        let ns = (self.event_time_ms.max(0) as u64).saturating_mul(1_000_000);
        self.monotonic_ns = self.monotonic_ns.max(ns);
        self.monotonic_ns
    }
}

/// What the clock imports reach in the store.
pub(crate) struct ClockView<'a> {
    pub clock: &'a mut EventClock,
    pub table: &'a mut ResourceTable,
}

struct SandboxClocks;

impl HasData for SandboxClocks {
    type Data<'a> = ClockView<'a>;
}

/// A wait that is over as soon as it starts.
struct Elapsed;

#[wasmtime_wasi::async_trait]
impl Pollable for Elapsed {
    async fn ready(&mut self) {}
}

impl ClockView<'_> {
    fn elapsed(&mut self) -> wasmtime::Result<Resource<DynPollable>> {
        let elapsed = self.table.push(Elapsed)?;
        subscribe(self.table, elapsed)
    }
}

impl wall_clock::Host for ClockView<'_> {
    fn now(&mut self) -> wasmtime::Result<wall_clock::Datetime> {
        Ok(self.clock.wall())
    }

    fn resolution(&mut self) -> wasmtime::Result<wall_clock::Datetime> {
        Ok(wall_clock::Datetime {
            seconds: 0,
            nanoseconds: 1_000_000,
        })
    }
}

impl monotonic_clock::Host for ClockView<'_> {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        Ok(self.clock.monotonic())
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        Ok(1_000_000)
    }

    fn subscribe_instant(
        &mut self,
        _when: monotonic_clock::Instant,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        self.elapsed()
    }

    fn subscribe_duration(
        &mut self,
        _duration: monotonic_clock::Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        self.elapsed()
    }
}

/// Put the event clocks in place of WASI's (call after WASI is linked).
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    wall_clock::add_to_linker::<StoreState, SandboxClocks>(linker, StoreState::clocks)?;
    monotonic_clock::add_to_linker::<StoreState, SandboxClocks>(linker, StoreState::clocks)?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_the_event_time_and_never_goes_back() {
        let mut clock = EventClock::default();
        clock.set(1_700_000_000_123);
        let wall = clock.wall();
        assert_eq!(
            (wall.seconds, wall.nanoseconds),
            (1_700_000_000, 123_000_000)
        );
        assert_eq!(clock.monotonic(), 1_700_000_000_123_000_000);
        clock.set(5);
        assert_eq!(clock.monotonic(), 1_700_000_000_123_000_000, "monotonic");
        assert_eq!(clock.wall().seconds, 0);
        clock.set(-1);
        assert_eq!(
            clock.wall().seconds,
            0,
            "before the epoch reads as the epoch"
        );
    }
}
