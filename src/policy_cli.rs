//! `s3-export policy`: prints the permissions a destination needs, like
//! Amplitude's "Generate Bucket Policy": the bucket policy its owner pastes,
//! the KMS key policy statement when it encrypts with a named key, and the
//! writer role's own policy. The same functions build the policies that the
//! verify function suggests, so the two never disagree.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use shared::Config;
use shared::config::env;
use shared::policy;

/// Options of `s3-export policy`.
#[derive(Debug, Args)]
pub struct PolicyOptions {
    /// The configuration document: a file, or inline JSON. Default:
    /// `$EXPORT_CONFIG` (inline).
    #[arg(long)]
    pub config: Option<String>,
    /// The destination (default: every destination in the document).
    #[arg(long)]
    pub destination: Option<String>,
    /// The role that writes to destinations (the principal); repeat for
    /// several. Default: `$FUNCTION_ROLE_ARN`, else a placeholder to replace.
    #[arg(long = "role-arn")]
    pub role_arns: Vec<String>,
    /// Print one JSON document per destination instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Prints the policies; fails when the document is invalid or names no such
/// destination.
pub fn run(options: &PolicyOptions) -> anyhow::Result<()> {
    let document = match &options.config {
        Some(text) if text.trim_start().starts_with('{') => text.clone(),
        Some(path) => std::fs::read_to_string(PathBuf::from(path))
            .with_context(|| format!("cannot read the configuration document `{path}`"))?,
        None => std::env::var(env::EXPORT_CONFIG)
            .ok()
            .filter(|v| v.trim_start().starts_with('{'))
            .context("give --config <file or inline JSON> (or an inline EXPORT_CONFIG)")?,
    };
    // The export bucket plays no part in a destination's policy: a document
    // without one is still accepted here.
    let config = Config::from_sources(
        |name| {
            std::env::var(name)
                .ok()
                .or_else(|| (name == env::EXPORT_BUCKET).then(|| "unused-export-bucket".to_owned()))
        },
        Some(&document),
    )?;
    let mut principals = options.role_arns.clone();
    if principals.is_empty()
        && let Ok(list) = std::env::var(env::FUNCTION_ROLE_ARN)
    {
        principals = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
    }
    let destinations: Vec<_> = match &options.destination {
        Some(name) => match config.destinations.iter().find(|d| &d.name == name) {
            Some(destination) => vec![destination],
            None => bail!(
                "no destination named `{name}` (configured: {})",
                if config.destinations.is_empty() {
                    "none".to_owned()
                } else {
                    config
                        .destinations
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        },
        None => config.destinations.iter().collect(),
    };
    if destinations.is_empty() {
        bail!("the configuration has no destinations");
    }
    let partition = principals
        .first()
        .map_or("aws", |p| policy::partition_of(p))
        .to_owned();
    for destination in destinations {
        let writers = policy::writers(destination, &principals);
        let bucket_policy = policy::bucket_policy(destination, &writers);
        let kms = policy::kms_key_policy_statement(destination, &writers);
        let identity = policy::identity_policy(destination, &partition);
        if options.json {
            println!(
                "{}",
                serde_json::json!({
                    "destination": destination.name,
                    "bucketPolicy": bucket_policy,
                    "kmsKeyPolicyStatement": kms,
                    "roleIdentityPolicy": identity,
                })
            );
            continue;
        }
        println!(
            "# Destination `{}`: s3://{}/{}",
            destination.name, destination.bucket, destination.prefix
        );
        if principals.is_empty() {
            println!(
                "# No --role-arn given: replace {} with the writer role's ARN.",
                policy::UNKNOWN_PRINCIPAL
            );
        }
        println!(
            "\n## Bucket policy (S3 console > {} > Permissions > Bucket policy)\n{}",
            destination.bucket,
            policy::pretty(&bucket_policy)
        );
        if let Some(statement) = kms {
            println!(
                "\n## KMS key policy statement (add to the Statement list of key {})\n{}",
                policy::kms_key(destination).unwrap_or(""),
                policy::pretty(&statement)
            );
        }
        println!(
            "\n## The writer role's own policy (the template grants this for configured destinations)\n{}\n",
            policy::pretty(&identity)
        );
    }
    Ok(())
}
