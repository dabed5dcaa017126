//! `llama update-function`: creates or updates an image-packaged Lambda function.
