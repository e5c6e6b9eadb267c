//! Cross-account writes: a destination with a `roleArn` is written with the
//! credentials of that role, assumed through STS (with its `externalId`),
//! instead of the function's own role.
//!
//! Guarantees: the role is assumed lazily, on the first write to the
//! destination, and the credentials are cached and refreshed before they
//! expire by the S3 client's identity cache (the SDK's lazy cache), so a
//! client kept per destination (the flusher's) assumes the role about once
//! an hour, not once per request. STS is called with the client the function
//! built from its own SDK configuration at cold start (its own role, its
//! region's STS endpoint, or `AWS_ENDPOINT_URL` on moto). A destination
//! without a role is written with the function's own credentials (the
//! bucket-policy model).

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{self, ProvideCredentials, future};

use crate::config::Destination;

/// The `source` of assumed credentials (shown in SDK debug logs).
pub const PROVIDER_NAME: &str = "s3-export-assume-role";

/// STS limits a role session name to 64 characters.
pub const MAX_SESSION_NAME_CHARS: usize = 64;

/// A credentials provider that assumes one destination's role.
#[derive(Debug, Clone)]
pub struct AssumedRole {
    /// `None`: no STS client was given, and every attempt fails saying so.
    sts: Option<aws_sdk_sts::Client>,
    role_arn: String,
    external_id: Option<String>,
    session_name: String,
}

impl AssumedRole {
    /// Assumes `role_arn` (with `external_id`, when set) through `sts`, as
    /// session `session_name` (cut to [`MAX_SESSION_NAME_CHARS`]).
    pub fn new(
        sts: Option<aws_sdk_sts::Client>,
        role_arn: impl Into<String>,
        external_id: Option<String>,
        session_name: &str,
    ) -> Self {
        Self {
            sts,
            role_arn: role_arn.into(),
            external_id,
            session_name: session_name.chars().take(MAX_SESSION_NAME_CHARS).collect(),
        }
    }

    /// The provider for `destination`'s role, or `None` when it has none.
    /// The session is named `s3-export-<destination>`, so CloudTrail in the
    /// destination's account shows which destination wrote.
    pub fn for_destination(
        sts: Option<&aws_sdk_sts::Client>,
        destination: &Destination,
    ) -> Option<Self> {
        let role_arn = destination.role_arn.as_ref()?;
        Some(Self::new(
            sts.cloned(),
            role_arn,
            destination.external_id.clone(),
            &session_name(&destination.name),
        ))
    }

    /// The role assumed.
    pub fn role_arn(&self) -> &str {
        &self.role_arn
    }

    async fn assume(&self) -> provider::Result {
        let sts = self.sts.as_ref().ok_or_else(|| {
            CredentialsError::provider_error(format!(
                "cannot assume role {}: no STS client was configured for cross-account destinations",
                self.role_arn
            ))
        })?;
        let output = sts
            .assume_role()
            .role_arn(&self.role_arn)
            .set_external_id(self.external_id.clone())
            .role_session_name(&self.session_name)
            .send()
            .await
            .map_err(|error| {
                CredentialsError::provider_error(format!(
                    "cannot assume role {}: {}",
                    self.role_arn,
                    aws_sdk_sts::error::DisplayErrorContext(error)
                ))
            })?;
        let credentials = output.credentials.ok_or_else(|| {
            CredentialsError::provider_error(format!(
                "STS AssumeRole of {} returned no credentials",
                self.role_arn
            ))
        })?;
        let expiry = SystemTime::try_from(credentials.expiration).ok();
        tracing::debug!(role_arn = %self.role_arn, "assumed the destination's role");
        Ok(Credentials::new(
            credentials.access_key_id,
            credentials.secret_access_key,
            Some(credentials.session_token),
            expiry,
            PROVIDER_NAME,
        ))
    }
}

impl ProvideCredentials for AssumedRole {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.assume())
    }
}

/// The role session name for a destination: `s3-export-<name>`, within
/// STS's 64 characters (destination names use only characters STS allows).
pub fn session_name(destination: &str) -> String {
    format!("s3-export-{destination}")
        .chars()
        .take(MAX_SESSION_NAME_CHARS)
        .collect()
}

/// Checks a role ARN: `arn:<partition>:iam::<12 digits>:role/<path and name>`.
pub fn check_role_arn(arn: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "`{arn}` is not an IAM role ARN such as `arn:aws:iam::111122223333:role/s3-export-writer`"
        )
    };
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad());
    };
    let partition_ok = partition == "aws"
        || partition.strip_prefix("aws-").is_some_and(|rest| {
            !rest.is_empty() && rest.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        });
    let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    let name_ok = resource.strip_prefix("role/").is_some_and(|name| {
        !name.is_empty()
            && !name.ends_with('/')
            && name.len() <= 512
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c))
    });
    if partition_ok && account_ok && name_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Checks an external id: 2 to 1,224 characters of `A-Z a-z 0-9 + = , . @ : / - _`,
/// as STS requires.
pub fn check_external_id(id: &str) -> Result<(), String> {
    let ok = (2..=1224).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@:/-_".contains(c));
    if ok {
        Ok(())
    } else {
        Err("an external id is 2 to 1224 of A-Z a-z 0-9 + = , . @ : / - _".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns() {
        for ok in [
            "arn:aws:iam::111122223333:role/writer",
            "arn:aws-cn:iam::111122223333:role/path/to/writer",
            "arn:aws-us-gov:iam::111122223333:role/w+=,.@_-",
        ] {
            assert_eq!(check_role_arn(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "writer",
            "arn:aws:iam::1111:role/writer",
            "arn:aws:iam::111122223333:user/writer",
            "arn:aws:iam::111122223333:role/",
            "arn:aws:s3:::bucket",
            "arn:aws:iam:us-east-1:111122223333:role/writer",
            "arn:azure:iam::111122223333:role/writer",
            "arn:aws:iam::111122223333:role/has space",
        ] {
            assert!(check_role_arn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn external_ids() {
        assert!(check_external_id("ab").is_ok());
        assert!(check_external_id("tenant-42:s3-export/prod@x=1,y.z+").is_ok());
        assert!(check_external_id(&"x".repeat(1224)).is_ok());
        assert!(check_external_id("a").is_err());
        assert!(check_external_id(&"x".repeat(1225)).is_err());
        assert!(check_external_id("has space").is_err());
        assert!(check_external_id("é!").is_err());
    }

    #[test]
    fn session_names_fit_sts() {
        assert_eq!(session_name("acme"), "s3-export-acme");
        assert_eq!(session_name(&"x".repeat(100)).len(), MAX_SESSION_NAME_CHARS);
    }
}
