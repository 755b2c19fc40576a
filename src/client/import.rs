//! `segmentd import`: loads customers and activity from CSV or JSON Lines
//! files into a running server, through the same gRPC API as any client.
//!
//! Rows go in batches. A row that cannot be read, or that the server refuses
//! (its field violations name the row's place in the batch), is reported
//! with its line number and skipped, and the rest of the batch is sent
//! again; under `--strict` the first bad row stops the import instead.

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use tonic::transport::Endpoint;
use tonic::Code;
use tonic_types::StatusExt;

use super::channel::{BearerToken, Connection};
use super::rows::{self, Event, Fields};
use crate::grpc::pb::{
    self, activity_service_client::ActivityServiceClient,
    customer_service_client::CustomerServiceClient,
};

/// What to import, and how.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Server address.
    pub addr: String,
    /// A file of customers.
    pub customers: Option<PathBuf>,
    /// A file of purchases and engagement events.
    pub activity: Option<PathBuf>,
    /// Stop at the first bad row instead of skipping it.
    pub strict: bool,
    /// Rows per request.
    pub batch_size: usize,
    /// The bearer token every call carries, if any.
    pub token: Option<BearerToken>,
}

/// What an import did with one file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FileSummary {
    /// Rows read.
    pub read: u64,
    /// Rows stored for the first time.
    pub created: u64,
    /// Rows that replaced stored customers, or repeated recorded events.
    pub repeated: u64,
    /// Rows skipped as bad.
    pub skipped: u64,
}

/// Reads rows, with their line numbers, from CSV (with a header) or JSON Lines.
enum RowReader {
    Csv(csv::Reader<File>),
    JsonLines {
        lines: std::io::Lines<BufReader<File>>,
        line: u64,
        bytes: u64,
    },
}

impl RowReader {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        match extension.as_str() {
            "csv" => Ok(RowReader::Csv(
                csv::ReaderBuilder::new()
                    .trim(csv::Trim::All)
                    .from_reader(file),
            )),
            "jsonl" | "ndjson" | "json" => Ok(RowReader::JsonLines {
                lines: BufReader::new(file).lines(),
                line: 0,
                bytes: 0,
            }),
            _ => bail!("{}: expected a .csv or a .jsonl file", path.display()),
        }
    }

    /// Bytes read so far.
    fn position(&self) -> u64 {
        match self {
            RowReader::Csv(reader) => reader.position().byte(),
            RowReader::JsonLines { bytes, .. } => *bytes,
        }
    }

    /// The next row and its line number; `Err` holds why it cannot be read.
    fn next_row(&mut self) -> anyhow::Result<Option<(u64, Result<Fields, String>)>> {
        match self {
            RowReader::Csv(reader) => {
                let headers = reader.headers()?.clone();
                let mut record = csv::StringRecord::new();
                match reader.read_record(&mut record) {
                    Ok(false) => Ok(None),
                    Ok(true) => {
                        let line = record.position().map_or(0, |p| p.line());
                        let fields = headers
                            .iter()
                            .map(str::to_owned)
                            .zip(record.iter().map(str::to_owned))
                            .collect();
                        Ok(Some((line, Ok(fields))))
                    }
                    Err(error) => {
                        let line = error.position().map_or(0, |p| p.line());
                        Ok(Some((line, Err(error.to_string()))))
                    }
                }
            }
            RowReader::JsonLines { lines, line, bytes } => loop {
                let Some(text) = lines.next().transpose()? else {
                    return Ok(None);
                };
                *line += 1;
                *bytes += text.len() as u64 + 1;
                if text.trim().is_empty() {
                    continue;
                }
                let fields =
                    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text)
                    {
                        Ok(object) => object
                            .into_iter()
                            .map(|(key, value)| match value {
                                serde_json::Value::String(text) => Ok((key, text)),
                                serde_json::Value::Null => Ok((key, String::new())),
                                serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                                    Ok((key, value.to_string()))
                                }
                                _ => Err(format!("{key}: expected a string, number or boolean")),
                            })
                            .collect(),
                        Err(error) => Err(format!("not a JSON object: {error}")),
                    };
                return Ok(Some((*line, fields)));
            },
        }
    }
}

/// Reports bad rows, and fails on the first under `--strict`.
struct BadRows<'a> {
    progress: &'a ProgressBar,
    path: &'a Path,
    strict: bool,
}

impl BadRows<'_> {
    fn report(&self, line: u64, reason: &str, summary: &mut FileSummary) -> anyhow::Result<()> {
        if self.strict {
            bail!("{}:{line}: {reason}", self.path.display());
        }
        let message = format!("skipped {}:{line}: {reason}", self.path.display());
        // A hidden bar (not a terminal) prints nothing of its own.
        if self.progress.is_hidden() {
            eprintln!("{message}");
        } else {
            self.progress.println(message);
        }
        summary.skipped += 1;
        Ok(())
    }
}

/// The bad rows named by a refusal: place in `list` → descriptions.
fn refused_rows(status: &tonic::Status, list: &str) -> BTreeMap<usize, Vec<String>> {
    let mut rows: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let Some(bad_request) = status.get_details_bad_request() else {
        return rows;
    };
    for violation in bad_request.field_violations {
        let place = violation
            .field
            .strip_prefix(list)
            .and_then(|rest| rest.strip_prefix('['))
            .and_then(|rest| rest.split_once(']'))
            .and_then(|(index, _)| index.parse().ok());
        if let Some(place) = place {
            rows.entry(place)
                .or_default()
                .push(format!("{}: {}", violation.field, violation.description));
        }
    }
    rows
}

fn progress_bar(path: &Path, total: u64) -> ProgressBar {
    let progress = ProgressBar::new(total);
    progress.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    progress.set_message(path.display().to_string());
    progress
}

/// What the server did with one batch.
enum Sent {
    /// Stored: rows new to the server, and rows it already had.
    Stored { created: u64, repeated: u64 },
    /// Refused for these rows (places in the batch), with the reasons.
    Refused(BTreeMap<usize, Vec<String>>),
}

/// Sorts a failed call into a refusal of some rows, or an error.
fn refusal(
    status: tonic::Status,
    refused: BTreeMap<usize, Vec<String>>,
    what: &str,
) -> anyhow::Result<Sent> {
    if status.code() != Code::InvalidArgument || refused.is_empty() {
        return Err(status).with_context(|| format!("the server refused a batch of {what}"));
    }
    Ok(Sent::Refused(refused))
}

/// Reads `path` a batch at a time, parses each row with `parse` and sends
/// each batch with `send`; a refused row is reported and the rest of its
/// batch sent again.
async fn import_file<T, Fut>(
    path: &Path,
    options: &ImportOptions,
    parse: impl Fn(&Fields) -> Result<T, String>,
    mut send: impl FnMut(&[(u64, T)]) -> Fut,
) -> anyhow::Result<FileSummary>
where
    Fut: Future<Output = anyhow::Result<Sent>>,
{
    let mut reader = RowReader::open(path)?;
    let progress = progress_bar(path, std::fs::metadata(path)?.len());
    let bad = BadRows {
        progress: &progress,
        path,
        strict: options.strict,
    };
    let mut summary = FileSummary::default();
    let mut batch: Vec<(u64, T)> = Vec::new();
    loop {
        let next = reader.next_row()?;
        let done = next.is_none();
        if let Some((line, row)) = next {
            summary.read += 1;
            match row.and_then(|fields| parse(&fields)) {
                Ok(item) => batch.push((line, item)),
                Err(reason) => bad.report(line, &reason, &mut summary)?,
            }
        }
        if batch.len() >= options.batch_size || (done && !batch.is_empty()) {
            while !batch.is_empty() {
                match send(&batch).await? {
                    Sent::Stored { created, repeated } => {
                        summary.created += created;
                        summary.repeated += repeated;
                        batch.clear();
                    }
                    Sent::Refused(refused) => {
                        for (place, reasons) in &refused {
                            bad.report(batch[*place].0, &reasons.join("; "), &mut summary)?;
                        }
                        for place in refused.keys().rev() {
                            batch.remove(*place);
                        }
                    }
                }
            }
            progress.set_position(reader.position());
        }
        if done {
            break;
        }
    }
    progress.finish_and_clear();
    Ok(summary)
}

async fn import_customers(
    channel: Connection,
    path: &Path,
    options: &ImportOptions,
) -> anyhow::Result<FileSummary> {
    let client = CustomerServiceClient::new(channel);
    import_file(path, options, rows::customer, |batch| {
        let mut client = client.clone();
        let request = pb::ImportCustomersRequest {
            customers: batch.iter().map(|(_, customer)| customer.clone()).collect(),
        };
        async move {
            match client.import_customers(tokio_stream::iter([request])).await {
                Ok(response) => {
                    let response = response.into_inner();
                    Ok(Sent::Stored {
                        created: response.created_count as u64,
                        repeated: response.updated_count as u64,
                    })
                }
                Err(status) => {
                    let refused = refused_rows(&status, "customers");
                    refusal(status, refused, "customers")
                }
            }
        }
    })
    .await
}

async fn import_activity(
    channel: Connection,
    path: &Path,
    options: &ImportOptions,
) -> anyhow::Result<FileSummary> {
    let client = ActivityServiceClient::new(channel);
    import_file(path, options, rows::event, |batch| {
        let mut client = client.clone();
        // Where each purchase and each engagement sits in the batch.
        let mut request = pb::RecordActivityRequest::default();
        let (mut purchase_places, mut engagement_places) = (Vec::new(), Vec::new());
        for (place, (_, event)) in batch.iter().enumerate() {
            match event {
                Event::Purchase(purchase) => {
                    purchase_places.push(place);
                    request.purchases.push(purchase.clone());
                }
                Event::Engagement(engagement) => {
                    engagement_places.push(place);
                    request.engagements.push(engagement.clone());
                }
            }
        }
        async move {
            match client.record_activity(request).await {
                Ok(response) => {
                    let response = response.into_inner();
                    Ok(Sent::Stored {
                        created: response.accepted_count as u64,
                        repeated: response.duplicate_count as u64,
                    })
                }
                Err(status) => {
                    let mut refused: BTreeMap<usize, Vec<String>> = BTreeMap::new();
                    for (list, places) in [
                        ("purchases", &purchase_places),
                        ("engagements", &engagement_places),
                    ] {
                        for (index, reasons) in refused_rows(&status, list) {
                            if let Some(&place) = places.get(index) {
                                refused.entry(place).or_default().extend(reasons);
                            }
                        }
                    }
                    refusal(status, refused, "events")
                }
            }
        }
    })
    .await
}

/// Runs an import; returns the summaries of the customer and activity files.
pub async fn run(
    options: &ImportOptions,
) -> anyhow::Result<(Option<FileSummary>, Option<FileSummary>)> {
    run_at(super::channel::endpoint(&options.addr, None)?, options).await
}

/// Runs an import into the server at `endpoint` (`options.addr` names it
/// in errors); returns the summaries of the customer and activity files.
pub async fn run_at(
    endpoint: Endpoint,
    options: &ImportOptions,
) -> anyhow::Result<(Option<FileSummary>, Option<FileSummary>)> {
    if options.customers.is_none() && options.activity.is_none() {
        bail!("nothing to import: give --customers FILE, --activity FILE or both");
    }
    let channel = super::channel::connect(endpoint, options.token.as_ref())
        .await
        .with_context(|| format!("cannot reach {}", options.addr))?;
    // Customers first: events refer to them.
    let customers = match &options.customers {
        Some(path) => Some(import_customers(channel.clone(), path, options).await?),
        None => None,
    };
    let activity = match &options.activity {
        Some(path) => Some(import_activity(channel, path, options).await?),
        None => None,
    };
    Ok((customers, activity))
}
