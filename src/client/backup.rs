//! `segmentd backup`: takes an online backup of a running server into a
//! file, through `AdminService.BackupStore`.
//!
//! The chunks go into a temporary file beside the destination, which is
//! checked whole (counts and checksum), flushed to disk and only then
//! renamed into place, so the destination is either the previous file or
//! a complete new backup, never a part of one.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tonic::transport::Endpoint;

use crate::grpc::pb;
use crate::grpc::pb::admin_service_client::AdminServiceClient;
use crate::store::backup::{verify_file, BackupSummary};

/// A finished backup.
#[derive(Debug, Clone, Copy)]
pub struct BackupReport {
    /// What the file holds.
    pub summary: BackupSummary,
    /// How long it took.
    pub elapsed: Duration,
}

/// The temporary file a backup into `out` is written to first.
fn temporary_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|name| name.to_os_string())
        .unwrap_or_default();
    name.push(format!(".partial-{}", std::process::id()));
    out.with_file_name(name)
}

/// Takes a backup of the server at `addr`, in plaintext, into `out`; see
/// [`run_at`].
pub async fn run(
    addr: &str,
    out: &Path,
    connect_timeout: Duration,
) -> anyhow::Result<BackupReport> {
    run_at(
        super::channel::endpoint(addr, None)?,
        None,
        out,
        connect_timeout,
    )
    .await
}

/// Takes a backup of the server at `endpoint` into `out`;
/// `connect_timeout` bounds the connection only, for a backup takes as
/// long as the store is large.
pub async fn run_at(
    endpoint: Endpoint,
    token: Option<&super::channel::BearerToken>,
    out: &Path,
    connect_timeout: Duration,
) -> anyhow::Result<BackupReport> {
    let started = Instant::now();
    let channel = super::channel::connect(endpoint.connect_timeout(connect_timeout), token).await?;
    let mut chunks = AdminServiceClient::new(channel)
        .backup_store(pb::BackupStoreRequest {})
        .await
        .map_err(|status| anyhow::anyhow!("{}: {}", status.code(), status.message()))?
        .into_inner();

    let partial = temporary_path(out);
    // A backup holds personal data: for its owner only.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let received = async {
        while let Some(chunk) = chunks
            .message()
            .await
            .map_err(|status| anyhow::anyhow!("{}: {}", status.code(), status.message()))?
        {
            file.write_all(&chunk.data)
                .with_context(|| format!("cannot write {}", partial.display()))?;
        }
        file.sync_all()
            .with_context(|| format!("cannot flush {}", partial.display()))?;
        let summary = verify_file(&partial)?;
        std::fs::rename(&partial, out)
            .with_context(|| format!("cannot rename {} to {}", partial.display(), out.display()))?;
        sync_parent(out)?;
        anyhow::Ok(summary)
    }
    .await;
    match received {
        Ok(summary) => Ok(BackupReport {
            summary,
            elapsed: started.elapsed(),
        }),
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            Err(error.context("the backup failed; nothing was written to the destination"))
        }
    }
}

/// Flushes the directory of `path`, so that a rename into it survives a
/// crash.
fn sync_parent(path: &Path) -> anyhow::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("cannot flush the directory {}", parent.display()))
}
