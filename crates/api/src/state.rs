//! The one state every handler and background task shares: the renter (database, chain,
//! hotkey), the settings, the metrics, the live event stream, the token cache, the allocations
//! in flight, the outbox's wake-up and the cache of the resource list.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use compute::db::ComputeDb;
use compute::renter::{Renter, Resource};
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinSet;

use crate::auth::TokenCache;
use crate::config::ApiConfig;
use crate::events::Event;
use crate::metrics::Metrics;
use crate::problem::Problem;

/// Shared by every handler (cheap to clone).
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The parsed resource list and the database stamp it was read at.
type ResourceCache = Mutex<Option<((i64, i64), Arc<Vec<Resource>>)>>;

struct Inner {
    renter: Arc<Renter>,
    config: ApiConfig,
    metrics: Metrics,
    events: broadcast::Sender<Event>,
    tokens: TokenCache,
    jobs: Mutex<JoinSet<()>>,
    outbox: Notify,
    resources: ResourceCache,
    allocating: tokio::sync::RwLock<()>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("config", &self.0.config).finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(renter: Arc<Renter>, config: ApiConfig) -> Self {
        let (events, _) = broadcast::channel(1024);
        let (stop, _) = watch::channel(false);
        Self(Arc::new(Inner {
            renter,
            config,
            metrics: Metrics::default(),
            events,
            tokens: TokenCache::default(),
            jobs: Mutex::new(JoinSet::new()),
            outbox: Notify::new(),
            resources: Mutex::new(None),
            allocating: tokio::sync::RwLock::new(()),
            stop,
        }))
    }

    pub fn renter(&self) -> &Arc<Renter> {
        &self.0.renter
    }

    pub fn db(&self) -> &ComputeDb {
        self.0.renter.db()
    }

    pub fn config(&self) -> &ApiConfig {
        &self.0.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub(crate) fn tokens(&self) -> &TokenCache {
        &self.0.tokens
    }

    pub fn now_ms(&self) -> u64 {
        self.db().clock().now_ms()
    }

    /// Publishes `event` to the live stream (`GET /v1/events`); nobody listening is fine.
    pub fn publish(&self, event: Event) {
        let _ = self.0.events.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.0.events.subscribe()
    }

    /// Wakes the webhook sender (a delivery was queued).
    pub fn wake_outbox(&self) {
        self.0.outbox.notify_one();
    }

    pub(crate) fn outbox_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.0.outbox.notified()
    }

    /// Runs `job` in the background; shutdown waits for it ([`Self::drain_jobs`]).
    pub fn spawn_job(&self, job: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut jobs = self.0.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        while jobs.try_join_next().is_some() {}
        jobs.spawn(job);
    }

    /// Waits for every job in flight (allocations finishing) for at most `grace`.
    pub async fn drain_jobs(&self, grace: std::time::Duration) -> usize {
        let mut jobs = std::mem::take(&mut *self.0.jobs.lock().unwrap_or_else(PoisonError::into_inner));
        let n = jobs.len();
        let _ = tokio::time::timeout(grace, async { while jobs.join_next().await.is_some() {} }).await;
        n
    }

    /// Held shared by every allocation being made here, exclusively by the health checks while
    /// they release half-made allocations: the database counts this process's own claims as
    /// releasable (its maker may release them), so a round must not run beside an allocation
    /// this server is making, or it would release that allocation under it.
    pub(crate) fn allocating(&self) -> &tokio::sync::RwLock<()> {
        &self.0.allocating
    }

    /// Jobs in flight.
    pub fn jobs_in_flight(&self) -> usize {
        let mut jobs = self.0.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        while jobs.try_join_next().is_some() {}
        jobs.len()
    }

    /// Tells background loops and event streams to stop.
    pub fn stop(&self) {
        let _ = self.0.stop.send(true);
    }

    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.0.stop.subscribe()
    }

    /// Every miner's resources, parsed once per change of the database (here or in another
    /// process): a list request costs a filter and a sort, not 1,024 JSON parses.
    pub fn resources(&self) -> Result<Arc<Vec<Resource>>, Problem> {
        let stamp = self.db().change_stamp()?;
        if let Some((s, rows)) = &*self.0.resources.lock().unwrap_or_else(PoisonError::into_inner) {
            if *s == stamp {
                return Ok(rows.clone());
            }
        }
        let mut rows = compute::renter::resources(self.db(), &HashSet::new())?;
        // In the default order already: sorting a sorted list is one pass.
        rows.sort_by(|a, b| a.hotkey.cmp(&b.hotkey));
        let rows = Arc::new(rows);
        *self.0.resources.lock().unwrap_or_else(PoisonError::into_inner) = Some((stamp, rows.clone()));
        Ok(rows)
    }
}
