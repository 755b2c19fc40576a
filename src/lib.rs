//! segmentd: customer profiles and activity in an embedded sled store,
//! segmented into explainable marketing personas and served over gRPC.
//!
//! # Layout
//!
//! - [`cli`]: the command line (`serve`, `healthcheck`, `import`) and its flags.
//! - [`server`]: runs tonic with health, reflection and the API; opens the
//!   engine in the background and drains on shutdown.
//! - [`grpc`]: the only module that knows protobuf and tonic types:
//!   generated code, conversions, handlers, status mapping, RPC tracing.
//! - [`engine`]: the domain operations the handlers call.
//! - [`domain`]: customers, valid values and the error type; no I/O.
//! - [`store`]: the only module that knows sled: key layout, versioned
//!   codec, atomic writes and group commit.
//! - [`client`]: the commands that call a running server: a one-shot
//!   health Check, and the CSV / JSON Lines importer.
//! - [`telemetry`]: log setup.

pub mod cli;
pub mod client;
pub mod domain;
pub mod engine;
pub mod grpc;
pub mod server;
pub mod store;
pub mod telemetry;
