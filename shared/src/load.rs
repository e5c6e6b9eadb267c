//! Cold start: the SDK configuration from the standard environment
//! (`AWS_REGION`, `AWS_ENDPOINT_URL`, the credentials chain) and the
//! validated [`Config`], read once.

use aws_config::{BehaviorVersion, SdkConfig};

use crate::config::{self, Config, ConfigError};

/// The SDK configuration from the standard environment.
pub async fn sdk_config() -> SdkConfig {
    aws_config::load_defaults(BehaviorVersion::latest()).await
}

/// An S3 client. Path-style addressing is used when `S3_FORCE_PATH_STYLE`
/// is `true`, for S3-compatible endpoints reached by host name.
pub fn s3_client(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    let force_path_style = std::env::var("S3_FORCE_PATH_STYLE").is_ok_and(|v| v == "true");
    let s3_config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(force_path_style)
        .build();
    aws_sdk_s3::Client::from_conf(s3_config)
}

/// Reads the configuration from the process environment; `EXPORT_CONFIG`
/// holds the document inline, or an `s3://bucket/key` URI read with `s3`.
pub async fn config_from_env(s3: &aws_sdk_s3::Client) -> Result<Config, ConfigError> {
    let lookup = |name: &str| std::env::var(name).ok();
    config_from(lookup, s3).await
}

/// Like [`config_from_env`], with the variables looked up through `lookup`.
pub async fn config_from(
    lookup: impl Fn(&str) -> Option<String>,
    s3: &aws_sdk_s3::Client,
) -> Result<Config, ConfigError> {
    let document = match lookup(config::env::EXPORT_CONFIG).filter(|v| !v.trim().is_empty()) {
        None => None,
        Some(uri) if uri.trim_start().starts_with("s3://") => {
            Some(read_document(s3, uri.trim()).await?)
        }
        Some(inline) => Some(inline),
    };
    Config::from_sources(lookup, document.as_deref())
}

async fn read_document(s3: &aws_sdk_s3::Client, uri: &str) -> Result<String, ConfigError> {
    let field = config::env::EXPORT_CONFIG;
    let (bucket, key) = config::parse_s3_uri(uri)
        .ok_or_else(|| ConfigError::new(field, format!("`{uri}` is not `s3://bucket/key`")))?;
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|error| {
            ConfigError::new(
                field,
                format!(
                    "cannot read `{uri}`: {}",
                    aws_sdk_s3::error::DisplayErrorContext(error)
                ),
            )
        })?;
    let bytes = object
        .body
        .collect()
        .await
        .map_err(|error| ConfigError::new(field, format!("cannot read `{uri}`: {error}")))?
        .into_bytes();
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ConfigError::new(field, format!("`{uri}` is not UTF-8 text")))
}
