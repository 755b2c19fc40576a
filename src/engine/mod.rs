//! The engine: the domain operations the RPCs call. It owns the store and
//! the in-memory feature index and keeps them in step; it knows neither
//! gRPC nor sled.
//!
//! # Layout
//!
//! - `handle`: the [`Engine`] handle, what its operations share, and the
//!   paths work runs by.
//! - `customers`, `activity`, `segments`, `personas`: the operations.
//! - [`index`]: the in-memory feature index, in step with the store.
//! - `features`, `frame`, `rfm`: one customer's features, and everyone's
//!   as of a time, over the index.
//! - `select`, `bits`: compiled rules evaluated a column at a time into
//!   bit sets.
//!
//! # Where work runs
//!
//! Reads of one record (a customer, a segment, one customer's features or
//! persona) run inline on the async worker: they take microseconds. Every
//! write and every scan goes to the blocking pool, a write through
//! [`Engine::write`] and a scan (anything whose cost grows with the data:
//! selections, breakdowns, previews, member pages, exports, persona
//! breakdowns, ranges of the store, a page of a customer's history) through
//! [`Engine::scan`]. A read of one customer that would have to scan, because
//! the RFM bounds must be found again from the columns or the evaluation
//! time is in the past, is a scan ([`Engine::read_customer`]).
//!
//! Writes are serialised once, by the engine's writer lock, which `write`
//! holds across the store write and the index update so that the two apply
//! in the same order; the store does not serialise its writers itself. A
//! write is acknowledged only once [`Engine::durable`] resolves (group
//! commit); bulk imports apply first and wait for it per request.

mod activity;
mod bits;
mod customers;
mod features;
mod frame;
mod handle;
pub mod index;
mod personas;
mod rfm;
mod segments;
mod select;

pub use activity::{EventPage, RecordCounts};
pub use customers::{CustomerUpdate, ImportCounts, Page};
pub use features::CustomerFeatures;
pub use handle::{Engine, EngineSettings};
pub use personas::{
    Assignment, CompiledCatalog, ConditionResult, NextStep, PersonaCounts, Rejected,
};
pub use segments::{compile_filter, Breakdown, Group, MemberPage, Preview, MAX_DIMENSIONS};
