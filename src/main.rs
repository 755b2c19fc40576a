//! The `segmentd` binary; see `segmentd --help`.

/// mimalloc: the index is built from millions of small arrays on two
/// threads at start-up, where the system allocator's locking costs more
/// than the work itself.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    segmentd::cli::main()
}
