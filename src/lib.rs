//! segmentd: customer profiles and activity in an embedded sled store,
//! segmented into explainable marketing personas and served over gRPC.
//!
//! # Layout
//!
//! From the top floor down; a module uses only the floors below it.
//!
//! - [`cli`]: the command line (`serve`, `healthcheck`, `import`,
//!   `persona`, `backup`, `restore`) and its flags; the only module that
//!   knows clap.
//! - [`telemetry`]: log setup.
//! - [`server`]: runs tonic with health, reflection and the API; opens the
//!   engine in the background and drains on shutdown; serves Prometheus
//!   metrics.
//! - [`client`]: the commands that call a running server: a one-shot
//!   health Check, the CSV / JSON Lines importer, a persona explanation
//!   and an online backup into a file.
//! - [`grpc`]: generated code, conversions, handlers, status mapping, RPC
//!   tracing. With `server` and `client`, the only modules that know
//!   protobuf and tonic types.
//! - [`engine`]: the domain operations the handlers call; owns the store and
//!   the in-memory feature index and keeps them in step.
//! - [`log`]: the replicated log of cluster mode (NATS JetStream), and its
//!   snapshots; beside the store, on the same floor.
//! - [`store`]: the only module that knows sled: key layout, versioned
//!   codec, atomic writes, group commit, and backups (the tap on writes,
//!   the file format, the offline restore).
//! - [`domain`]: customers, activity, rules, personas, valid values and the
//!   error type; no I/O.
//!
//! The walls are checked by `tests/api/architecture.rs`: the domain and the
//! engine name neither tonic, prost, sled nor clap (the domain not tokio
//! either), the store neither tonic, prost nor clap, the log neither of those nor
//! sled, no module names a
//! floor above its own, and the modules of one floor import each other in
//! no circle.

pub mod cli;
pub mod client;
pub mod domain;
pub mod engine;
pub mod grpc;
pub mod log;
pub mod server;
pub mod store;
pub mod telemetry;
