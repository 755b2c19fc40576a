//! The `segmentd` binary; see `segmentd --help`.

fn main() -> std::process::ExitCode {
    segmentd::cli::main()
}
