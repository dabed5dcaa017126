//! Assembles a Lambda image from a base image plus `llama-runtime` and pushes it through the OCI distribution API (no container builder needed).
