//! `segmentd.v1.AdminService`: the online backup, streamed as the chunks
//! of a backup file. Its scope is `admin.backup`.

use std::pin::Pin;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

use super::audit::{self, Audit};
use super::pb::admin_service_server::AdminService;
use super::pb::{self};
use super::{ready, EngineSlot};
use crate::engine::BackupLimits;

/// The resource a backup reads, for the audit log.
const STORE: &str = "store";

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
        request: Request<pb::BackupStoreRequest>,
    ) -> Result<Response<Self::BackupStoreStream>, Status> {
        // A backup is an export of everything: audited when it starts.
        let audit = Audit::new(&request, "BackupStore", audit::named(STORE));
        let chunks = audit.outcome(match ready(&self.engine) {
            Ok(engine) => engine.backup(self.backup).await.map_err(Status::from),
            Err(status) => Err(status),
        })?;
        let stream = ReceiverStream::new(chunks).map(|chunk| {
            chunk
                .map(|data| pb::BackupStoreChunk { data })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
