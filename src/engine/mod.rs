//! The engine: the domain operations the RPCs call. It owns the store and
//! decides what each operation means; it knows neither gRPC nor sled.

mod customers;

use std::sync::Arc;

use crate::domain::{CurrencyCode, Error, Result};
use crate::store::{Store, StoreOptions};

pub use customers::{CustomerUpdate, ImportCounts, Page};

/// Settings the engine applies to every request.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The one currency that amounts are kept in.
    pub reporting_currency: CurrencyCode,
}

/// The engine; shared by every RPC handler.
#[derive(Debug)]
pub struct Engine {
    /// The durable store.
    store: Arc<Store>,
    /// Settings for every request.
    settings: EngineSettings,
}

impl Engine {
    /// Opens the store and makes the engine ready to serve.
    pub async fn open(options: StoreOptions, settings: EngineSettings) -> Result<Self> {
        let store = tokio::task::spawn_blocking(move || Store::open(&options))
            .await
            .map_err(|error| Error::internal(format!("store open task failed: {error}")))??;
        Ok(Engine {
            store: Arc::new(store),
            settings,
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Flushes everything to disk, for shutdown.
    pub async fn flush(&self) -> Result<()> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|error| Error::internal(format!("flush task failed: {error}")))?
    }

    /// Runs blocking store work on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|error| Error::internal(format!("store task failed: {error}")))?
    }
}
