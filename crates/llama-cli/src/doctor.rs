//! `llama doctor`: checks every piece the lambda backend needs and names the command that fixes what is missing.
