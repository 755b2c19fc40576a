//! Activity operations: recording events idempotently and reading one
//! customer's history.

use std::collections::{HashMap, HashSet};

use foldhash::fast::RandomState;

use super::command::{expect_outcome, Command, Outcome, RecordCounts};
use super::index::{event_key, Event, EventRef, FeatureIndex, Row, Series};
use super::{Engine, Shared};
use crate::domain::{
    ActivityBatch, ActivityRecord, CustomerId, Engagement, EngagementKind, Error, EventId,
    Purchase, Result, Violations,
};
use crate::store::Store;

/// One page of a customer's history, newest first.
#[derive(Debug, Clone)]
pub struct EventPage<T> {
    /// The events.
    pub events: Vec<T>,
    /// The (time, key) to continue after, when more events follow.
    pub next: Option<(i64, u64)>,
}

/// The batches that hold a customer's events.
pub fn batches_of(row: &Row) -> Vec<u64> {
    let mut batches: Vec<u64> = row
        .purchases
        .refs()
        .iter()
        .chain(row.engagements().refs())
        .map(|at| at.batch())
        .collect();
    batches.sort_unstable();
    batches.dedup();
    batches
}

/// Stored records read during one operation, each at most once, with
/// the events of the customers `id_of` names from their numbers.
struct RecordCache<'a> {
    store: &'a Store,
    id_of: &'a dyn Fn(u32) -> Option<CustomerId>,
    records: HashMap<u64, ActivityRecord>,
}

impl<'a> RecordCache<'a> {
    fn new(store: &'a Store, id_of: &'a dyn Fn(u32) -> Option<CustomerId>) -> Self {
        RecordCache {
            store,
            id_of,
            records: HashMap::new(),
        }
    }

    /// A stored batch, or `None` if it is gone.
    fn record_if_present(&mut self, batch: u64) -> Result<Option<&ActivityRecord>> {
        if !self.records.contains_key(&batch) {
            let Some(record) = self.store.read_activity(batch, self.id_of)? else {
                return Ok(None);
            };
            self.records.insert(batch, record);
        }
        Ok(self.records.get(&batch))
    }

    /// A stored batch the index refers to.
    fn record(&mut self, batch: u64) -> Result<&ActivityRecord> {
        self.record_if_present(batch)?.ok_or_else(|| {
            Error::internal(format!(
                "the index refers to missing activity batch {batch}"
            ))
        })
    }

    fn purchase(&mut self, at: EventRef) -> Result<Option<&Purchase>> {
        Ok(self
            .record(at.batch())?
            .purchases
            .get(at.position())
            .and_then(Option::as_ref))
    }

    fn engagement(&mut self, at: EventRef) -> Result<Option<&Engagement>> {
        Ok(self
            .record(at.batch())?
            .engagements
            .get(at.position())
            .and_then(Option::as_ref))
    }
}

/// Whether an event with `id` is stored among `series`, checking every
/// key match against the stored id.
fn is_recorded(
    series: &Series,
    id: &EventId,
    key: u64,
    stored_id: &mut impl FnMut(EventRef) -> Result<Option<EventId>>,
) -> Result<bool> {
    for at in series.refs_with_key(key) {
        if stored_id(at)?.as_ref() == Some(id) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The row of each event's customer, or a violation for each unknown one.
fn rows_of<'a>(
    index: &FeatureIndex,
    customers: impl Iterator<Item = &'a CustomerId>,
    list: &str,
    violations: &mut Violations,
) -> Vec<u32> {
    let mut rows = Vec::new();
    for (position, customer) in customers.enumerate() {
        match index.row_number(customer.as_str()) {
            Some(row) => rows.push(row),
            None => violations.add(
                format!("{list}[{position}].customer"),
                format!("{} does not exist", customer.name()),
            ),
        }
    }
    rows
}

/// Records a batch, all or nothing; a write (see `Engine::write`), not
/// yet durable.
pub(super) fn record_batch(shared: &Shared, batch: ActivityBatch) -> Result<RecordCounts> {
    let index = shared.index();
    let mut violations = Violations::default();
    let purchase_rows = rows_of(
        &index,
        batch.purchases.iter().map(|p| &p.customer),
        "purchases",
        &mut violations,
    );
    let engagement_rows = rows_of(
        &index,
        batch.engagements.iter().map(|e| &e.customer),
        "engagements",
        &mut violations,
    );
    violations.into_result(())?;

    // An id identifies an event of its customer: a repeat, stored or
    // earlier in this batch, is a duplicate.
    let id_of = |number: u32| CustomerId::parse(index.id_at(number)).ok();
    let mut cache = RecordCache::new(&shared.store, &id_of);
    let mut seen: HashSet<(u32, &str), RandomState> = HashSet::default();
    let mut new_purchases = Vec::with_capacity(batch.purchases.len());
    for (position, (purchase, &row)) in batch.purchases.iter().zip(&purchase_rows).enumerate() {
        let key = event_key(purchase.id.as_str());
        let series = &index
            .row_at(row)
            .ok_or_else(|| Error::internal("row vanished"))?
            .purchases;
        let stored = is_recorded(series, &purchase.id, key, &mut |at| {
            Ok(cache.purchase(at)?.map(|stored| stored.id.clone()))
        })?;
        if !stored && seen.insert((row, purchase.id.as_str())) {
            new_purchases.push((position, row, key));
        }
    }
    seen.clear();
    let mut new_engagements = Vec::with_capacity(batch.engagements.len());
    for (position, (engagement, &row)) in batch.engagements.iter().zip(&engagement_rows).enumerate()
    {
        let key = event_key(engagement.id.as_str());
        let series = &index
            .row_at(row)
            .ok_or_else(|| Error::internal("row vanished"))?
            .engagements();
        let stored = is_recorded(series, &engagement.id, key, &mut |at| {
            Ok(cache.engagement(at)?.map(|stored| stored.id.clone()))
        })?;
        if !stored && seen.insert((row, engagement.id.as_str())) {
            new_engagements.push((position, row, key));
        }
    }
    drop(seen);
    drop(cache);
    drop(index);

    let total = batch.len() as u64;
    let accepted = (new_purchases.len() + new_engagements.len()) as u64;
    if accepted == 0 {
        return Ok(RecordCounts {
            accepted,
            duplicates: total,
        });
    }
    let mut purchases: Vec<Option<Purchase>> = batch.purchases.into_iter().map(Some).collect();
    let mut engagements: Vec<Option<Engagement>> =
        batch.engagements.into_iter().map(Some).collect();
    let record = ActivityRecord {
        purchases: new_purchases
            .iter()
            .map(|&(position, ..)| purchases[position].take())
            .collect(),
        engagements: new_engagements
            .iter()
            .map(|&(position, ..)| engagements[position].take())
            .collect(),
    };
    let purchase_customers: Vec<u32> = new_purchases.iter().map(|&(_, row, _)| row).collect();
    let engagement_customers: Vec<u32> = new_engagements.iter().map(|&(_, row, _)| row).collect();
    let seq = shared
        .store
        .append_activity(&record, &purchase_customers, &engagement_customers)?;
    // Each customer's events go in at once: one pass over what they hold,
    // however far out of time order the batch is.
    let mut purchases: Vec<(u32, Event)> = record
        .purchases
        .iter()
        .zip(&new_purchases)
        .enumerate()
        .filter_map(|(slot, (purchase, &(_, row, key)))| {
            let purchase = purchase.as_ref()?;
            let event = Event {
                time: purchase.occurred_at.as_nanos(),
                amount: Some(purchase.amount_minor),
                key,
                at: EventRef::new(seq, slot),
            };
            Some((row, event))
        })
        .collect();
    let mut engagements: Vec<(u32, (EngagementKind, Event))> = record
        .engagements
        .iter()
        .zip(&new_engagements)
        .enumerate()
        .filter_map(|(slot, (engagement, &(_, row, key)))| {
            let engagement = engagement.as_ref()?;
            let event = Event {
                time: engagement.occurred_at.as_nanos(),
                amount: None,
                key,
                at: EventRef::new(seq, slot),
            };
            Some((row, (engagement.kind, event)))
        })
        .collect();
    purchases.sort_by_key(|&(row, _)| row);
    engagements.sort_by_key(|&(row, _)| row);
    let mut index = shared.index_mut();
    for customer in purchases.chunk_by(|a, b| a.0 == b.0) {
        let row = customer[0].0;
        let mut events: Vec<Event> = customer.iter().map(|&(_, event)| event).collect();
        index.add_purchases(row, &mut events);
    }
    for customer in engagements.chunk_by(|a, b| a.0 == b.0) {
        let events: Vec<(EngagementKind, Event)> =
            customer.iter().map(|&(_, event)| event).collect();
        index.add_engagements(customer[0].0, &events);
    }
    shared
        .counters
        .recorded(new_purchases.len(), new_engagements.len());
    Ok(RecordCounts {
        accepted,
        duplicates: total - accepted,
    })
}

/// The refs of one page of `series`, newest first, and the cursor after it.
fn page_of(
    series: &Series,
    after: Option<(i64, u64)>,
    page_size: usize,
) -> (Vec<EventRef>, Option<(i64, u64)>) {
    let end = match after {
        Some((time, key)) => series.position_before(time, key),
        None => series.len(),
    };
    let start = end.saturating_sub(page_size);
    let refs = series.refs()[start..end].iter().rev().copied().collect();
    let next = (start > 0).then(|| (series.times()[start], series.keys()[start]));
    (refs, next)
}

impl Engine {
    /// Records a batch of events, all or nothing, and waits until it is durable.
    pub async fn record_activity(&self, batch: ActivityBatch) -> Result<RecordCounts> {
        let counts = self.import_activity(batch).await?;
        self.durable().await?;
        Ok(counts)
    }

    /// Records a batch of events, all or nothing, without waiting for
    /// durability: call [`Engine::durable`] before acknowledging it.
    pub async fn import_activity(&self, batch: ActivityBatch) -> Result<RecordCounts> {
        if batch.len() >= EventRef::MAX_BATCH_EVENTS {
            return Err(Error::ResourceExhausted {
                subject: "events".into(),
                description: format!(
                    "at most {} events per batch",
                    EventRef::MAX_BATCH_EVENTS - 1
                ),
            });
        }
        let outcome = self.submit(Command::RecordActivity { batch }).await?;
        expect_outcome!(outcome, Recorded)
    }

    /// One page of a customer's purchases, newest first.
    pub async fn list_purchases(
        &self,
        id: CustomerId,
        after: Option<(i64, u64)>,
        page_size: usize,
    ) -> Result<EventPage<Purchase>> {
        self.scan(move |shared| {
            read_page(
                shared,
                &id,
                after,
                page_size,
                |row| &row.purchases,
                |record, at| record.purchases.get(at).and_then(Option::as_ref),
            )
        })
        .await
    }

    /// One page of a customer's engagement events, newest first.
    pub async fn list_engagements(
        &self,
        id: CustomerId,
        after: Option<(i64, u64)>,
        page_size: usize,
    ) -> Result<EventPage<Engagement>> {
        self.scan(move |shared| {
            read_page(
                shared,
                &id,
                after,
                page_size,
                |row| row.engagements(),
                |record, at| record.engagements.get(at).and_then(Option::as_ref),
            )
        })
        .await
    }
}

/// One page of one of a customer's series, read from the stored batches.
fn read_page<T: Clone>(
    shared: &Shared,
    id: &CustomerId,
    after: Option<(i64, u64)>,
    page_size: usize,
    series: impl Fn(&Row) -> &Series,
    event: impl Fn(&ActivityRecord, usize) -> Option<&T>,
) -> Result<EventPage<T>> {
    let (number, refs, next) = {
        let index = shared.index();
        let number = index
            .row_number(id.as_str())
            .ok_or_else(|| Error::NotFound(id.name()))?;
        let row = index
            .row_at(number)
            .ok_or_else(|| Error::NotFound(id.name()))?;
        let (refs, next) = page_of(series(row), after, page_size);
        (number, refs, next)
    };
    // Only this customer's events are read from the batches.
    let id_of = |of: u32| (of == number).then(|| id.clone());
    let mut cache = RecordCache::new(&shared.store, &id_of);
    let mut events = Vec::with_capacity(refs.len());
    for at in refs {
        // A batch can go while the page is read: only when every event in
        // it was erased, which includes this customer's.
        let record = cache
            .record_if_present(at.batch())?
            .ok_or_else(|| Error::NotFound(id.name()))?;
        events.extend(event(record, at.position()).cloned());
    }
    Ok(EventPage { events, next })
}
