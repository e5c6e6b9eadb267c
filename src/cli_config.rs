//! The pipeline's configuration for the operator commands (`errors-replay`,
//! `status`): the same variables and document the functions read, with
//! `--config` and `--bucket` taking precedence, so a command sees what the
//! deployed functions see.

use anyhow::Context as _;
use shared::Config;
use shared::config::env;

/// The configuration from the environment, with `document` (a file path,
/// inline JSON, or `s3://bucket/key`) as `EXPORT_CONFIG` and `bucket` as
/// `EXPORT_BUCKET` when given. Errors name the bad field, as at a cold start.
pub async fn load(
    s3: &aws_sdk_s3::Client,
    document: Option<&str>,
    bucket: Option<&str>,
) -> anyhow::Result<Config> {
    let document = match document {
        Some(text) if text.trim_start().starts_with('{') || text.starts_with("s3://") => {
            Some(text.to_owned())
        }
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the configuration document `{path}`"))?,
        ),
        None => None,
    };
    let lookup = |name: &str| match name {
        env::EXPORT_CONFIG if document.is_some() => document.clone(),
        env::EXPORT_BUCKET if bucket.is_some() => bucket.map(str::to_owned),
        _ => std::env::var(name).ok(),
    };
    Ok(shared::load::config_from(lookup, s3).await?)
}

/// The S3 client of the standard environment (`AWS_ENDPOINT_URL`, region,
/// credentials), path-style when `S3_FORCE_PATH_STYLE=true`.
pub async fn s3_client() -> aws_sdk_s3::Client {
    shared::load::s3_client(&shared::load::sdk_config().await)
}
