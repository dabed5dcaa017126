//! `llama bootstrap`: the CloudFormation stack (bucket, image repository, execution role) and
//! the config that points at it.
//!
//! Every change goes through a change set, so a second run, or a run after an upgrade of
//! llama, shows what it would change and changes only that; a run with nothing to change
//! says so and leaves the stack alone.

use std::collections::HashSet;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::operation::describe_change_set::DescribeChangeSetOutput;
use aws_sdk_cloudformation::types::{
    Capability, ChangeSetStatus, ChangeSetType, Parameter, Stack, StackEvent, StackStatus,
};
use llama_core::{Config, ConfigError, Source, keys};

use crate::aws_setup::{self, GaveUp, NoRegion, error_code, sdk_error, wait_for};

/// The stack's template. Its outputs are the settings [`bootstrap`] writes.
pub const TEMPLATE: &str = include_str!("stack.yaml");

/// How long one stack operation may take before we stop watching it (CloudFormation's own
/// limits are longer, but creating a bucket, a repository and a role takes about a minute).
const STACK_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// What `llama bootstrap` was asked for (llama-cli fills it from its flags); the stack's
/// name and the region come from the [`Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapOptions {
    /// Days after which the bucket deletes stored blobs and cached results.
    pub cache_days: u32,
    /// The function llamacc compiles on (`LLAMACC_FUNCTION`), which the printed next step
    /// tells the user to create.
    pub llamacc_function: String,
}

/// What happened to the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackChange {
    /// There was no stack; now there is.
    Created,
    /// A change set changed the stack.
    Updated,
    /// The stack already matched the template and parameters: nothing ran.
    Unchanged,
}

/// Why `llama bootstrap` failed; each message names the stack (or change set) and says what
/// to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StackError {
    /// No region is configured.
    #[error(transparent)]
    NoRegion(#[from] NoRegion),
    /// A CloudFormation request failed.
    #[error("{action} {name}: {message}")]
    Request {
        /// What was being done ("reading stack", "creating a change set for stack").
        action: &'static str,
        /// The stack or change set concerned.
        name: String,
        /// The service's answer, or why there was none.
        message: String,
    },
    /// The stack went away while bootstrap worked on it.
    #[error("stack {stack} {when}")]
    Vanished {
        /// The stack's name.
        stack: String,
        /// When ("disappeared right after it was applied", ...).
        when: &'static str,
    },
    /// The stack is in a state no change set can start from.
    #[error(
        "stack {stack} is in state {status} and cannot be changed until that is resolved \
         (see its events in the CloudFormation console; for UPDATE_ROLLBACK_FAILED run \
         `aws cloudformation continue-update-rollback --stack-name {stack}`), then run llama bootstrap again"
    )]
    Stuck {
        /// The stack's name.
        stack: String,
        /// Its CloudFormation status.
        status: String,
    },
    /// An operation on the stack ran past [`STACK_DEADLINE`].
    #[error(
        "stack {stack} is still {status} after {minutes} minutes; watch it in the CloudFormation console and run llama bootstrap again when it settles"
    )]
    StillBusy {
        /// The stack's name.
        stack: String,
        /// Its CloudFormation status.
        status: String,
        /// How long llama watched it.
        minutes: u64,
    },
    /// Waiting for the stack or a change set took too long.
    #[error(transparent)]
    GaveUp(#[from] GaveUp),
    /// CloudFormation failed the change set for a reason other than "nothing to change".
    #[error("CloudFormation refused the change set for stack {stack}: {reason}")]
    Refused {
        /// The stack's name.
        stack: String,
        /// CloudFormation's reason.
        reason: String,
    },
    /// CloudFormation would not execute the change set.
    #[error(
        "CloudFormation could not apply change set {change_set} to stack {stack}: {message}; \
         fix that and run llama bootstrap again"
    )]
    NotApplied {
        /// The stack's name.
        stack: String,
        /// The change set's name.
        change_set: String,
        /// The service's answer.
        message: String,
    },
    /// The operation ended in a failed or rolled-back state (its events were printed).
    #[error(
        "stack {stack} ended in {status}{}: the events above say why; fix that and run llama bootstrap again",
        reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
    )]
    Failed {
        /// The stack's name.
        stack: String,
        /// Its CloudFormation status.
        status: String,
        /// CloudFormation's reason for that status, if it gave one.
        reason: Option<String>,
    },
    /// The stack has no ARN to read the account, region and partition from.
    #[error("stack {stack} has no ARN CloudFormation could be asked about")]
    NoArn {
        /// The stack's name.
        stack: String,
    },
    /// The stack lacks a resource of llama's template: another tool made it.
    #[error(
        "stack {stack} has no resource {logical}, so llama bootstrap did not make it: \
         set `stack` to another name (LLAMA_STACK) or delete that stack"
    )]
    NotOurs {
        /// The stack's name.
        stack: String,
        /// The template's logical id of the missing resource.
        logical: &'static str,
    },
    /// The config file could not be updated.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The progress could not be written.
    #[error("writing the output")]
    Output(#[from] io::Error),
}

impl StackError {
    fn request(action: &'static str, name: &str, message: String) -> StackError {
        StackError::Request {
            action,
            name: name.to_string(),
            message,
        }
    }

    fn vanished(stack: &str, when: &'static str) -> StackError {
        StackError::Vanished {
            stack: stack.to_string(),
            when,
        }
    }
}

/// Each resource of the stack and the setting it becomes, made from its physical id and the
/// stack's ARN. (Read from the resources rather than the stack's outputs, which are for
/// people: CloudFormation emulators do not all fill outputs in for change sets.)
const RESOURCE_SETTINGS: &[(&str, &str, SettingFromId)] = &[
    ("Bucket", "object_store", |bucket, _| {
        format!("s3://{bucket}")
    }),
    ("Repository", "image_repository", |name, arn| {
        format!(
            "{}.dkr.ecr.{}.{}/{name}",
            arn.account,
            arn.region,
            url_suffix(&arn.partition)
        )
    }),
    ("Role", "execution_role", |name, arn| {
        format!("arn:{}:iam::{}:role/{name}", arn.partition, arn.account)
    }),
];

/// Makes a setting's value from a resource's physical id and the stack's ARN.
type SettingFromId = fn(&str, &StackArn) -> String;

/// The parts of `arn:PARTITION:cloudformation:REGION:ACCOUNT:stack/NAME/ID` the settings use.
struct StackArn {
    partition: String,
    region: String,
    account: String,
}

impl StackArn {
    fn parse(arn: &str) -> Option<StackArn> {
        let mut parts = arn.split(':');
        let (Some("arn"), Some(partition), Some(_), Some(region), Some(account)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        Some(StackArn {
            partition: partition.to_string(),
            region: region.to_string(),
            account: account.to_string(),
        })
    }
}

/// The DNS suffix of a partition's endpoints (ECR's registries are under it).
fn url_suffix(partition: &str) -> &'static str {
    match partition {
        "aws-cn" => "amazonaws.com.cn",
        _ => "amazonaws.com",
    }
}

/// Runs `llama bootstrap`: creates or updates the stack named by `config`'s `stack` in its
/// region, then writes the settings its resources give to the config file. Progress, the
/// changes and the stack's events go to `out`.
///
/// # Cancel safety
///
/// Dropping the future stops watching; an operation CloudFormation already started goes on,
/// and the next run waits for it to finish first.
pub async fn bootstrap(
    config: &Config,
    options: &BootstrapOptions,
    out: &mut dyn Write,
) -> Result<StackChange, StackError> {
    let sdk = aws_setup::sdk_config(config).await?;
    let region = aws_setup::region_of(&sdk);
    let cfn = Client::new(&sdk);
    let stack = config.stack();
    writeln!(out, "stack {stack} in {region}:")?;
    let parameters = vec![
        Parameter::builder()
            .parameter_key("CacheExpirationDays")
            .parameter_value(options.cache_days.to_string())
            .build(),
    ];
    let change = apply(&cfn, &stack, parameters, out).await?;
    let current = describe(&cfn, &stack)
        .await?
        .ok_or_else(|| StackError::vanished(&stack, "disappeared right after it was applied"))?;
    let outputs = settings_from_stack(&cfn, &stack, &current).await?;

    let mut values: Vec<(&str, &str)> = vec![("backend", "lambda"), ("region", &region)];
    values.extend(outputs.iter().map(|(k, v)| (*k, v.as_str())));
    if config.source(&keys::STACK) != Source::Default {
        values.push(("stack", &stack));
    }
    write_config(config, &values, out)?;
    match change {
        StackChange::Created => writeln!(
            out,
            "next: llama update-function --create {} (the function llamacc compiles on; \
             then `llama doctor` checks everything)",
            options.llamacc_function
        )?,
        StackChange::Updated => writeln!(out, "stack {stack} updated")?,
        StackChange::Unchanged => writeln!(out, "stack {stack} is up to date: nothing changed")?,
    }
    Ok(change)
}

/// Sets `values` in the config file, says what changed, and notes each one a variable or a
/// flag overrides.
fn write_config(
    config: &Config,
    values: &[(&str, &str)],
    out: &mut dyn Write,
) -> Result<(), StackError> {
    let path = Config::file_path();
    let changed = Config::update_file(&path, values)?;
    if changed.is_empty() {
        writeln!(
            out,
            "config {}: already points at this stack",
            path.display()
        )?;
    } else {
        writeln!(out, "config {}: set {}", path.display(), changed.join(", "))?;
    }
    for (key, value) in values {
        let effective = config
            .entries()
            .find(|(name, ..)| name == key)
            .map(|(_, v, source, ..)| (v, source));
        if let Some((v, source @ (Source::Env(_) | Source::Flag(_)))) = effective
            && v != *value
            && *key != "region"
        {
            writeln!(
                out,
                "note: {source} sets {key} = {v:?} and overrides the config file's {value:?}"
            )?;
        }
    }
    Ok(())
}

/// The stack as it stands once no operation is running on it: `None` when there is none,
/// or when one whose creation failed (which CloudFormation can only delete) was deleted.
async fn settled_stack(
    cfn: &Client,
    stack: &str,
    out: &mut dyn Write,
) -> Result<Option<Stack>, StackError> {
    let mut existing = describe(cfn, stack).await?;
    if let Some(current) = &existing
        && is_in_progress(current)
    {
        writeln!(
            out,
            "  waiting for the stack's current operation ({}) to finish",
            status_of(current)
        )?;
        existing = Some(wait_settled(cfn, stack).await?);
    }
    if let Some(current) = &existing
        && current.stack_status() == Some(&StackStatus::RollbackComplete)
    {
        // A stack whose creation failed can only be deleted; its events were shown then.
        writeln!(
            out,
            "  its creation failed earlier (ROLLBACK_COMPLETE) and CloudFormation can only delete it: deleting it"
        )?;
        cfn.delete_stack()
            .stack_name(stack)
            .send()
            .await
            .map_err(|e| StackError::request("deleting stack", stack, sdk_error(&e)))?;
        wait_for::<_, StackError, _, _>(
            &format!("stack {stack} to be deleted"),
            STACK_DEADLINE,
            || async { Ok(describe(cfn, stack).await?.is_none().then_some(())) },
        )
        .await?;
        existing = None;
    }
    Ok(existing)
}

/// One line per resource the change set adds, modifies or removes.
fn print_changes(described: &DescribeChangeSetOutput, out: &mut dyn Write) -> io::Result<()> {
    for change in described.changes() {
        if let Some(rc) = change.resource_change() {
            let replacement = match rc.replacement().map(|r| r.as_str()) {
                Some("True") => " (replaced)",
                Some("Conditional") => " (may be replaced)",
                _ => "",
            };
            writeln!(
                out,
                "    {} {} ({}){replacement}",
                rc.action().map(|a| a.as_str()).unwrap_or("Change"),
                rc.logical_resource_id().unwrap_or("?"),
                rc.resource_type().unwrap_or("?"),
            )?;
        }
    }
    Ok(())
}

/// Whether the change set creates the stack or updates it; an error when its state
/// allows neither.
fn change_set_kind(stack: &str, existing: Option<&Stack>) -> Result<ChangeSetType, StackError> {
    Ok(match existing {
        None => ChangeSetType::Create,
        Some(s) if s.stack_status() == Some(&StackStatus::ReviewInProgress) => {
            ChangeSetType::Create
        }
        Some(s) if is_stable_ok(s) => ChangeSetType::Update,
        Some(s) => {
            return Err(StackError::Stuck {
                stack: stack.to_string(),
                status: status_of(s).to_string(),
            });
        }
    })
}

/// Prints the stack's new events until no operation runs on it; returns the stack as it
/// ended and the failure events printed on the way.
async fn watch_until_settled(
    cfn: &Client,
    stack: &str,
    mut seen: HashSet<String>,
    out: &mut dyn Write,
) -> Result<(Stack, Vec<String>), StackError> {
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(250);
    let mut printed_failures = Vec::new();
    let finished = loop {
        let fresh: Vec<StackEvent> = events(cfn, stack)
            .await?
            .into_iter()
            .rev()
            .filter(|e| e.event_id().is_some_and(|id| seen.insert(id.to_string())))
            .collect();
        for event in &fresh {
            writeln!(out, "    {}", event_line(event))?;
            if is_failure_event(event) {
                printed_failures.push(event_line(event));
            }
        }
        let current = describe(cfn, stack)
            .await?
            .ok_or_else(|| StackError::vanished(stack, "disappeared while it was being changed"))?;
        if !is_in_progress(&current) {
            break current;
        }
        if started.elapsed() > STACK_DEADLINE {
            return Err(StackError::StillBusy {
                stack: stack.to_string(),
                status: status_of(&current).to_string(),
                minutes: STACK_DEADLINE.as_secs() / 60,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    };
    Ok((finished, printed_failures))
}

/// Creates a change set named `change_set` for `stack`, and waits until CloudFormation has
/// worked out its changes: `None` when it would change nothing.
async fn prepare_change_set(
    cfn: &Client,
    stack: &str,
    change_set: &str,
    kind: ChangeSetType,
    parameters: Vec<Parameter>,
) -> Result<Option<DescribeChangeSetOutput>, StackError> {
    let created = cfn
        .create_change_set()
        .stack_name(stack)
        .change_set_name(change_set)
        .change_set_type(kind.clone())
        .template_body(TEMPLATE)
        .set_parameters(Some(parameters))
        .capabilities(Capability::CapabilityIam)
        .description(format!("llama bootstrap {}", env!("CARGO_PKG_VERSION")))
        .send()
        .await;
    match created {
        Ok(_) => {}
        // Some CloudFormations refuse a change set that changes nothing outright.
        Err(e) if is_no_change_reason(&sdk_error(&e)) => return Ok(None),
        Err(e) => {
            return Err(StackError::request(
                "creating a change set for stack",
                stack,
                sdk_error(&e),
            ));
        }
    }

    let described = wait_for::<_, StackError, _, _>(
        &format!("change set {change_set} of stack {stack}"),
        STACK_DEADLINE,
        || async {
            let d = cfn
                .describe_change_set()
                .stack_name(stack)
                .change_set_name(change_set)
                .send()
                .await
                .map_err(|e| {
                    StackError::request("reading change set", change_set, sdk_error(&e))
                })?;
            Ok(match d.status() {
                Some(ChangeSetStatus::CreateComplete | ChangeSetStatus::Failed) => Some(d),
                _ => None,
            })
        },
    )
    .await?;

    let no_changes = match described.status() {
        Some(ChangeSetStatus::Failed) => {
            let reason = described.status_reason().unwrap_or_default();
            if !is_no_change_reason(reason) {
                return Err(StackError::Refused {
                    stack: stack.to_string(),
                    reason: reason.to_string(),
                });
            }
            true
        }
        _ => kind == ChangeSetType::Update && described.changes().is_empty(),
    };
    if no_changes {
        // Leaving it would clutter the stack's change sets with one per run.
        let _ = cfn
            .delete_change_set()
            .stack_name(stack)
            .change_set_name(change_set)
            .send()
            .await;
        return Ok(None);
    }
    Ok(Some(described))
}

/// Creates or updates `stack` through a change set, printing the changes and the events.
async fn apply(
    cfn: &Client,
    stack: &str,
    parameters: Vec<Parameter>,
    out: &mut dyn Write,
) -> Result<StackChange, StackError> {
    let existing = settled_stack(cfn, stack, out).await?;
    let kind = change_set_kind(stack, existing.as_ref())?;

    let change_set = format!(
        "llama-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let Some(described) =
        prepare_change_set(cfn, stack, &change_set, kind.clone(), parameters).await?
    else {
        return Ok(StackChange::Unchanged);
    };

    writeln!(
        out,
        "  {} through change set {change_set}:",
        if kind == ChangeSetType::Create {
            "creating"
        } else {
            "updating"
        }
    )?;
    print_changes(&described, out)?;

    let seen: HashSet<String> = events(cfn, stack)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.event_id().map(str::to_string))
        .collect();
    if let Err(e) = cfn
        .execute_change_set()
        .stack_name(stack)
        .change_set_name(&change_set)
        .send()
        .await
    {
        print_failures(cfn, stack, &seen, out).await?;
        return Err(StackError::NotApplied {
            stack: stack.to_string(),
            change_set,
            message: sdk_error(&e),
        });
    }

    let (finished, printed_failures) = watch_until_settled(cfn, stack, seen, out).await?;

    if is_stable_ok(&finished) && !is_rolled_back(&finished) {
        return Ok(if kind == ChangeSetType::Create {
            StackChange::Created
        } else {
            StackChange::Updated
        });
    }
    if printed_failures.is_empty() {
        // The events may have come after our last look.
        print_failures(cfn, stack, &HashSet::new(), out).await?;
    } else {
        writeln!(out, "  what failed:")?;
        for line in &printed_failures {
            writeln!(out, "    {line}")?;
        }
    }
    Err(StackError::Failed {
        stack: stack.to_string(),
        status: status_of(&finished).to_string(),
        reason: finished.stack_status_reason().map(str::to_string),
    })
}

/// The stack, or `None` when there is no such stack.
pub(crate) async fn describe(cfn: &Client, stack: &str) -> Result<Option<Stack>, StackError> {
    match cfn.describe_stacks().stack_name(stack).send().await {
        Ok(d) => Ok(d.stacks().first().cloned()),
        Err(e)
            if error_code(&e) == Some("ValidationError")
                && sdk_error(&e).contains("does not exist") =>
        {
            Ok(None)
        }
        Err(e) => Err(StackError::request("reading stack", stack, sdk_error(&e))),
    }
}

/// The settings the stack's resources give, in [`RESOURCE_SETTINGS`] order.
pub(crate) async fn settings_from_stack(
    cfn: &Client,
    stack: &str,
    current: &Stack,
) -> Result<Vec<(&'static str, String)>, StackError> {
    let arn = current
        .stack_id()
        .and_then(StackArn::parse)
        .ok_or_else(|| StackError::NoArn {
            stack: stack.to_string(),
        })?;
    let resources = cfn
        .describe_stack_resources()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| StackError::request("reading the resources of stack", stack, sdk_error(&e)))?;
    RESOURCE_SETTINGS
        .iter()
        .map(|(logical, setting, make)| {
            resources
                .stack_resources()
                .iter()
                .find(|r| r.logical_resource_id() == Some(logical))
                .and_then(|r| r.physical_resource_id())
                .filter(|id| !id.is_empty())
                .map(|id| (*setting, make(id, &arn)))
                .ok_or_else(|| StackError::NotOurs {
                    stack: stack.to_string(),
                    logical,
                })
        })
        .collect()
}

async fn wait_settled(cfn: &Client, stack: &str) -> Result<Stack, StackError> {
    wait_for::<_, StackError, _, _>(
        &format!("stack {stack} to settle"),
        STACK_DEADLINE,
        || async {
            let current = describe(cfn, stack)
                .await?
                .ok_or_else(|| StackError::vanished(stack, "was deleted while we waited"))?;
            Ok((!is_in_progress(&current)).then_some(current))
        },
    )
    .await
}

/// The most recent events of the stack (newest first, as CloudFormation lists them).
async fn events(cfn: &Client, stack: &str) -> Result<Vec<StackEvent>, StackError> {
    let page = cfn
        .describe_stack_events()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| StackError::request("reading the events of stack", stack, sdk_error(&e)))?;
    Ok(page.stack_events().to_vec())
}

/// Prints the stack's events not in `seen` (all of them when none are new), oldest first:
/// what CloudFormation says about a failure.
async fn print_failures(
    cfn: &Client,
    stack: &str,
    seen: &HashSet<String>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let all = events(cfn, stack).await.unwrap_or_default();
    let fresh: Vec<&StackEvent> = all
        .iter()
        .rev()
        .filter(|e| e.event_id().is_none_or(|id| !seen.contains(id)))
        .collect();
    let failed: Vec<&&StackEvent> = fresh.iter().filter(|e| is_failure_event(e)).collect();
    if !fresh.is_empty() {
        writeln!(out, "  the stack's events:")?;
    }
    let shown: Vec<&StackEvent> = if failed.is_empty() {
        fresh
    } else {
        failed.into_iter().copied().collect()
    };
    for event in shown {
        writeln!(out, "    {}", event_line(event))?;
    }
    Ok(())
}

fn event_line(event: &StackEvent) -> String {
    let mut line = format!(
        "{:<20} {:<28} {}",
        event.resource_status().map(|s| s.as_str()).unwrap_or("?"),
        event.resource_type().unwrap_or("?"),
        event.logical_resource_id().unwrap_or("?"),
    );
    if let Some(reason) = event.resource_status_reason().filter(|r| !r.is_empty()) {
        line.push_str(": ");
        line.push_str(reason);
    }
    line
}

fn is_failure_event(event: &StackEvent) -> bool {
    event
        .resource_status()
        .is_some_and(|s| s.as_str().ends_with("_FAILED"))
}

pub(crate) fn status_of(stack: &Stack) -> &str {
    stack
        .stack_status()
        .map(|s| s.as_str())
        .unwrap_or("UNKNOWN")
}

fn is_in_progress(stack: &Stack) -> bool {
    status_of(stack).ends_with("_IN_PROGRESS")
        && stack.stack_status() != Some(&StackStatus::ReviewInProgress)
}

/// A state an update can start from.
pub(crate) fn is_stable_ok(stack: &Stack) -> bool {
    matches!(
        stack.stack_status(),
        Some(
            StackStatus::CreateComplete
                | StackStatus::UpdateComplete
                | StackStatus::UpdateRollbackComplete
                | StackStatus::ImportComplete
                | StackStatus::ImportRollbackComplete
        )
    )
}

fn is_rolled_back(stack: &Stack) -> bool {
    status_of(stack).contains("ROLLBACK")
}

/// CloudFormation fails a change set that would change nothing, with one of these reasons.
fn is_no_change_reason(reason: &str) -> bool {
    const NO_CHANGE: &[&str] = &[
        "didn't contain changes",
        "No updates are to be performed",
        "does not contain changes",
    ];
    NO_CHANGE.iter().any(|n| reason.contains(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_declares_every_resource_bootstrap_reads() {
        for (logical, _, _) in RESOURCE_SETTINGS {
            assert!(
                TEMPLATE.contains(&format!("\n  {logical}:\n    Type:")),
                "{logical}"
            );
        }
    }

    // See: issue 12, defect 8
    #[test]
    fn r12_only_the_function_role_writes_results() {
        // The resource whose body starts at `  NAME:` and ends at the next resource.
        let resource = |name: &str| {
            let start = TEMPLATE
                .find(&format!("\n  {name}:\n    Type:"))
                .unwrap_or_else(|| panic!("the template has no {name}"));
            // Its lines up to the next one indented by two spaces or less.
            TEMPLATE[start + 1..]
                .lines()
                .enumerate()
                .take_while(|(i, l)| *i == 0 || l.is_empty() || l.starts_with("   "))
                .map(|(_, l)| format!("{l}\n"))
                .collect::<String>()
        };
        let deny = resource("BucketPolicy");
        for part in [
            "Effect: Deny",
            "s3:PutObject",
            "${Bucket.Arn}/ac/*",
            "ArnNotEquals",
            "aws:PrincipalArn",
            "Fn::GetAtt: [Role, Arn]",
        ] {
            assert!(deny.contains(part), "{part} in BucketPolicy:\n{deny}");
        }
        let user = resource("UserPolicy");
        assert!(user.contains("${Bucket.Arn}/cas/*"), "{user}");
        assert!(!user.contains("/ac/"), "users never write results:\n{user}");
        let role = resource("Role");
        assert!(role.contains("${Bucket.Arn}/ac/*"), "{role}");
    }

    #[test]
    fn settings_from_physical_ids() {
        let arn = StackArn::parse("arn:aws:cloudformation:eu-west-1:123456789012:stack/llama/abc")
            .unwrap();
        let made: Vec<String> = ["b-1", "llama", "llama-Role-X"]
            .iter()
            .zip(RESOURCE_SETTINGS)
            .map(|(id, (_, _, make))| make(id, &arn))
            .collect();
        assert_eq!(
            made,
            [
                "s3://b-1",
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com/llama",
                "arn:aws:iam::123456789012:role/llama-Role-X"
            ]
        );
    }

    #[test]
    fn recognises_the_no_change_reasons() {
        assert!(is_no_change_reason(
            "The submitted information didn't contain changes. Submit different information to create a change set."
        ));
        assert!(is_no_change_reason("No updates are to be performed."));
        assert!(!is_no_change_reason(
            "Template format error: unsupported structure."
        ));
    }
}
