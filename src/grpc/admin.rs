//! `segmentd.v1.AdminService`: the online backup, streamed as the chunks
//! of a backup file. Its scope is `admin.backup`.

use std::pin::Pin;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

use super::pb::admin_service_server::AdminService;
use super::pb::{self};
use super::{ready, EngineSlot};
use crate::engine::BackupLimits;

/// The AdminService handlers.
#[derive(Debug, Clone)]
pub struct AdminApi {
    /// The engine, once ready.
    engine: EngineSlot,
    /// The limits of a backup.
    backup: BackupLimits,
}

impl AdminApi {
    /// Handlers over `engine`, taking backups within `backup`.
    pub fn new(engine: EngineSlot, backup: BackupLimits) -> Self {
        AdminApi { engine, backup }
    }
}

/// The chunks of a backup as they are produced.
type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::BackupStoreChunk, Status>> + Send>>;

#[tonic::async_trait]
impl AdminService for AdminApi {
    type BackupStoreStream = ChunkStream;

    async fn backup_store(
        &self,
        _request: Request<pb::BackupStoreRequest>,
    ) -> Result<Response<Self::BackupStoreStream>, Status> {
        let engine = ready(&self.engine)?;
        let chunks = engine.backup(self.backup).await?;
        // audit: record the backup (principal, method `BackupStore`, outcome) here.
        let stream = ReceiverStream::new(chunks).map(|chunk| {
            chunk
                .map(|data| pb::BackupStoreChunk { data })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
