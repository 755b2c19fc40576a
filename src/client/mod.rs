//! Client-side commands of the binary, which talk to a running server over
//! its public API: `healthcheck` and `import`.

pub mod healthcheck;
pub mod import;
mod rows;
