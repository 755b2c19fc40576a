//! `segmentd.v1.SegmentationService`: check and convert the request, call
//! the engine, map the result.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use tonic::{Request, Response, Status};

use super::convert::{timestamp_from_proto, timestamp_to_proto};
use super::customers::page_size;
use super::pb::segmentation_service_server::SegmentationService;
use super::pb::{self};
use super::status::to_status;
use super::{ready, ApiLimits, EngineSlot};
use crate::domain::rules::{self, Channel, Variable};
use crate::domain::segment::{Segment, SegmentId};
use crate::domain::{CurrencyCode, Error, Timestamp, Violations};
use crate::engine::{compile_filter, Breakdown, MAX_DIMENSIONS};

/// Marks member page tokens of this format.
const MEMBER_TOKEN_VERSION: &str = "m1:";
/// Marks segment page tokens of this format.
const SEGMENT_TOKEN_VERSION: &str = "s1:";
/// Sample size of PreviewSegment when none is asked for, and the most.
const DEFAULT_SAMPLE: usize = 10;
const MAX_SAMPLE: usize = 100;
/// Members per export message when none is asked for, and the most.
const DEFAULT_EXPORT_BATCH: usize = 1000;
const MAX_EXPORT_BATCH: usize = 10_000;
/// The longest display name and description of a segment.
const MAX_DISPLAY_NAME: usize = 200;
const MAX_DESCRIPTION: usize = 2000;

/// The SegmentationService handlers.
#[derive(Debug, Clone)]
pub struct SegmentationApi {
    /// The engine, once ready.
    engine: EngineSlot,
    /// Input limits.
    limits: ApiLimits,
}

impl SegmentationApi {
    /// Handlers over `engine`, enforcing `limits`.
    pub fn new(engine: EngineSlot, limits: ApiLimits) -> Self {
        SegmentationApi { engine, limits }
    }
}

/// The request's evaluation time, or now when unset.
pub(super) fn evaluation_time(
    time: Option<&prost_types::Timestamp>,
    v: &mut Violations,
) -> Timestamp {
    match time {
        Some(time) => v
            .check("evaluation_time", timestamp_from_proto(time))
            .unwrap_or_else(Timestamp::now),
        None => Timestamp::now(),
    }
}

/// A sum of minor units as money, saturating at the bounds of an i64.
pub(super) fn money(minor: i128, currency: CurrencyCode) -> pb::Money {
    pb::Money {
        currency_code: currency.to_string(),
        minor_units: minor.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
    }
}

fn breakdown_to_proto(
    breakdown: Breakdown,
    currency: CurrencyCode,
) -> pb::BreakdownCustomersResponse {
    let total = breakdown.total;
    pb::BreakdownCustomersResponse {
        groups: breakdown
            .groups
            .into_iter()
            .map(|group| pb::CustomerGroup {
                share: group.count as f64 / total.max(1) as f64,
                total_spend: Some(money(group.spend_minor, currency)),
                average_spend: Some(money(average(group.spend_minor, group.count), currency)),
                average_purchase_count: group.purchases as f64 / group.count.max(1) as f64,
                customer_count: group.count as i64,
                values: group.values,
            })
            .collect(),
        total_count: total as i64,
        excluded_count: breakdown.excluded as i64,
        evaluation_time: Some(timestamp_to_proto(breakdown.at)),
    }
}

/// Items per export message: `requested`, or the default for 0.
pub(super) fn export_batch(requested: i32, v: &mut Violations) -> usize {
    match usize::try_from(requested) {
        Ok(0) => DEFAULT_EXPORT_BATCH,
        Ok(size) if size <= MAX_EXPORT_BATCH => size,
        _ => {
            v.add(
                "batch_size",
                format!("0 to {MAX_EXPORT_BATCH}, got {requested}"),
            );
            1
        }
    }
}

/// `total` over `count`, to the nearest unit.
pub(super) fn average(total: i128, count: u64) -> i128 {
    let count = i128::from(count.max(1));
    (2 * total + count).div_euclid(2 * count)
}

fn segment_to_proto(segment: &Segment) -> pb::Segment {
    pb::Segment {
        name: segment.id.name(),
        display_name: segment.display_name.clone(),
        description: segment.description.clone(),
        filter: segment.filter.clone(),
        revision: segment.revision as i64,
        create_time: Some(timestamp_to_proto(segment.create_time)),
        update_time: Some(timestamp_to_proto(segment.update_time)),
    }
}

fn check_texts(segment: &pb::Segment, v: &mut Violations) {
    if segment.display_name.chars().count() > MAX_DISPLAY_NAME {
        v.add(
            "segment.display_name",
            format!("at most {MAX_DISPLAY_NAME} characters"),
        );
    }
    if segment.description.chars().count() > MAX_DESCRIPTION {
        v.add(
            "segment.description",
            format!("at most {MAX_DESCRIPTION} characters"),
        );
    }
}

fn parse_segment_name(field: &str, name: &str) -> Result<SegmentId, Status> {
    SegmentId::from_name(name).map_err(|description| to_status(Error::invalid(field, description)))
}

pub fn channel_from_proto(channel: i32) -> Result<Option<Channel>, String> {
    match pb::Channel::try_from(channel) {
        Ok(pb::Channel::Unspecified) => Ok(None),
        Ok(pb::Channel::Email) => Ok(Some(Channel::Email)),
        Ok(pb::Channel::Sms) => Ok(Some(Channel::Sms)),
        Ok(pb::Channel::Push) => Ok(Some(Channel::Push)),
        Ok(pb::Channel::Ads) => Ok(Some(Channel::Ads)),
        Err(_) => Err(format!("{channel} is not a Channel value")),
    }
}

fn encode_token(version: &str, text: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{version}{text}"))
}

fn decode_token(token: &str, version: &str, call: &str) -> Result<Option<String>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        Error::invalid(
            "page_token",
            format!("not a page token from a previous {call} response"),
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix(version)
        .map(str::to_owned)
        .map(Some)
        .ok_or_else(invalid)
}

/// Checks breakdown dimensions: known variables that name a group.
fn dimensions(names: &[String], v: &mut Violations) -> Vec<Variable> {
    if names.is_empty() || names.len() > MAX_DIMENSIONS {
        v.add(
            "dimensions",
            format!("give 1 to {MAX_DIMENSIONS} dimensions, got {}", names.len()),
        );
    }
    let mut found = Vec::new();
    for (index, name) in names.iter().enumerate() {
        match rules::parse_variable(name) {
            Ok(variable) if rules::is_dimension(&variable) => found.push(variable),
            Ok(_) => v.add(
                format!("dimensions[{index}]"),
                format!(
                    "{name} is a number or a bool, not a dimension; the dimensions are {}",
                    rules::dimension_names().join(", ")
                ),
            ),
            Err(error) => v.add(format!("dimensions[{index}]"), error.message),
        }
    }
    found
}

#[tonic::async_trait]
impl SegmentationService for SegmentationApi {
    async fn breakdown_customers(
        &self,
        request: Request<pb::BreakdownCustomersRequest>,
    ) -> Result<Response<pb::BreakdownCustomersResponse>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let dimensions = dimensions(&request.dimensions, &mut violations);
        let rule = violations.check("filter", compile_filter(&request.filter));
        let at = evaluation_time(request.evaluation_time.as_ref(), &mut violations);
        let rule = violations.into_result(rule).map_err(to_status)?;
        let Some(rule) = rule else {
            return Err(to_status(Error::internal("checked filter missing")));
        };
        let breakdown = engine
            .breakdown(dimensions, rule, at)
            .await
            .map_err(to_status)?;
        Ok(Response::new(breakdown_to_proto(
            breakdown,
            engine.settings().reporting_currency,
        )))
    }

    async fn describe_rule_language(
        &self,
        _request: Request<pb::DescribeRuleLanguageRequest>,
    ) -> Result<Response<pb::DescribeRuleLanguageResponse>, Status> {
        Ok(Response::new(pb::DescribeRuleLanguageResponse {
            variables: rules::variables()
                .into_iter()
                .map(|doc| pb::RuleVariable {
                    name: doc.name.to_owned(),
                    r#type: doc.kind.to_owned(),
                    description: doc.description.to_owned(),
                    example: doc.example.to_owned(),
                    enum_values: doc.enum_values.iter().map(|v| (*v).to_owned()).collect(),
                    optional: doc.optional,
                    dimension: doc.dimension,
                })
                .collect(),
            operators: rules::operators().into_iter().map(str::to_owned).collect(),
        }))
    }

    async fn create_segment(
        &self,
        request: Request<pb::CreateSegmentRequest>,
    ) -> Result<Response<pb::Segment>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.check("segment_id", SegmentId::parse(&request.segment_id));
        let Some(segment) = request.segment else {
            violations.add("segment", "required");
            return Err(to_status(Error::InvalidArgument(
                violations
                    .into_result(())
                    .err()
                    .map_or_else(Vec::new, |error| match error {
                        Error::InvalidArgument(found) => found,
                        _ => Vec::new(),
                    }),
            )));
        };
        check_texts(&segment, &mut violations);
        if segment.filter.trim().is_empty() {
            violations.add(
                "segment.filter",
                "required: a rule such as features.frequency == \"FREQUENT_CUSTOMER\"",
            );
        } else {
            violations.check("segment.filter", compile_filter(&segment.filter));
        }
        let id = violations.into_result(id).map_err(to_status)?;
        let Some(id) = id else {
            return Err(to_status(Error::internal("checked id missing")));
        };
        let now = Timestamp::now();
        let saved = engine
            .create_segment(Segment {
                id,
                display_name: segment.display_name,
                description: segment.description,
                filter: segment.filter,
                revision: 0,
                create_time: now,
                update_time: now,
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(segment_to_proto(&saved)))
    }

    async fn get_segment(
        &self,
        request: Request<pb::GetSegmentRequest>,
    ) -> Result<Response<pb::Segment>, Status> {
        let engine = ready(&self.engine)?;
        let id = parse_segment_name("name", &request.into_inner().name)?;
        let segment = engine.get_segment(id).await.map_err(to_status)?;
        Ok(Response::new(segment_to_proto(&segment)))
    }

    async fn list_segments(
        &self,
        request: Request<pb::ListSegmentsRequest>,
    ) -> Result<Response<pb::ListSegmentsResponse>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let page_size = page_size(request.page_size, self.limits).map_err(to_status)?;
        let after = decode_token(&request.page_token, SEGMENT_TOKEN_VERSION, "ListSegments")
            .and_then(|after| {
                after
                    .map(|id| {
                        SegmentId::parse(&id).map_err(|_| {
                            Error::invalid(
                                "page_token",
                                "not a page token from a previous ListSegments response",
                            )
                        })
                    })
                    .transpose()
            })
            .map_err(to_status)?;
        let (segments, more) = engine
            .list_segments(after, page_size)
            .await
            .map_err(to_status)?;
        let next_page_token = match segments.last() {
            Some(last) if more => encode_token(SEGMENT_TOKEN_VERSION, last.id.as_str()),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListSegmentsResponse {
            segments: segments.iter().map(segment_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn update_segment(
        &self,
        request: Request<pb::UpdateSegmentRequest>,
    ) -> Result<Response<pb::Segment>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let Some(segment) = request.segment else {
            return Err(to_status(Error::invalid("segment", "required")));
        };
        let id = parse_segment_name("segment.name", &segment.name)?;
        let mut violations = Violations::default();
        let paths = request
            .update_mask
            .map(|mask| mask.paths)
            .unwrap_or_default();
        let (mut display_name, mut description, mut filter) = (false, false, false);
        if paths.is_empty() {
            display_name = !segment.display_name.is_empty();
            description = !segment.description.is_empty();
            filter = !segment.filter.is_empty();
        }
        for (index, path) in paths.iter().enumerate() {
            match path.as_str() {
                "display_name" | "displayName" => display_name = true,
                "description" => description = true,
                "filter" => filter = true,
                "*" => (display_name, description, filter) = (true, true, true),
                other => violations.add(
                    format!("update_mask.paths[{index}]"),
                    format!("{other:?} cannot be changed; the fields are display_name, description and filter"),
                ),
            }
        }
        check_texts(&segment, &mut violations);
        if filter {
            if segment.filter.trim().is_empty() {
                violations.add("segment.filter", "a segment needs a filter");
            } else {
                violations.check("segment.filter", compile_filter(&segment.filter));
            }
        }
        violations.into_result(()).map_err(to_status)?;
        let updated = engine
            .update_segment(id, move |stored| {
                if display_name {
                    stored.display_name = segment.display_name;
                }
                if description {
                    stored.description = segment.description;
                }
                if filter {
                    stored.filter = segment.filter;
                }
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(segment_to_proto(&updated)))
    }

    async fn delete_segment(
        &self,
        request: Request<pb::DeleteSegmentRequest>,
    ) -> Result<Response<()>, Status> {
        let engine = ready(&self.engine)?;
        let id = parse_segment_name("name", &request.into_inner().name)?;
        engine.delete_segment(id).await.map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn preview_segment(
        &self,
        request: Request<pb::PreviewSegmentRequest>,
    ) -> Result<Response<pb::PreviewSegmentResponse>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let rule = violations.check("filter", compile_filter(&request.filter));
        let at = evaluation_time(request.evaluation_time.as_ref(), &mut violations);
        let sample = match usize::try_from(request.sample_size) {
            Ok(0) => DEFAULT_SAMPLE,
            Ok(size) if size <= MAX_SAMPLE => size,
            _ => {
                violations.add(
                    "sample_size",
                    format!("0 to {MAX_SAMPLE}, got {}", request.sample_size),
                );
                0
            }
        };
        let compare = if request.segment.is_empty() {
            None
        } else {
            violations.check("segment", SegmentId::from_name(&request.segment))
        };
        let rule = violations.into_result(rule).map_err(to_status)?;
        let Some(rule) = rule else {
            return Err(to_status(Error::internal("checked filter missing")));
        };
        let preview = engine
            .preview(rule, at, sample, compare)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::PreviewSegmentResponse {
            member_count: preview.members as i64,
            excluded_count: preview.excluded as i64,
            sample: preview
                .sample
                .iter()
                .map(|id| format!("customers/{id}"))
                .collect(),
            entering_count: preview.entering as i64,
            leaving_count: preview.leaving as i64,
            evaluation_time: Some(timestamp_to_proto(preview.at)),
        }))
    }

    async fn list_segment_members(
        &self,
        request: Request<pb::ListSegmentMembersRequest>,
    ) -> Result<Response<pb::ListSegmentMembersResponse>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let id = parse_segment_name("segment", &request.segment)?;
        let page_size = page_size(request.page_size, self.limits).map_err(to_status)?;
        let mut violations = Violations::default();
        let requested = evaluation_time(request.evaluation_time.as_ref(), &mut violations);
        violations.into_result(()).map_err(to_status)?;
        // A token holds the evaluation time of the first page and the last id.
        let token = decode_token(
            &request.page_token,
            MEMBER_TOKEN_VERSION,
            "ListSegmentMembers",
        )
        .map_err(to_status)?;
        let (at, after) = match token {
            None => (requested, None),
            Some(text) => {
                let invalid = || {
                    to_status(Error::invalid(
                        "page_token",
                        "not a page token from a previous ListSegmentMembers response",
                    ))
                };
                let (nanos, last) = text.split_once(':').ok_or_else(invalid)?;
                let nanos: i64 = nanos.parse().map_err(|_| invalid())?;
                let at = Timestamp::from_nanos(nanos);
                if request.evaluation_time.is_some() && requested != at {
                    return Err(to_status(Error::invalid(
                        "evaluation_time",
                        "differs from the evaluation time of the page token; leave it unset or send the first page's",
                    )));
                }
                (at, Some(last.to_owned()))
            }
        };
        let page = engine
            .segment_members(id, at, after, page_size)
            .await
            .map_err(to_status)?;
        let next_page_token = match page.ids.last() {
            Some(last) if page.more => {
                encode_token(MEMBER_TOKEN_VERSION, &format!("{}:{last}", at.as_nanos()))
            }
            _ => String::new(),
        };
        Ok(Response::new(pb::ListSegmentMembersResponse {
            customers: page
                .ids
                .iter()
                .map(|id| format!("customers/{id}"))
                .collect(),
            next_page_token,
            total_size: page.total as i64,
            evaluation_time: Some(timestamp_to_proto(at)),
        }))
    }

    type ExportSegmentMembersStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<pb::ExportSegmentMembersResponse, Status>>>;

    async fn export_segment_members(
        &self,
        request: Request<pb::ExportSegmentMembersRequest>,
    ) -> Result<Response<Self::ExportSegmentMembersStream>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let id = parse_segment_name("segment", &request.segment)?;
        let mut violations = Violations::default();
        let channel = violations.check("channel", channel_from_proto(request.channel));
        let at = evaluation_time(request.evaluation_time.as_ref(), &mut violations);
        let batch = export_batch(request.batch_size, &mut violations);
        let channel = violations
            .into_result(channel)
            .map_err(to_status)?
            .flatten();
        let (segment, ids) = engine
            .export_members(id, channel, at)
            .await
            .map_err(to_status)?;
        let revision = segment.revision as i64;
        let messages: Vec<_> = ids
            .chunks(batch)
            .map(|chunk| {
                Ok(pb::ExportSegmentMembersResponse {
                    customers: chunk.iter().map(|id| format!("customers/{id}")).collect(),
                    segment_revision: revision,
                    evaluation_time: Some(timestamp_to_proto(at)),
                })
            })
            .collect();
        Ok(Response::new(tokio_stream::iter(messages)))
    }
}
