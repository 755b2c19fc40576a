//! Flags of the online backup: its bound in `segmentd serve`, and the
//! commands `segmentd backup` and `segmentd restore`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::parse_duration;
use crate::engine::BackupLimits;
use crate::store::backup;

/// Backup flags of `segmentd serve`.
#[derive(Debug, Args)]
pub struct BackupServeArgs {
    /// Most MiB of writes held while a backup runs; a backup during which
    /// more are written fails with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SEGMENTD_BACKUP_MAX_PENDING_MB", default_value_t = 256)]
    backup_max_pending_mb: usize,
}

impl BackupServeArgs {
    /// The limits of a backup these flags set.
    pub fn limits(&self) -> BackupLimits {
        BackupLimits {
            max_pending_bytes: self.backup_max_pending_mb.saturating_mul(1024 * 1024),
        }
    }
}

/// Flags of `segmentd backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Server address, e.g. `127.0.0.1:50051`.
    #[arg(long, env = "SEGMENTD_ADDR", default_value = "127.0.0.1:50051")]
    addr: String,
    /// The backup file to write; replaced only once a complete backup is
    /// on disk.
    #[arg(long)]
    out: PathBuf,
    /// How long to wait for the connection, e.g. `5s`.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,
    #[command(flatten)]
    tls: super::tls::ClientTlsArgs,
    #[command(flatten)]
    auth: super::auth::ClientAuthArgs,
}

/// Flags of `segmentd restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The data directory to restore into: missing or empty, and no
    /// server running on it.
    #[arg(long, env = "SEGMENTD_DATA_DIR")]
    data_dir: PathBuf,
    /// The backup file, as `segmentd backup` wrote it.
    file: PathBuf,
    /// Whether the restored store compresses its pages on disk, as
    /// `serve --compress-store` makes a new store.
    #[arg(long, env = "SEGMENTD_COMPRESS_STORE", default_value_t = false, action = clap::ArgAction::Set)]
    compress_store: bool,
}

/// Runs `segmentd backup` and prints what the file holds.
pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let endpoint = args.tls.endpoint(&args.addr)?;
    let report = crate::client::backup::run_at(
        endpoint,
        args.auth.token().as_ref(),
        &args.out,
        args.connect_timeout,
    )
    .await?;
    println!(
        "{}: {} bytes, {} puts, {} deletes, in {:.1} s",
        args.out.display(),
        report.summary.bytes,
        report.summary.puts,
        report.summary.deletes,
        report.elapsed.as_secs_f64()
    );
    Ok(())
}

/// Runs `segmentd restore` and prints what the trees hold.
pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    // The store holds personal data: every file made is for this user
    // only, whatever umask the command got.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let summary = backup::restore(&args.file, &args.data_dir, args.compress_store)?;
    println!(
        "{}: restored {} bytes ({} puts, {} deletes) into {}",
        args.file.display(),
        summary.file.bytes,
        summary.file.puts,
        summary.file.deletes,
        args.data_dir.display()
    );
    for (tree, keys) in &summary.trees {
        println!("  {tree}: {keys} keys");
    }
    println!("the server rebuilds its index from them when it starts");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::super::{Cli, Command};

    #[test]
    fn backup_and_restore_parse() {
        let cli = Cli::try_parse_from(["segmentd", "backup", "--out", "store.backup"]).unwrap();
        let Some(Command::Backup(args)) = cli.command else {
            panic!("not a backup: {:?}", cli.command);
        };
        assert_eq!(args.out.to_str(), Some("store.backup"));
        assert_eq!(args.addr, "127.0.0.1:50051");

        let cli = Cli::try_parse_from(["segmentd", "restore", "--data-dir", "d", "f"]).unwrap();
        let Some(Command::Restore(args)) = cli.command else {
            panic!("not a restore: {:?}", cli.command);
        };
        assert_eq!(
            (args.data_dir.to_str(), args.file.to_str()),
            (Some("d"), Some("f"))
        );
        assert!(Cli::try_parse_from(["segmentd", "restore", "f"]).is_err());

        let cli = Cli::try_parse_from(["segmentd", "--backup-max-pending-mb", "8"]).unwrap();
        assert_eq!(cli.serve.backup.limits().max_pending_bytes, 8 * 1024 * 1024);
    }
}
