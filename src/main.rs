//! The `segmentd` binary; see `segmentd --help`.

/// mimalloc: the index is built from millions of small arrays on two
/// threads at start-up, where the system allocator's locking costs more
/// than the work itself. Built without transparent huge pages (`no_thp`),
/// which would count partly filled 2 MiB pages whole in the resident set;
/// `MIMALLOC_ALLOW_THP=1` turns them back on.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    segmentd::cli::main()
}
