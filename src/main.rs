//! The `segmentd` binary; see `segmentd --help`.

/// mimalloc: the index is built from millions of small arrays on two
/// threads at start-up, where the system allocator's locking costs more
/// than the work itself.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Transparent huge pages stay off unless `MIMALLOC_ALLOW_THP` asks
    // for them: a partly filled 2 MiB page counts whole in the resident
    // set. Off, the flag holds for the whole process, whatever the kernel's
    // default and the allocator's advice.
    if !thp_allowed(std::env::var("MIMALLOC_ALLOW_THP").ok().as_deref()) {
        // Only a kernel without the setting refuses it; nothing to do then.
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
    segmentd::cli::main()
}

/// Whether `MIMALLOC_ALLOW_THP` allows huge pages, read as mimalloc reads
/// its boolean options.
fn thp_allowed(value: Option<&str>) -> bool {
    value.is_some_and(|value| {
        ["1", "true", "yes", "on"]
            .iter()
            .any(|yes| value.trim().eq_ignore_ascii_case(yes))
    })
}

#[cfg(test)]
mod tests {
    use super::thp_allowed;

    #[test]
    fn huge_pages_only_when_asked_for() {
        for value in ["1", "true", "YES", " on "] {
            assert!(thp_allowed(Some(value)), "{value}");
        }
        for value in [None, Some("0"), Some("false"), Some(""), Some("2")] {
            assert!(!thp_allowed(value), "{value:?}");
        }
    }
}
