//! Loading the change history at start-up (and after a failed
//! evaluation): every subject's checkpoint, replayed to the last record.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use super::evaluate::{catalog_rule, compile_rule, State, SubjectState};
use super::members::Members;
use super::record::{decode, encode, head_of, payload, view, Checkpoint, Record, Subject};
use crate::domain::rules::Predicate;
use crate::domain::{Result, Timestamp};
use crate::engine::frame::Frame;
use crate::engine::Shared;
use crate::store::HistoryWrite;

/// Loads the history: every subject's checkpoint, replayed to the last
/// record; the personas are followed from the start.
pub fn load(shared: &Shared) -> Result<State> {
    let history = shared.store.history_id()?;
    load_history(shared, history, shared.watch.now())
}

/// Cluster mode: loads the history if the log started one here (or the
/// snapshot this replica joined from held one); `None` if none was.
pub fn load_kept(shared: &Shared) -> Result<Option<State>> {
    let Some(history) = shared.store.stored_history_id()? else {
        return Ok(None);
    };
    load_history(shared, history, Timestamp::from_nanos(0)).map(Some)
}

/// Cluster mode: starts the history `history` at a record of the log made
/// at `at`, the same on every replica; the personas are followed from
/// their assignments then. The id goes in last, so that a crash before
/// leaves a history to start again, and all is on disk when it returns.
pub fn create(shared: &Shared, history: u64, at: Timestamp) -> Result<State> {
    let state = load_history(shared, history, at)?;
    let store = &shared.store;
    let model = shared.index().model().cloned();
    store.write_history(vec![HistoryWrite::Evaluated {
        at: state.at,
        scores: super::replicated::scores_fingerprint(state.rfm.as_ref()),
        model: super::replicated::model_fingerprint(model.as_deref()),
    }])?;
    store.set_history_id(history)?;
    store.flush()?;
    Ok(state)
}

/// A subject's members as a start finds them: those of its checkpoint,
/// borrowed from its bytes, and the changes of the records after it, by
/// customer (their persona, `None` when they left).
struct Replayed<'a> {
    rule: String,
    seq: u64,
    members: Vec<(&'a str, &'a str)>,
    changed: HashMap<String, Option<String>>,
}

/// Loads the history `history`; the personas, if not followed yet, are
/// followed from their assignments at `now`, or at the last evaluation
/// time if later.
fn load_history(shared: &Shared, history: u64, now: Timestamp) -> Result<State> {
    let store = &shared.store;
    let (pruned, last) = store.history_bounds()?;
    // The checkpoints are read in place: a checkpoint of the personas holds
    // every customer, and a start makes no string of theirs.
    let checkpoints = store.history_checkpoints()?;
    let payloads = checkpoints
        .iter()
        .map(|(_, bytes)| payload(bytes))
        .collect::<Result<Vec<_>>>()?;
    let mut lists: BTreeMap<Subject, Replayed> = BTreeMap::new();
    for bytes in &payloads {
        let checkpoint = view(bytes)?;
        lists.insert(
            checkpoint.subject,
            Replayed {
                rule: checkpoint.rule,
                seq: checkpoint.seq,
                members: checkpoint.members,
                changed: HashMap::new(),
            },
        );
    }
    let oldest = lists.values().map(|list| list.seq).min().unwrap_or(last);
    // Every record kept is read once, for retention, its head only; the
    // ones after the oldest checkpoint are replayed into the changes since
    // their subject's checkpoint.
    let mut after = pruned;
    let mut sizes = VecDeque::new();
    let mut at = store.history_evaluated_at()?;
    loop {
        let records = store.history_after(after, 1024)?;
        let Some(&(end, _)) = records.last() else {
            break;
        };
        for (seq, bytes) in records {
            if seq <= oldest {
                let (_, record_at) = head_of(&bytes)?;
                at = at.max(record_at);
                sizes.push_back((seq, bytes.len() as u64 + 9, record_at));
                continue;
            }
            let record: Record = decode(&bytes)?;
            at = at.max(record.at);
            sizes.push_back((seq, bytes.len() as u64 + 9, record.at));
            let Some(list) = lists.get_mut(&record.subject) else {
                continue;
            };
            if seq <= list.seq {
                continue;
            }
            if let Some(new_rule) = record.rule {
                list.rule = new_rule;
            }
            for change in record.changes {
                if change.customer.is_empty() {
                    continue;
                }
                let persona = change.entered.then_some(change.to);
                list.changed.insert(change.customer, persona);
            }
            if record.ended {
                lists.remove(&record.subject);
            }
        }
        after = end;
    }
    let index = shared.long_index();
    let mut state = State {
        history,
        seq: last,
        pruned,
        at,
        subjects: BTreeMap::new(),
        names: vec![String::new()],
        codes_by_name: HashMap::new(),
        rfm: None,
        maintained: Instant::now(),
        written: 0,
        sizes,
        tracker: Default::default(),
        maintenance_due: None,
    };
    // Cluster mode puts the model of the last evaluation back from its
    // fingerprint instead, at the first tick (see `replicated`).
    state.tracker.assume_model_of(&index);
    for (subject, list) in lists {
        let compiled = match &subject {
            Subject::Segment { .. } => compile_rule(&list.rule).ok(),
            Subject::Personas => None,
        };
        let personas = matches!(subject, Subject::Personas);
        let mut codes = Members::empty(personas);
        let mut ghosts = Vec::new();
        let checkpointed = list
            .members
            .iter()
            .filter(|(customer, _)| !list.changed.contains_key(*customer))
            .map(|&(customer, persona)| (customer, persona));
        let since = list
            .changed
            .iter()
            .filter_map(|(customer, persona)| Some((customer.as_str(), persona.as_deref()?)));
        for (customer, persona) in checkpointed.chain(since) {
            let code = if personas { state.code(persona) } else { 1 };
            match index.row_number(customer) {
                Some(row) => codes.set(row as usize, code),
                None => ghosts.push((customer.to_owned(), persona.to_owned())),
            }
        }
        ghosts.sort_unstable();
        let rule = list.rule;
        state.subjects.insert(
            subject,
            SubjectState {
                rule,
                compiled,
                codes,
                ghosts,
                // Records after its checkpoint may have been replayed: the
                // next checkpoint must include them before retention may
                // drop them.
                dirty: true,
            },
        );
    }
    drop(index);
    if !state.subjects.contains_key(&Subject::Personas) {
        // The personas are followed from the first start on, from their
        // assignments then.
        let catalog = shared.catalog();
        let codes = {
            let index = shared.long_index();
            state.at = state.at.max(now.as_nanos());
            let frame = Frame::new(
                &index,
                Timestamp::from_nanos(state.at),
                shared.settings.thresholds,
            );
            state.members_now(
                &frame,
                &Subject::Personas,
                &Predicate::Const(true),
                &catalog,
            )
        };
        state.subjects.insert(
            Subject::Personas,
            SubjectState {
                rule: catalog_rule(&catalog),
                compiled: None,
                codes,
                ghosts: Vec::new(),
                dirty: false,
            },
        );
        let checkpoint = Checkpoint {
            subject: Subject::Personas,
            seq: state.seq,
            rule: catalog_rule(&catalog),
            members: state.members_of(&shared.long_index(), &Subject::Personas),
        };
        store.write_history(vec![HistoryWrite::Checkpoint(
            Subject::Personas.key(),
            encode(&checkpoint)?,
        )])?;
        store.flush()?;
    }
    tracing::info!(
        subjects = state.subjects.len(),
        last_record = state.seq,
        "change history loaded"
    );
    Ok(state)
}
