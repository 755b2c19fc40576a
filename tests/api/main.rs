//! End-to-end tests: the real server on 127.0.0.1:0, called through the
//! generated clients.

mod abuse;
mod activity;
mod architecture;
mod auth;
mod backup;
mod cdnow;
mod consistency;
mod customer_segments;
mod customers;
mod docs;
mod errors;
mod fuzz;
mod health;
mod image;
mod import;
mod importer;
mod malformed;
mod metrics;
mod paging;
mod personas;
mod predictions;
mod saved_segments;
mod segments;
mod support;
mod tls;
mod upgrade;
mod watch;
mod watch_cli;
mod watch_exact;
mod watch_flow;
mod watch_restart;

/// The binary's allocator, so that the memory the tests measure is the
/// memory a deployed server would use.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
