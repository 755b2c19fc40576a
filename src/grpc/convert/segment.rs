//! Segments and what they select: saved segments in and out, breakdown
//! dimensions, breakdowns and previews.

use crate::domain::error::echo;
use crate::domain::rules::{self, Variable};
use crate::domain::segment::{Segment, SegmentChanges, SegmentId};
use crate::domain::{CurrencyCode, Error, Timestamp, Violations};
use crate::engine::{compile_filter, segment_etag, Breakdown, Preview, MAX_DIMENSIONS};
use crate::grpc::check::{collected, All, Checked};
use crate::grpc::pb;

use super::{average, customer_name, money, timestamp_to_proto};

/// Sample size of PreviewSegment when none is asked for.
const DEFAULT_SAMPLE: usize = 10;
/// The largest sample PreviewSegment gives.
const MAX_SAMPLE: usize = 100;
/// The longest display name of a segment.
const MAX_DISPLAY_NAME: usize = 200;
/// The longest description of a segment.
const MAX_DESCRIPTION: usize = 2000;

/// A saved segment as the API shows it.
pub fn segment_to_proto(segment: &Segment) -> pb::Segment {
    pb::Segment {
        name: segment.id.name(),
        display_name: segment.display_name.clone(),
        description: segment.description.clone(),
        filter: segment.filter.clone(),
        revision: segment.revision as i64,
        create_time: Some(timestamp_to_proto(segment.create_time)),
        update_time: Some(timestamp_to_proto(segment.update_time)),
        etag: segment_etag(segment),
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

/// A segment to create, with the checked `id`; its revision and times are
/// the engine's to set.
pub fn new_segment_from_proto(
    id: Checked<SegmentId>,
    segment: Option<pb::Segment>,
) -> Checked<Segment> {
    let segment = match segment {
        Some(segment) => {
            let mut violations = Violations::default();
            check_texts(&segment, &mut violations);
            if segment.filter.trim().is_empty() {
                violations.add(
                    "segment.filter",
                    "required: a rule such as features.frequency == \"FREQUENT_CUSTOMER\"",
                );
            } else {
                violations.check("segment.filter", compile_filter(&segment.filter));
            }
            collected(segment, violations)
        }
        None => Err(Error::invalid("segment", "required")),
    };
    let (id, segment) = (id, segment).all()?;
    let now = Timestamp::now();
    Ok(Segment {
        id,
        display_name: segment.display_name,
        description: segment.description,
        filter: segment.filter,
        revision: 0,
        create_time: now,
        update_time: now,
    })
}

impl SegmentChanges {
    /// The changes `paths` name (AIP-134), or those set in `segment` when
    /// there are no paths.
    pub fn from_proto(segment: pb::Segment, paths: &[String]) -> Checked<Self> {
        let mut violations = Violations::default();
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
                    format!(
                        "{} cannot be changed; the fields are display_name, description and filter",
                        echo(other)
                    ),
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
        let changes = SegmentChanges {
            display_name: display_name.then_some(segment.display_name),
            description: description.then_some(segment.description),
            filter: filter.then_some(segment.filter),
        };
        collected(changes, violations)
    }
}

/// Breakdown dimensions: known variables that name a group.
pub fn dimensions_from_proto(names: &[String]) -> Checked<Vec<Variable>> {
    let mut violations = Violations::default();
    if names.is_empty() || names.len() > MAX_DIMENSIONS {
        violations.add(
            "dimensions",
            format!("give 1 to {MAX_DIMENSIONS} dimensions, got {}", names.len()),
        );
    }
    let mut found = Vec::new();
    // Past the limit the count alone is refused: no name is looked at.
    for (index, name) in names.iter().enumerate().take(MAX_DIMENSIONS) {
        match rules::parse_variable(name) {
            Ok(variable) if rules::is_dimension(&variable) => found.push(variable),
            Ok(_) => violations.add(
                format!("dimensions[{index}]"),
                format!(
                    "{name} is a number or a bool, not a dimension; the dimensions are {}",
                    rules::dimension_names().join(", ")
                ),
            ),
            Err(error) => violations.add(format!("dimensions[{index}]"), error.message),
        }
    }
    collected(found, violations)
}

/// A breakdown as the API shows it.
pub fn breakdown_to_proto(
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

/// The sample size of a preview: `requested`, or the default for 0.
pub fn sample_size(requested: i32) -> Checked<usize> {
    match usize::try_from(requested) {
        Ok(0) => Ok(DEFAULT_SAMPLE),
        Ok(size) if size <= MAX_SAMPLE => Ok(size),
        _ => Err(Error::invalid(
            "sample_size",
            format!("0 to {MAX_SAMPLE}, got {requested}"),
        )),
    }
}

/// A preview as the API shows it.
pub fn preview_to_proto(preview: Preview) -> pb::PreviewSegmentResponse {
    pb::PreviewSegmentResponse {
        member_count: preview.members as i64,
        excluded_count: preview.excluded as i64,
        sample: preview.sample.iter().map(|id| customer_name(id)).collect(),
        entering_count: preview.entering as i64,
        leaving_count: preview.leaving as i64,
        evaluation_time: Some(timestamp_to_proto(preview.at)),
    }
}

/// The rule language's variables and operators, as the API shows them.
pub fn rule_language_to_proto() -> pb::DescribeRuleLanguageResponse {
    pb::DescribeRuleLanguageResponse {
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
    }
}

/// A segment's exported members, `batch` to a message.
pub fn member_batches_to_proto(
    ids: &[String],
    batch: usize,
    segment: &Segment,
    at: Timestamp,
) -> Vec<pb::ExportSegmentMembersResponse> {
    ids.chunks(batch)
        .map(|chunk| pb::ExportSegmentMembersResponse {
            customers: chunk.iter().map(|id| customer_name(id)).collect(),
            segment_revision: segment.revision as i64,
            evaluation_time: Some(timestamp_to_proto(at)),
        })
        .collect()
}
