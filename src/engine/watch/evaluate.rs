//! The state of every watched subject, and one evaluation of them all: the
//! members now, their differences from the members before, written to the
//! history with their causes.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

use super::journal::Touched;
use super::members::Members;
use super::record::{decode, decoded_len, encode, Cause, Change, Checkpoint, Record, Subject};
use super::tracker::{reads_predictions, reads_scores, Plan, Scored, Tracker};
use super::Head;
use crate::domain::rules::{compile, Predicate};
use crate::domain::segment::SegmentId;
use crate::domain::{ConsentStatus, Error, Result, Timestamp};
use crate::engine::features::{features_at, CustomerFeatures};
use crate::engine::frame::Frame;
use crate::engine::index::FeatureIndex;
use crate::engine::personas::{assignments, holds, CompiledCatalog, Facts};
use crate::engine::rfm::RfmBounds;
use crate::engine::select::{channel_status, consented, select, split_objectors};
use crate::engine::Shared;
use crate::store::HistoryWrite;

/// How often, at most, subjects that changed get a new checkpoint and
/// retention runs; sooner under a short retention, or once records of a
/// quarter of the retained bytes were written.
pub(super) const MAINTENANCE_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// One subject's members as of the last evaluation.
#[derive(Debug)]
pub(super) struct SubjectState {
    /// The segment's rule, or the catalog revision as text.
    pub(super) rule: String,
    /// The segment's rule compiled.
    pub(super) compiled: Option<Predicate>,
    /// Members by row.
    pub(super) codes: Members,
    /// Members the index no longer holds (erased while the server was
    /// down), with their persona for personas.
    pub(super) ghosts: Vec<(String, String)>,
    /// Records were written since the last checkpoint.
    pub(super) dirty: bool,
}

/// Every subject's state, and where the history stands.
#[derive(Debug)]
pub struct State {
    /// The history's id.
    pub(super) history: u64,
    /// The last record written.
    pub(super) seq: u64,
    /// The last record pruned.
    pub(super) pruned: u64,
    /// The last evaluation time.
    pub(super) at: i64,
    pub(super) subjects: BTreeMap<Subject, SubjectState>,
    /// Persona ids by code; code 0 is none.
    pub(super) names: Vec<String>,
    pub(super) codes_by_name: HashMap<String, u32>,
    /// The RFM bounds at the last evaluation.
    pub(super) rfm: Option<RfmBounds>,
    /// When the last checkpoints were written.
    pub(super) maintained: Instant,
    /// Bytes of records written since.
    pub(super) written: u64,
    /// Each record kept: its sequence number, bytes and evaluation time.
    pub(super) sizes: VecDeque<(u64, u64, i64)>,
    /// Which rows the next evaluation must read.
    pub(super) tracker: Tracker,
    /// Whether the next evaluation maintains the history, when a tick of
    /// the log decided it; else the elapsed time and bytes written do.
    pub(super) maintenance_due: Option<bool>,
}

/// The rows an evaluation reads one at a time, each with the customer's
/// features then (`None` for a row without a customer), and whether only
/// their scores moved.
type Candidates = [(u32, Option<CustomerFeatures>, bool)];

/// What one evaluation reads a subject with.
#[derive(Clone, Copy)]
struct Reading<'r, 'f> {
    /// The index at the evaluation time.
    frame: &'r Frame<'f>,
    /// The catalog in force.
    catalog: &'r CompiledCatalog,
    /// What writes touched since the evaluation before.
    touched: &'r Touched,
    /// Whether the score bounds moved with writes.
    others: bool,
    /// Whether another prediction model came into force.
    refitted: bool,
    /// The rows to read a customer at a time, or `None` for every row
    /// over the whole index.
    candidates: Option<&'r Candidates>,
    /// Whether the subjects that read a score read the whole index.
    scored_whole: bool,
}

/// A segment's rule compiled; a stored one always compiles.
pub(super) fn compile_rule(filter: &str) -> Result<Predicate> {
    if filter.trim().is_empty() {
        return Ok(Predicate::Const(true));
    }
    compile(filter).map_err(|error| {
        Error::internal(format!(
            "a stored filter no longer compiles: {}",
            error.message
        ))
    })
}

/// The catalog's rule text: its revision.
pub(super) fn catalog_rule(catalog: &CompiledCatalog) -> String {
    catalog.catalog.revision.to_string()
}

impl State {
    /// Subjects followed.
    pub fn subject_count(&self) -> usize {
        self.subjects.len()
    }

    /// The head: the last record and the last evaluation time.
    pub fn head(&self) -> Head {
        Head {
            seq: self.seq,
            at: self.at,
            off: false,
            closing: false,
        }
    }

    pub(super) fn code(&mut self, persona: &str) -> u32 {
        if persona.is_empty() {
            return 0;
        }
        if let Some(&code) = self.codes_by_name.get(persona) {
            return code;
        }
        let code = self.names.len() as u32;
        self.names.push(persona.to_owned());
        self.codes_by_name.insert(persona.to_owned(), code);
        code
    }

    /// The members of `subject` now, by row; `None` when its segment is
    /// gone.
    pub(super) fn members_now(
        &mut self,
        frame: &Frame<'_>,
        subject: &Subject,
        compiled: &Predicate,
        catalog: &CompiledCatalog,
    ) -> Members {
        match subject {
            Subject::Segment { channel, .. } => {
                let (mut members, _) = split_objectors(frame, &select(frame, compiled));
                members.and(frame.alive());
                if let Some(channel) = channel {
                    members.and(&consented(frame, *channel));
                }
                Members::Set(members)
            }
            Subject::Personas => {
                let (mut everyone, _) =
                    split_objectors(frame, &select(frame, &Predicate::Const(true)));
                everyone.and(frame.alive());
                // The watch's code of each place in the catalog, 0 for none.
                let watched: Vec<u32> = std::iter::once(0)
                    .chain(
                        catalog
                            .catalog
                            .personas
                            .iter()
                            .map(|persona| self.code(&persona.id)),
                    )
                    .collect();
                let codes = assignments(frame, catalog, &everyone)
                    .par_iter()
                    .map(|&place| watched[usize::from(place)])
                    .collect();
                Members::Codes(codes)
            }
        }
    }

    fn name(&self, code: u32, subject: &Subject) -> String {
        match subject {
            Subject::Personas => self.names[code as usize].clone(),
            Subject::Segment { .. } => String::new(),
        }
    }

    /// Evaluates every subject at `at` (or the last evaluation time, if
    /// later), writes the changes and flushes them.
    pub fn evaluate(&mut self, shared: &Shared, at: Timestamp) -> Result<()> {
        let writer = shared.writer();
        self.evaluate_held(shared, at, Some(writer))
    }

    /// `evaluate`, for a caller that holds the writer lock already (`None`)
    /// or hands it over to be released once the journal is drained.
    pub(super) fn evaluate_held(
        &mut self,
        shared: &Shared,
        at: Timestamp,
        writer: Option<std::sync::MutexGuard<'_, ()>>,
    ) -> Result<()> {
        let at = at.as_nanos().max(self.at);
        let catalog = shared.catalog();
        let mut writes = Vec::new();
        let mut erased: HashSet<String> = HashSet::new();
        let mut records: BTreeMap<Subject, Record> = BTreeMap::new();
        let settings = &shared.watch.settings;
        // In cluster mode the tick decides, the same on every replica.
        let maintain = self.maintenance_due.take().unwrap_or_else(|| {
            self.maintained.elapsed() >= MAINTENANCE_EVERY.min(settings.retention / 4)
                || self.written > settings.retention_bytes / 4
        });
        let mut checkpoints = Vec::new();
        {
            // The journal is drained with the index held, and no write
            // between: every change seen has its cause in what is drained.
            let index = shared.long_index();
            let mut touched = shared.watch.journal.drain();
            drop(writer);
            // Members the index lost while the server was down were erased.
            for state in self.subjects.values() {
                for (ghost, _) in &state.ghosts {
                    touched.causes.insert(ghost.clone(), Cause::Erasure);
                }
            }
            let frame = Frame::new(
                &index,
                Timestamp::from_nanos(at),
                shared.settings.thresholds,
            );
            let rfm = frame.rfm_bounds().copied();
            let others = touched.writes > 0 && rfm != self.rfm;
            self.rfm = rfm;
            // The rows whose members may have changed, or all of them.
            let written: Vec<u32> = touched
                .causes
                .keys()
                .filter_map(|id| index.row_number(id))
                .chain(touched.erased.keys().copied())
                .collect();
            let scored = self.reads(&catalog, reads_scores);
            let refitted = self.tracker.refitted(&frame);
            let predicted = self.reads(&catalog, reads_predictions);
            let plan = self.tracker.plan(&frame, written, scored, predicted);
            let (candidates, scored_whole) = match &plan {
                Plan::Whole => (None, true),
                Plan::Rows(rows, scored) => {
                    let moved = match scored {
                        Scored::Rows(moved) => moved.as_slice(),
                        Scored::Whole => &[],
                    };
                    // Predictions only for a subject that reads them; the
                    // rows on both cores, as the index is held meanwhile.
                    let read = |&row: &u32, by_scores: bool| {
                        (row, features_at(&frame, row, predicted), by_scores)
                    };
                    let mut candidates: Vec<(u32, Option<CustomerFeatures>, bool)> = rows
                        .par_iter()
                        .map(|row| read(row, false))
                        .chain(moved.par_iter().map(|row| read(row, true)))
                        .collect();
                    candidates.sort_unstable_by_key(|(row, _, _)| *row);
                    (Some(candidates), matches!(scored, Scored::Whole))
                }
            };
            erased.extend(
                touched
                    .causes
                    .iter()
                    .filter(|(_, cause)| **cause == Cause::Erasure)
                    .map(|(id, _)| id.clone()),
            );
            let subjects: Vec<Subject> = self.subjects.keys().cloned().collect();
            let mut failed = false;
            for subject in subjects {
                // A subject that cannot be evaluated keeps its members, and
                // the others go on.
                let reading = Reading {
                    frame: &frame,
                    catalog: &catalog,
                    touched: &touched,
                    others,
                    refitted,
                    candidates: candidates.as_deref(),
                    scored_whole,
                };
                match self.evaluate_reading(shared, &subject, &reading, at) {
                    Ok(Some(record)) => {
                        records.insert(subject, record);
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::error!(%error, ?subject, "cannot evaluate a watched subject");
                        failed = true;
                    }
                }
            }
            self.tracker.evaluated(&frame, &plan, scored);
            if failed {
                self.tracker.reset();
            }
            if maintain {
                // The members as this evaluation leaves them, by row: told
                // by id once its records are out.
                for (subject, state) in &self.subjects {
                    let ended = records.get(subject).is_some_and(|record| record.ended);
                    if (state.dirty || records.contains_key(subject)) && !ended {
                        checkpoints.push((subject.clone(), state.codes.clone()));
                    }
                }
            }
        }
        self.at = at;
        if !erased.is_empty() {
            let (rewrites, found) = self.scrub(shared, &erased)?;
            // Retention counts the records' sizes as a restart reads them.
            for write in &rewrites {
                if let HistoryWrite::Rewrite(seq, bytes) = write {
                    if let Ok(at) = self.sizes.binary_search_by_key(seq, |(seq, _, _)| *seq) {
                        self.sizes[at].1 = bytes.len() as u64 + 9;
                    }
                }
            }
            writes.extend(rewrites);
            self.notify_erasures(found, &mut records, at);
        }
        let last_before = self.seq;
        let mut fresh = Vec::with_capacity(records.len());
        for (subject, record) in records {
            self.seq += 1;
            let bytes = encode(&record)?;
            self.written += bytes.len() as u64;
            self.sizes.push_back((self.seq, bytes.len() as u64 + 9, at));
            let ended = record.ended;
            // Kept in memory decoded: budgeted by that size.
            fresh.push((self.seq, Arc::new(record), decoded_len(&bytes)));
            writes.push(HistoryWrite::Record(self.seq, bytes));
            if ended {
                self.subjects.remove(&subject);
                writes.push(HistoryWrite::DropCheckpoint(subject.key()));
            } else if let Some(state) = self.subjects.get_mut(&subject) {
                state.dirty = true;
            }
        }
        if !writes.is_empty() {
            shared.store.write_history(writes)?;
            shared.store.flush()?;
            // Kept in memory once on disk, before the head tells of them.
            let recent = &shared.watch.recent;
            if !erased.is_empty() {
                recent.clear();
            }
            for (seq, record, bytes) in fresh {
                recent.push(seq, record, bytes);
            }
        }
        if !maintain {
            return Ok(());
        }
        // Checkpoints of large subjects take a while: watchers hear of this
        // evaluation first, and writers wait for the index one subject at
        // a time. A subject with a member erased meanwhile, whose id the
        // index no longer tells, keeps its last checkpoint (which names
        // them, to be reported leaving after a restart too), and nothing is
        // pruned this time.
        let head = self.head();
        shared.watch.head.send_if_modified(|told| {
            let newer = head.seq > told.seq || head.at > told.at;
            told.seq = told.seq.max(head.seq);
            told.at = told.at.max(head.at);
            newer
        });
        let mut complete = true;
        let checkpoints = checkpoints
            .into_iter()
            .filter_map(|(subject, codes)| {
                let members = self.member_list(&shared.long_index(), &subject, &codes);
                complete &= members.is_some();
                let mut members = members?;
                members.sort_unstable();
                Some((subject, members))
            })
            .collect();
        let prunable = if complete { last_before } else { 0 };
        let writes = self.maintain(shared, checkpoints, prunable)?;
        if !writes.is_empty() {
            shared.store.write_history(writes)?;
            shared.store.flush()?;
        }
        Ok(())
    }

    /// Adds an erasure notice for every erased customer a subject's
    /// earlier records named and this evaluation does not report already:
    /// a watcher that resumes from any cursor (or started from the members
    /// at any time) the history still serves may hold them, and the
    /// records that told of them are gone.
    fn notify_erasures(
        &self,
        found: BTreeMap<Subject, BTreeMap<String, String>>,
        records: &mut BTreeMap<Subject, Record>,
        at: i64,
    ) {
        for (subject, customers) in found {
            if !self.subjects.contains_key(&subject) {
                continue;
            }
            let record = records.entry(subject.clone()).or_insert_with(|| Record {
                subject: subject.clone(),
                at,
                changes: Vec::new(),
                rule: None,
                ended: false,
            });
            let reported: HashSet<String> = record
                .changes
                .iter()
                .map(|change| change.customer.clone())
                .collect();
            for (customer, last) in customers {
                if reported.contains(&customer) {
                    continue;
                }
                record.changes.push(Change {
                    customer,
                    entered: false,
                    from: last,
                    to: String::new(),
                    cause: Cause::Erasure,
                });
            }
            // Entries first, then departures, each in id order.
            record.changes.sort_by(|a, b| {
                b.entered
                    .cmp(&a.entered)
                    .then_with(|| a.customer.cmp(&b.customer))
            });
        }
    }

    /// Whether a rule of a followed subject reads what `test` looks for
    /// (an RFM score, a prediction).
    fn reads(&self, catalog: &CompiledCatalog, test: fn(&Predicate) -> bool) -> bool {
        self.subjects.iter().any(|(subject, state)| match subject {
            Subject::Personas => catalog.rules.iter().any(test),
            Subject::Segment { .. } => state.compiled.as_ref().is_some_and(test),
        })
    }

    /// Evaluates one subject over the whole index: its record, if anything
    /// changed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn evaluate_subject(
        &mut self,
        shared: &Shared,
        frame: &Frame<'_>,
        subject: &Subject,
        catalog: &CompiledCatalog,
        touched: &Touched,
        others: bool,
        at: i64,
    ) -> Result<Option<Record>> {
        let reading = Reading {
            frame,
            catalog,
            touched,
            others,
            refitted: false,
            candidates: None,
            scored_whole: true,
        };
        self.evaluate_reading(shared, subject, &reading, at)
    }

    /// The code of the customer in a candidate row: as `members_now` would
    /// place them, read for that customer alone.
    fn code_of(
        &mut self,
        frame: &Frame<'_>,
        subject: &Subject,
        compiled: &Predicate,
        catalog: &CompiledCatalog,
        row: u32,
        features: Option<&CustomerFeatures>,
    ) -> u32 {
        let Some(features) = features else {
            return 0;
        };
        let number = row as usize;
        let columns = frame.index.columns();
        if columns.objects[number] {
            return 0;
        }
        let facts = Facts::new(frame.index, number, features);
        match subject {
            Subject::Segment { channel, .. } => {
                let consented = channel.is_none_or(|channel| {
                    channel_status(&columns.consent[number], channel) == ConsentStatus::Granted
                });
                u32::from(consented && holds(compiled, &facts))
            }
            Subject::Personas => {
                let found = catalog
                    .catalog
                    .personas
                    .iter()
                    .zip(&catalog.rules)
                    .find(|(_, rule)| holds(rule, &facts));
                match found {
                    Some((persona, _)) => self.code(&persona.id),
                    None => 0,
                }
            }
        }
    }

    fn evaluate_reading(
        &mut self,
        shared: &Shared,
        subject: &Subject,
        reading: &Reading<'_, '_>,
        at: i64,
    ) -> Result<Option<Record>> {
        let Reading {
            frame,
            catalog,
            touched,
            others,
            refitted,
            candidates,
            scored_whole,
        } = *reading;
        // What the subject is now: its rule, or the end of it.
        let (rule, ended) = match subject {
            Subject::Segment { id, .. } => {
                let segment = SegmentId::parse(id)
                    .ok()
                    .map(|id| shared.store.get_segment(&id))
                    .transpose()?
                    .flatten();
                match segment {
                    Some(segment) => (segment.filter, false),
                    None => (String::new(), true),
                }
            }
            Subject::Personas => (catalog_rule(catalog), false),
        };
        let state = self.subjects.get_mut(subject).expect("a known subject");
        let rule_changed = !ended && state.rule != rule;
        if rule_changed {
            if let Subject::Segment { .. } = subject {
                state.compiled = Some(compile_rule(&rule)?);
            }
            state.rule = rule.clone();
        }
        let compiled = match (&state.compiled, subject) {
            (Some(compiled), _) => compiled.clone(),
            (None, Subject::Personas) => Predicate::Const(true),
            // Not compiled at load: compiled now, or the subject waits.
            (None, Subject::Segment { .. }) if !ended => {
                let compiled = compile_rule(&state.rule)?;
                state.compiled = Some(compiled.clone());
                compiled
            }
            (None, Subject::Segment { .. }) => Predicate::Const(false),
        };
        // The rows whose code changed: (row, was, is), in order.
        let scores = match subject {
            Subject::Segment { .. } => reads_scores(&compiled),
            Subject::Personas => catalog.rules.iter().any(reads_scores),
        };
        let changed = match candidates {
            // A candidate's code now, read for the customer alone; a row
            // whose scores alone moved, only if the rule reads a score.
            Some(candidates) if !(ended || rule_changed || scores && scored_whole) => {
                let mut codes = Vec::with_capacity(candidates.len());
                for (row, features, by_scores) in candidates {
                    if *by_scores && !scores {
                        continue;
                    }
                    let code =
                        self.code_of(frame, subject, &compiled, catalog, *row, features.as_ref());
                    codes.push((*row, code));
                }
                let state = self.subjects.get_mut(subject).expect("a known subject");
                let mut changed = Vec::new();
                for (row, is) in codes {
                    let row = row as usize;
                    let was = state.codes.get(row);
                    if was != is {
                        state.codes.set(row, is);
                        changed.push((row, was, is));
                    }
                }
                changed
            }
            _ => {
                let now = if ended {
                    Members::empty(matches!(subject, Subject::Personas))
                } else {
                    self.members_now(frame, subject, &compiled, catalog)
                };
                let state = self.subjects.get_mut(subject).expect("a known subject");
                let before = std::mem::replace(&mut state.codes, now);
                state.codes.changed_from(&before)
            }
        };
        let state = self.subjects.get_mut(subject).expect("a known subject");
        let ghosts = std::mem::take(&mut state.ghosts);
        let index = frame.index;
        // Relative scores move with other customers' writes: a change no
        // write of the customer's own explains is put down to them when
        // there were writes, the score bounds moved and the rule (for
        // personas, the rule of either persona) reads a score.
        // Likewise predictions move with a new fit.
        let reads_in = |was: u32, is: u32, test: fn(&Predicate) -> bool| match subject {
            Subject::Segment { .. } => test(&compiled),
            Subject::Personas => [was, is].iter().any(|&code| {
                let personas = catalog.catalog.personas.iter().zip(&catalog.rules);
                personas
                    .filter(|(persona, _)| persona.id == self.names[code as usize])
                    .any(|(_, rule)| test(rule))
            }),
        };
        let cause_of = |customer: &str, was: u32, is: u32| -> Cause {
            if ended || rule_changed {
                return match subject {
                    Subject::Personas => Cause::CatalogChanged,
                    Subject::Segment { .. } => Cause::SegmentChanged,
                };
            }
            match touched.causes.get(customer) {
                Some(&cause) => cause,
                None if others && reads_in(was, is, reads_scores) => Cause::OtherCustomers,
                None if refitted && reads_in(was, is, reads_predictions) => Cause::OtherCustomers,
                None => Cause::Clock,
            }
        };
        // Changes by customer id: an erased customer created again has two
        // rows, which net out to their place now.
        let mut by_customer: BTreeMap<String, (u32, u32)> = BTreeMap::new();
        for (row, was, is) in changed {
            let id = index.id_at(row as u32);
            let id = if id.is_empty() {
                match touched.erased.get(&(row as u32)) {
                    Some(id) => id.as_str(),
                    None => continue,
                }
            } else {
                id
            };
            let entry = by_customer.entry(id.to_owned()).or_insert((0, 0));
            if was != 0 {
                entry.0 = was;
            }
            if is != 0 {
                entry.1 = is;
            }
        }
        for (id, persona) in ghosts {
            let was = self.codes_by_name.get(&persona).copied().unwrap_or(1);
            by_customer.entry(id).or_insert((0, 0)).0 = was.max(1);
        }
        let mut entered = Vec::new();
        let mut left = Vec::new();
        for (customer, (was, is)) in by_customer {
            if was == is {
                // Erased and created again, in the same place: their
                // earlier records are gone, so they enter again.
                if touched.causes.get(&customer) == Some(&Cause::Erasure) && is != 0 {
                    entered.push(self.change(subject, customer, 0, is, Cause::Profile));
                }
                continue;
            }
            let cause = cause_of(&customer, was, is);
            let change = self.change(subject, customer, was, is, cause);
            if matches!(subject, Subject::Segment { .. }) && is == 0 {
                left.push(change);
            } else {
                entered.push(change);
            }
        }
        entered.extend(left);
        if entered.is_empty() && !rule_changed && !ended {
            return Ok(None);
        }
        Ok(Some(Record {
            subject: subject.clone(),
            at,
            changes: entered,
            rule: rule_changed.then_some(rule),
            ended,
        }))
    }

    fn change(
        &self,
        subject: &Subject,
        customer: String,
        was: u32,
        is: u32,
        cause: Cause,
    ) -> Change {
        Change {
            customer,
            entered: is != 0,
            from: self.name(was, subject),
            to: self.name(is, subject),
            cause,
        }
    }

    /// Removes the erased customers from every record and checkpoint;
    /// returns the rewrites, and per subject the erased customers its
    /// records named, with the persona they last moved to.
    #[allow(clippy::type_complexity)]
    fn scrub(
        &self,
        shared: &Shared,
        erased: &HashSet<String>,
    ) -> Result<(
        Vec<HistoryWrite>,
        BTreeMap<Subject, BTreeMap<String, String>>,
    )> {
        let mut writes = Vec::new();
        let mut found: BTreeMap<Subject, BTreeMap<String, String>> = BTreeMap::new();
        let mut after = self.pruned;
        loop {
            let records = shared.store.history_after(after, 256)?;
            let Some(&(last, _)) = records.last() else {
                break;
            };
            for (seq, bytes) in records {
                let mut record: Record = decode(&bytes)?;
                let mut changed = false;
                // Blanked in place: a cursor inside a record counts its
                // changes, so none may move.
                for change in &mut record.changes {
                    if erased.contains(&change.customer) {
                        found
                            .entry(record.subject.clone())
                            .or_default()
                            .insert(std::mem::take(&mut change.customer), change.to.clone());
                        changed = true;
                    }
                }
                if changed {
                    writes.push(HistoryWrite::Rewrite(seq, encode(&record)?));
                }
            }
            after = last;
        }
        for (key, bytes) in shared.store.history_checkpoints()? {
            let mut checkpoint: Checkpoint = decode(&bytes)?;
            let before = checkpoint.members.len();
            checkpoint
                .members
                .retain(|(customer, _)| !erased.contains(customer));
            if checkpoint.members.len() != before {
                writes.push(HistoryWrite::Checkpoint(key, encode(&checkpoint)?));
            }
        }
        Ok((writes, found))
    }

    /// The members of a subject, with their personas, in id order.
    pub(super) fn members_of(
        &self,
        index: &FeatureIndex,
        subject: &Subject,
    ) -> Vec<(String, String)> {
        let state = &self.subjects[subject];
        let mut members: Vec<(String, String)> = state
            .codes
            .rows()
            .map(|(row, code)| (index.id_at(row as u32).to_owned(), self.name(code, subject)))
            .filter(|(id, _)| !id.is_empty())
            .chain(state.ghosts.iter().cloned())
            .collect();
        members.sort_unstable();
        members
    }

    /// The members `codes` hold for a subject, with its ghosts, with their
    /// personas, in no order; `None` if the index forgot one (erased since
    /// `codes` were found).
    fn member_list(
        &self,
        index: &FeatureIndex,
        subject: &Subject,
        codes: &Members,
    ) -> Option<Vec<(String, String)>> {
        let state = &self.subjects[subject];
        codes
            .rows()
            .map(|(row, code)| {
                let id = index.id_at(row as u32);
                (!id.is_empty()).then(|| (id.to_owned(), self.name(code, subject)))
            })
            .chain(state.ghosts.iter().cloned().map(Some))
            .collect()
    }

    /// Checkpoints of the subjects that changed (their members as the
    /// evaluation left them), and the records retention drops, never past
    /// `prunable`, the last record before this evaluation's.
    fn maintain(
        &mut self,
        shared: &Shared,
        checkpoints: Vec<(Subject, Vec<(String, String)>)>,
        prunable: u64,
    ) -> Result<Vec<HistoryWrite>> {
        self.maintained = Instant::now();
        self.written = 0;
        let mut writes = Vec::new();
        for (subject, members) in checkpoints {
            let Some(state) = self.subjects.get_mut(&subject) else {
                continue;
            };
            state.dirty = false;
            let checkpoint = Checkpoint {
                subject: subject.clone(),
                seq: self.seq,
                rule: state.rule.clone(),
                members,
            };
            writes.push(HistoryWrite::Checkpoint(
                subject.key(),
                encode(&checkpoint)?,
            ));
        }
        // Every subject now replays from a checkpoint at or after the last
        // record, so any record may go.
        let settings = &shared.watch.settings;
        let cutoff = shared
            .watch
            .now()
            .as_nanos()
            .saturating_sub(settings.retention.as_nanos().min(i64::MAX as u128) as i64);
        let mut total: u64 = self.sizes.iter().map(|(_, size, _)| size).sum();
        let mut prune = None;
        while let Some(&(seq, size, at)) = self.sizes.front() {
            if seq > prunable || (total <= settings.retention_bytes && at >= cutoff) {
                break;
            }
            total -= size;
            prune = Some(seq);
            self.sizes.pop_front();
        }
        if let Some(seq) = prune {
            writes.push(HistoryWrite::PruneThrough(seq));
            self.pruned = seq;
        }
        Ok(writes)
    }
}
