//! An open-loop HTTP load generator that does not hide overload.
//!
//! Most load generators are closed-loop: N clients each send a request, wait
//! for the answer, send the next. When the server slows down they slow down
//! with it, so the overload they were meant to measure never happens and the
//! latencies they report leave out the time requests *would* have waited
//! (coordinated omission). Real users do not wait for each other.
//!
//! This one is open-loop. Arrival `i` of a phase at `rate` req/s is due at
//! `phase start + i / rate`, fixed in advance; it is sent at that instant
//! whatever is outstanding. If the generator itself falls behind, the backlog
//! is sent at once (still open loop) and counted as `late`. Latency is
//! measured from the *scheduled* arrival, and each request's client timeout
//! runs from there too: a user who arrived at `t` gives up at
//! `t + client_timeout`. So the run ends at most one client timeout after the
//! schedule, and the number of requests is exactly what the schedule says.
//!
//! Results are bucketed by the second of the scheduled arrival, so "second 5"
//! means "what happened to the users who arrived during second 5".
//!
//! # Traffic groups
//!
//! [`LoadConfig::mix`] splits the arrivals into named [`Group`]s by weight
//! (30% interactive / 70% batch; one hot tenant and twenty quiet ones), each
//! with its own headers, so a gate's classes and tenant caps see realistic
//! traffic. The split is deterministic: smooth weighted round-robin (the
//! algorithm nginx uses for upstream weights) gives every group its share to
//! within one request at every point of the run, with no randomness to make
//! two runs differ. Everything is recorded per group as well as overall:
//! [`LoadResult::group`].
//!
//! # Client retries
//!
//! [`LoadConfig::retry`] makes users retry when told 503 or 429, as many
//! real clients do, which is how an overloaded service gets a *retry storm*:
//! every refusal comes back as more load. A retry is another HTTP request for
//! the same user. The user's outcome is that of its last attempt, its latency
//! still runs from the original scheduled arrival, and it still gives up at
//! `arrival + client_timeout`: no retry is sent past that deadline, so the run
//! still ends by itself. Per second, rows count first attempts (`sent`)
//! apart from `retries`, and `on_wire` counts everything actually put on the
//! wire, so a storm shows as `on_wire` far above `sent`.
//!
//! # Closed loop and headroom
//!
//! Open loop is right for overload; for "how fast can it go at all" (the
//! overhead of a proxy against a fast backend) [`run_closed_loop`] keeps N
//! connections busy back to back. [`measure_headroom`] checks that the
//! generator itself is not the bottleneck at a given rate.

mod closed_loop;
mod headroom;
mod mix;
mod open_loop;
mod progress;
mod results;
mod retry;
mod schedule;
#[cfg(test)]
mod tests;

pub use closed_loop::{run_closed_loop, ClosedLoopResult, ClosedLoopSecond};
pub use headroom::{measure_headroom, Headroom};
pub use mix::{Group, HeaderFn};
pub use open_loop::{run, LoadConfig, LATE_AFTER};
pub use progress::progress_bar;
pub use results::{GroupResult, LatencyMs, LoadResult, SecondRow, Summary};
pub use retry::{retry_hint, RetryPolicy, DEFAULT_RETRY_WAIT};
pub use schedule::{parse_schedule, Phase, Schedule, ScheduleError};
