//! `llama bootstrap`: the CloudFormation stack (bucket, image repository, execution role) and the config that points at it.
