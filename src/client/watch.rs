//! `segmentd watch`: who enters and leaves a saved segment, or moves
//! between personas, as it happens, one line per change, for people; and
//! the cursor to resume from when it stops.

use std::io::Write as _;
use std::pin::Pin;
use std::time::Duration;

use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::Endpoint;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use super::channel::BearerToken;
use crate::grpc::pb;
use crate::grpc::pb::membership_service_client::MembershipServiceClient;

/// How long to wait for the connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Flags of `segmentd watch`, beside the client's TLS and token flags.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Server address, e.g. `127.0.0.1:50051`.
    #[arg(long, env = "SEGMENTD_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// What to watch: `segments/ID` (or just the id), or `personas`.
    pub subject: String,
    /// With `personas`: only moves into or out of these personas; every
    /// persona when left out.
    pub persona_ids: Vec<String>,
    /// With a segment: only members who granted consent on this channel.
    #[arg(long, value_enum)]
    pub channel: Option<ChannelFlag>,
    /// Print the current members (or assignments) first, marked `=`.
    #[arg(long, conflicts_with = "cursor")]
    pub initial: bool,
    /// Resume after this cursor, as printed when a watch stops.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Stop after this many messages of changes (one per evaluation that
    /// changed anything, in parts of at most 1000 changes), after the
    /// initial members; `0` stops at the first cursor.
    #[arg(long, value_name = "N")]
    pub exit_after: Option<u64>,
    /// Also print a line for each evaluation that changed nothing.
    #[arg(long)]
    pub progress: bool,
}

/// The values of `--channel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChannelFlag {
    /// Email.
    Email,
    /// Text messages.
    Sms,
    /// Push notifications.
    Push,
    /// Advertising audiences.
    Ads,
}

impl From<ChannelFlag> for pb::Channel {
    fn from(flag: ChannelFlag) -> Self {
        match flag {
            ChannelFlag::Email => pb::Channel::Email,
            ChannelFlag::Sms => pb::Channel::Sms,
            ChannelFlag::Push => pb::Channel::Push,
            ChannelFlag::Ads => pb::Channel::Ads,
        }
    }
}

/// What a watch follows, from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A saved segment, `segments/{id}`.
    Segment(String),
    /// Persona assignments.
    Personas,
}

impl WatchArgs {
    /// The target, after checking that the flags fit it.
    fn target(&self) -> anyhow::Result<Target> {
        if self.subject == "personas" {
            if self.channel.is_some() {
                anyhow::bail!("--channel is for segments: persona watches follow everyone");
            }
            return Ok(Target::Personas);
        }
        if !self.persona_ids.is_empty() {
            anyhow::bail!(
                "persona ids are for `segmentd watch personas`, not for a segment: got {:?}",
                self.persona_ids
            );
        }
        let name = if self.subject.starts_with("segments/") {
            self.subject.clone()
        } else {
            format!("segments/{}", self.subject)
        };
        Ok(Target::Segment(name))
    }

    /// The command that watches the same again, without its start.
    fn command(&self, target: &Target) -> String {
        let mut command = String::from("segmentd watch ");
        match target {
            Target::Segment(name) => command.push_str(name),
            Target::Personas => {
                command.push_str("personas");
                for persona in &self.persona_ids {
                    command.push(' ');
                    command.push_str(persona);
                }
            }
        }
        if let Some(channel) = self.channel {
            let name = format!("{channel:?}").to_lowercase();
            command.push_str(&format!(" --channel {name}"));
        }
        command
    }

    /// The command that resumes this watch after `cursor`.
    fn resume_command(&self, target: &Target, cursor: &str) -> String {
        format!("{} --cursor {cursor}", self.command(target))
    }
}

/// One message of either watch, as the command prints it.
#[derive(Debug)]
struct Message {
    /// The evaluation time, as printed.
    at: String,
    /// The cursor after the message; empty for an initial batch but the last.
    cursor: String,
    /// What it holds.
    event: Event,
}

impl Message {
    fn new(at: Option<&prost_types::Timestamp>, cursor: String, event: Event) -> Self {
        Message {
            at: time_text(at),
            cursor,
            event,
        }
    }
}

/// What a message holds, as lines without their time.
#[derive(Debug)]
enum Event {
    /// A batch of the members the watch starts with, one line each.
    Initial(Vec<String>),
    /// One evaluation's changes, one line each.
    Changes(Vec<String>),
    /// An evaluation without changes.
    Progress,
}

/// The messages of a watch, whichever kind.
type Messages = Pin<Box<dyn Stream<Item = Result<Message, Status>> + Send>>;

/// Follows the watch `args` asks for on the server at `endpoint`, printing
/// a line per change, until `--exit-after` is reached, Ctrl-C, or an
/// error; then prints the command that resumes it to stderr.
pub async fn run(
    endpoint: Endpoint,
    token: Option<&BearerToken>,
    args: &WatchArgs,
) -> anyhow::Result<()> {
    let target = args.target()?;
    let channel = super::channel::connect(endpoint.connect_timeout(CONNECT_TIMEOUT), token).await?;
    let mut client = MembershipServiceClient::new(channel);
    let cursor = args.cursor.clone().unwrap_or_default();
    let opened = match &target {
        Target::Segment(name) => client
            .watch_segment_membership(pb::WatchSegmentMembershipRequest {
                segment: name.clone(),
                channel: args
                    .channel
                    .map_or(0, |flag| pb::Channel::from(flag) as i32),
                cursor,
                include_initial_members: args.initial,
                initial_batch_size: 0,
            })
            .await
            .map(|response| -> Messages {
                Box::pin(response.into_inner().map(|item| item.map(segment_message)))
            }),
        Target::Personas => client
            .watch_persona_assignments(pb::WatchPersonaAssignmentsRequest {
                persona_ids: args.persona_ids.clone(),
                cursor,
                include_initial_assignments: args.initial,
                initial_batch_size: 0,
            })
            .await
            .map(|response| -> Messages {
                Box::pin(response.into_inner().map(|item| item.map(persona_message)))
            }),
    };
    let mut messages = opened.map_err(|status| refused(args, &target, &status, None))?;
    let mut follower = Follower::new(args);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    while !follower.done() {
        // Ctrl-C first: its handler is in place before anything prints.
        let next = tokio::select! {
            biased;
            _ = &mut interrupted => break,
            next = messages.next() => next,
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(status)) => {
                return Err(refused(args, &target, &status, follower.cursor.as_deref()))
            }
            None => {
                return Err(refused(
                    args,
                    &target,
                    &Status::unknown("the server ended the watch without a status"),
                    follower.cursor.as_deref(),
                ))
            }
        };
        if !follower.print(message) {
            break;
        }
    }
    if let Some(cursor) = &follower.cursor {
        eprintln!("to resume: {}", args.resume_command(&target, cursor));
    }
    Ok(())
}

/// Where a watch has got to: the cursor to resume with, and the changes
/// printed.
#[derive(Debug)]
struct Follower {
    /// The cursor after the last message; the one given until a message
    /// brings one.
    cursor: Option<String>,
    /// Whether a message with a cursor came: the initial members, if asked
    /// for, are all printed.
    started: bool,
    /// Messages with changes printed.
    changes: u64,
    /// Stop after this many.
    exit_after: Option<u64>,
    /// Whether to print progress.
    progress: bool,
}

impl Follower {
    fn new(args: &WatchArgs) -> Self {
        Follower {
            cursor: args.cursor.clone(),
            started: false,
            changes: 0,
            exit_after: args.exit_after,
            progress: args.progress,
        }
    }

    /// Whether `--exit-after` is reached.
    fn done(&self) -> bool {
        self.exit_after
            .is_some_and(|limit| self.started && self.changes >= limit)
    }

    /// Prints `message`; `false` when stdout is closed.
    fn print(&mut self, message: Message) -> bool {
        let lines = match message.event {
            Event::Initial(lines) => lines,
            Event::Changes(lines) => {
                self.changes += 1;
                lines
            }
            Event::Progress if self.progress => vec!["(no change)".to_owned()],
            Event::Progress => Vec::new(),
        };
        if !message.cursor.is_empty() {
            self.cursor = Some(message.cursor);
            self.started = true;
        }
        let mut out = std::io::stdout().lock();
        lines
            .iter()
            .try_for_each(|line| writeln!(out, "{}  {line}", message.at))
            .and_then(|()| out.flush())
            .is_ok()
    }
}

fn segment_message(message: pb::WatchSegmentMembershipResponse) -> Message {
    use pb::watch_segment_membership_response::Event as Received;
    let event = match message.event {
        Some(Received::Initial(batch)) => Event::Initial(
            batch
                .customers
                .iter()
                .map(|customer| format!("= {customer}"))
                .collect(),
        ),
        Some(Received::Changes(changes)) => Event::Changes(
            changes
                .entered
                .iter()
                .map(|change| ('+', change))
                .chain(changes.left.iter().map(|change| ('-', change)))
                .map(|(sign, change)| {
                    format!("{sign} {}  ({})", change.customer, cause_name(change.cause))
                })
                .collect(),
        ),
        Some(Received::Progress(_)) | None => Event::Progress,
    };
    Message::new(message.evaluation_time.as_ref(), message.cursor, event)
}

fn persona_message(message: pb::WatchPersonaAssignmentsResponse) -> Message {
    use pb::watch_persona_assignments_response::Event as Received;
    let event = match message.event {
        Some(Received::Initial(batch)) => Event::Initial(
            batch
                .assignments
                .iter()
                .map(|assignment| format!("{}  = {}", assignment.customer, assignment.persona_id))
                .collect(),
        ),
        Some(Received::Moves(moves)) => Event::Changes(
            moves
                .moves
                .iter()
                .map(|change| {
                    format!(
                        "{}  {} → {}  ({})",
                        change.customer,
                        persona_or_none(&change.from_persona_id),
                        persona_or_none(&change.to_persona_id),
                        cause_name(change.cause)
                    )
                })
                .collect(),
        ),
        Some(Received::Progress(_)) | None => Event::Progress,
    };
    Message::new(message.evaluation_time.as_ref(), message.cursor, event)
}

fn persona_or_none(persona_id: &str) -> &str {
    if persona_id.is_empty() {
        "none"
    } else {
        persona_id
    }
}

/// `CHANGE_CAUSE_OTHER_CUSTOMERS` as `other-customers`.
fn cause_name(cause: i32) -> String {
    pb::ChangeCause::try_from(cause)
        .map(|cause| {
            cause
                .as_str_name()
                .trim_start_matches("CHANGE_CAUSE_")
                .to_lowercase()
                .replace('_', "-")
        })
        .unwrap_or_else(|_| format!("cause {cause}"))
}

/// A time as RFC 3339 in UTC, to the second.
fn time_text(time: Option<&prost_types::Timestamp>) -> String {
    let Some(time) = time else {
        return "-".to_owned();
    };
    let Ok(time) = time::OffsetDateTime::from_unix_timestamp(time.seconds) else {
        return format!("{}s", time.seconds);
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    )
}

/// `FailedPrecondition` as `FAILED_PRECONDITION`.
fn code_name(code: Code) -> String {
    let mut name = String::new();
    for (index, letter) in format!("{code:?}").chars().enumerate() {
        if letter.is_ascii_uppercase() && index > 0 {
            name.push('_');
        }
        name.push(letter.to_ascii_uppercase());
    }
    name
}

/// The error a watch ends with: the server's reason, and what to do next.
fn refused(
    args: &WatchArgs,
    target: &Target,
    status: &Status,
    cursor: Option<&str>,
) -> anyhow::Error {
    let info = status.get_error_details().error_info().cloned();
    let reason = info.as_ref().map(|info| info.reason.as_str()).unwrap_or("");
    let code = code_name(status.code());
    let mut text = format!("{code}: {}", status.message());
    if !reason.is_empty() && reason != code {
        text.push_str(&format!(" ({reason})"));
    }
    let start_again = format!("{} --initial", args.command(target));
    let resume_from = match reason {
        "CURSOR_EXPIRED" | "CURSOR_UNKNOWN" => {
            text.push_str(&format!(
                "\nthis cursor cannot resume; start again with the current members: {start_again}"
            ));
            return anyhow::anyhow!(text);
        }
        "SLOW_READER" => info
            .as_ref()
            .and_then(|info| info.metadata.get("cursor"))
            .map(String::as_str)
            .or(cursor),
        _ => match status.code() {
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled => cursor,
            Code::DeadlineExceeded | Code::Aborted | Code::ResourceExhausted => cursor,
            _ => None,
        },
    };
    if let Some(cursor) = resume_from {
        text.push_str(&format!(
            "\nto resume: {}",
            args.resume_command(target, cursor)
        ));
    }
    anyhow::anyhow!(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_as_on_the_wire() {
        assert_eq!(code_name(Code::FailedPrecondition), "FAILED_PRECONDITION");
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(
            cause_name(pb::ChangeCause::OtherCustomers as i32),
            "other-customers"
        );
        assert_eq!(
            time_text(Some(&prost_types::Timestamp {
                seconds: 1_796_119_201,
                nanos: 5
            })),
            "2026-12-01T10:00:01Z"
        );
    }

    #[test]
    fn a_refusal_says_what_to_do() {
        use tonic_types::ErrorDetails;
        let args = WatchArgs {
            addr: String::new(),
            subject: "buyers".into(),
            persona_ids: Vec::new(),
            channel: Some(ChannelFlag::Email),
            initial: false,
            cursor: None,
            exit_after: None,
            progress: false,
        };
        let target = args.target().unwrap();
        let slow = Status::with_error_details(
            Code::ResourceExhausted,
            "read nothing for 30 s",
            ErrorDetails::with_error_info(
                "SLOW_READER",
                "segmentd",
                [("cursor".into(), "c1.a.7".into())],
            ),
        );
        assert_eq!(
            refused(&args, &target, &slow, Some("c1.a.5")).to_string(),
            "RESOURCE_EXHAUSTED: read nothing for 30 s (SLOW_READER)\nto resume: segmentd watch \
             segments/buyers --channel email --cursor c1.a.7"
        );
        let expired = Status::with_error_details(
            Code::FailedPrecondition,
            "too old",
            ErrorDetails::with_error_info("CURSOR_EXPIRED", "segmentd", []),
        );
        assert_eq!(
            refused(&args, &target, &expired, Some("c1.a.5")).to_string(),
            "FAILED_PRECONDITION: too old (CURSOR_EXPIRED)\nthis cursor cannot resume; start again \
             with the current members: segmentd watch segments/buyers --channel email --initial"
        );
        let gone = Status::unavailable("connection lost");
        assert!(refused(&args, &target, &gone, Some("c1.a.5"))
            .to_string()
            .ends_with("--cursor c1.a.5"));
        let missing = Status::not_found("segments/buyers not found");
        assert!(!refused(&args, &target, &missing, Some("c1.a.5"))
            .to_string()
            .contains("resume"));
    }
}
