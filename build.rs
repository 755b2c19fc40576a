//! Generates the gRPC code and the reflection descriptor set from `proto/`,
//! with a vendored `protoc`, so that a build needs nothing beyond cargo.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::{env, fs};

const PROTOS: &[&str] = &[
    "proto/google/type/date.proto",
    "proto/segmentd/v1/customer.proto",
    "proto/segmentd/v1/customer_service.proto",
    "proto/segmentd/v1/activity.proto",
    "proto/segmentd/v1/activity_service.proto",
    "proto/segmentd/v1/features.proto",
    "proto/segmentd/v1/segmentation_service.proto",
    "proto/segmentd/v1/persona_service.proto",
    "proto/segmentd/v1/admin_service.proto",
    "proto/segmentd/v1/membership_service.proto",
    "proto/segmentd/v1/prediction_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!(
        "cargo:rustc-env=SEGMENTD_SOURCE_FINGERPRINT={:016x}",
        source_fingerprint(&[Path::new("src"), Path::new("Cargo.lock")])?
    );
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let mut config = prost_build::Config::new();
    // Ordered maps: deterministic encoding and output.
    config.btree_map(["."]);
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.protoc_arg(format!(
        "--proto_path={}",
        protoc_bin_vendored::include_path()?.display()
    ));

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("segmentd_descriptor.bin"))
        .compile_with_config(config, PROTOS, &["proto"])?;
    Ok(())
}

/// A hash of the path and contents of every file under `roots`: the
/// index's image is read only by a build of the same sources and
/// dependencies (see `src/engine/index/image.rs`).
fn source_fingerprint(roots: &[&Path]) -> std::io::Result<u64> {
    let mut files = Vec::new();
    let mut directories = Vec::new();
    for root in roots {
        if root.is_dir() {
            directories.push(root.to_path_buf());
        } else {
            files.push(root.to_path_buf());
        }
    }
    while let Some(directory) = directories.pop() {
        for entry in fs::read_dir(&directory)? {
            let path = entry?.path();
            if path.is_dir() {
                directories.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut hasher = DefaultHasher::new();
    env::var("CARGO_PKG_VERSION")
        .unwrap_or_default()
        .hash(&mut hasher);
    for file in files {
        file.hash(&mut hasher);
        fs::read(&file)?.hash(&mut hasher);
    }
    Ok(hasher.finish())
}
