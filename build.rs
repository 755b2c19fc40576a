//! Generates the gRPC code and the reflection descriptor set from `proto/`,
//! with a vendored `protoc`, so that a build needs nothing beyond cargo.

use std::{env, path::PathBuf};

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
