//! Building REAPI `Command`s and `Action`s from a description of the work, canonically, so
//! the same work always has the same action digest (the cache key).

use std::sync::Arc;
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use bazel_remote_apis::google::protobuf::Duration as ProtoDuration;
use prost::Message;

use crate::digest::Digest;
use crate::platform::STDIN_PROPERTY;
use crate::tree::{BlobSource, InputTree, TreeError, normalize_remote};

/// What to run, before it is encoded.
#[derive(Debug, Clone, Default)]
pub struct ActionSpec {
    /// argv; the first element is the program.
    pub arguments: Vec<String>,
    /// Environment of the command (and nothing else: actions do not inherit).
    pub env: Vec<(String, String)>,
    /// Files and directories the command is expected to produce, relative to the root.
    pub output_paths: Vec<String>,
    /// Platform properties (the function name among them).
    pub platform: Vec<(String, String)>,
    /// Working directory relative to the input root ("" for the root).
    pub working_directory: String,
    /// Per-action deadline.
    pub timeout: Option<Duration>,
    /// Bytes for standard input, if any.
    pub stdin: Option<Arc<[u8]>>,
    /// Ask executors not to cache the result.
    pub do_not_cache: bool,
}

/// An encoded action with everything needed to run it anywhere.
#[derive(Debug, Clone)]
pub struct PreparedAction {
    /// The Action message.
    pub action: reapi::Action,
    /// Its digest: the cache key.
    pub action_digest: Digest,
    /// The Command message.
    pub command: reapi::Command,
    /// The Command's digest.
    pub command_digest: Digest,
    /// The input tree.
    pub input: InputTree,
    /// Standard input, when given: its digest and bytes.
    pub stdin: Option<(Digest, BlobSource)>,
}

impl PreparedAction {
    /// Digest of the stdin blob named by the platform, if any.
    pub fn stdin_digest(&self) -> Option<Digest> {
        self.stdin.as_ref().map(|(d, _)| *d)
    }

    /// The timeout recorded in the Action.
    pub fn timeout(&self) -> Option<Duration> {
        self.action.timeout.as_ref().map(|d| {
            Duration::from_secs(d.seconds.max(0) as u64)
                + Duration::from_nanos(d.nanos.max(0) as u64)
        })
    }

    /// The value of a platform property.
    pub fn platform_property(&self, name: &str) -> Option<&str> {
        self.action
            .platform
            .as_ref()?
            .properties
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.as_str())
    }
}

/// A REAPI `Platform` of `properties` in canonical form (sorted by name, one value per name;
/// `None` when empty), so the same properties always give the same digest.
pub fn canonical_platform(mut properties: Vec<(String, String)>) -> Option<reapi::Platform> {
    properties.sort();
    properties.dedup_by(|a, b| a.0 == b.0);
    (!properties.is_empty()).then(|| reapi::Platform {
        properties: properties
            .into_iter()
            .map(|(name, value)| reapi::platform::Property { name, value })
            .collect(),
    })
}

impl ActionSpec {
    /// Encodes the spec over `input`. Output paths are validated like input paths.
    pub fn prepare(self, input: InputTree) -> Result<PreparedAction, TreeError> {
        let mut env = self.env;
        env.sort();
        env.dedup_by(|a, b| a.0 == b.0);
        let mut outputs = self
            .output_paths
            .iter()
            .map(|p| normalize_remote(p))
            .collect::<Result<Vec<_>, _>>()?;
        outputs.sort();
        outputs.dedup();
        let working_directory = if self.working_directory.is_empty() {
            String::new()
        } else {
            normalize_remote(&self.working_directory)?
        };
        let stdin = self
            .stdin
            .map(|data| (Digest::of_bytes(&data), BlobSource::Bytes(data)));
        let mut properties = self.platform;
        if let Some((digest, _)) = &stdin {
            properties.push((STDIN_PROPERTY.to_string(), digest.to_string()));
        }
        let platform = canonical_platform(properties);
        #[allow(deprecated)]
        let command = reapi::Command {
            arguments: self.arguments,
            environment_variables: env
                .into_iter()
                .map(|(name, value)| reapi::command::EnvironmentVariable { name, value })
                .collect(),
            output_paths: outputs,
            platform: platform.clone(),
            working_directory,
            ..Default::default()
        };
        let command_bytes = command.encode_to_vec();
        let command_digest = Digest::of_bytes(&command_bytes);
        let action = reapi::Action {
            command_digest: Some(command_digest.to_proto()),
            input_root_digest: Some(input.root.to_proto()),
            timeout: self.timeout.map(|t| ProtoDuration {
                seconds: t.as_secs() as i64,
                nanos: t.subsec_nanos() as i32,
            }),
            do_not_cache: self.do_not_cache,
            salt: Vec::new(),
            platform,
        };
        let action_digest = Digest::of_message(&action);
        Ok(PreparedAction {
            action,
            action_digest,
            command,
            command_digest,
            input,
            stdin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::FUNCTION_PROPERTY;
    use crate::tree::TreeBuilder;

    fn spec(args: &[&str]) -> ActionSpec {
        ActionSpec {
            arguments: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn empty_tree() -> InputTree {
        TreeBuilder::new().build()
    }

    #[test]
    fn key_is_canonical_and_covers_what_matters() {
        let base = |f: &dyn Fn(&mut ActionSpec)| {
            let mut s = spec(&["sh", "-c", "true"]);
            s.env = vec![("B".into(), "2".into()), ("A".into(), "1".into())];
            s.output_paths = vec!["z".into(), "a/b".into()];
            f(&mut s);
            s.prepare(empty_tree()).unwrap().action_digest
        };
        let reference = base(&|_| {});
        // Order of env and outputs does not matter...
        assert_eq!(
            reference,
            base(&|s| {
                s.env.reverse();
                s.output_paths.reverse();
            })
        );
        // ...but every part of the work does.
        assert_ne!(reference, base(&|s| s.arguments.push("x".into())));
        assert_ne!(reference, base(&|s| s.env[0].1 = "3".into()));
        assert_ne!(
            reference,
            base(&|s| s.platform = vec![(FUNCTION_PROPERTY.into(), "gcc".into())])
        );
        assert_ne!(reference, base(&|s| s.stdin = Some(Arc::from(&b"in"[..]))));
        assert_ne!(
            reference,
            base(&|s| s.timeout = Some(Duration::from_secs(5)))
        );
    }

    #[test]
    fn output_paths_are_checked() {
        let mut s = spec(&["true"]);
        s.output_paths = vec!["../escape".into()];
        assert!(s.prepare(empty_tree()).is_err());
    }
}
