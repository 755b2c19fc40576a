//! Client-side commands of the binary, which talk to a running server over
//! its public API: `healthcheck`, `import`, `persona`, `watch` and `backup`.

pub mod backup;
pub mod channel;
pub mod healthcheck;
pub mod import;
pub mod persona;
mod rows;
pub mod watch;
