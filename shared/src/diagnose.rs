//! Turns a failed write into a destination into a diagnosis a person can act
//! on: which permission is missing on which ARN (with the bucket policy to
//! paste), which KMS action the key refuses, the bucket's real region, a
//! bucket that does not exist or changed hands, and a timeout or network
//! failure told apart from a permission problem.
//!
//! Pure: [`WriteFailure`] holds what S3 (or the network) said, independent of
//! the SDK's types ([`crate::destination_write`] builds it from an SDK
//! error), and [`diagnose`] is a function of it, the destination and the
//! writer roles. The verify function and the flusher's publishing give the
//! same diagnosis for the same failure, so an alert reads the same whoever
//! raised it.

use std::fmt::Write as _;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

use crate::config::{Destination, Encryption};
use crate::policy;

/// How a write failed before any diagnosis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailureKind {
    /// S3 answered with an error response (its code and status say why).
    #[default]
    Response,
    /// No answer in time: a connect, attempt or operation timeout.
    Timeout,
    /// The request never got an answer: DNS, connection refused or reset, TLS.
    Network,
    /// Anything else: a request that could not be built, an unreadable answer.
    Other,
}

/// What a failed write told us: S3's error code, HTTP status and message, the
/// bucket's region when S3 named it (the `x-amz-bucket-region` header of a
/// redirect, or the `<Region>` of an error body), and its request id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteFailure {
    pub kind: FailureKind,
    pub code: Option<String>,
    pub message: Option<String>,
    pub status: Option<u16>,
    pub bucket_region: Option<String>,
    pub request_id: Option<String>,
}

impl WriteFailure {
    /// A failure from S3's error response: its HTTP status, its
    /// `x-amz-bucket-region` header and its XML body
    /// (`<Error><Code>…</Code><Message>…</Message>…</Error>`). Fields missing
    /// from the body stay `None`; the header wins over a `<Region>` element.
    pub fn from_response(status: u16, bucket_region_header: Option<&str>, body: &str) -> Self {
        let region = bucket_region_header
            .map(str::to_owned)
            .or_else(|| xml_element(body, "Region"))
            .or_else(|| {
                xml_element(body, "Endpoint").and_then(|endpoint| region_of_endpoint(&endpoint))
            });
        Self {
            kind: FailureKind::Response,
            code: xml_element(body, "Code"),
            message: xml_element(body, "Message"),
            status: Some(status),
            bucket_region: region.filter(|r| !r.is_empty()),
            request_id: xml_element(body, "RequestId"),
        }
    }

    /// A failure that got no answer from S3.
    pub fn transport(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: Some(message.into()),
            ..Self::default()
        }
    }
}

/// What is wrong, as a stable kind: alerts are de-duplicated per destination
/// and problem, and [`Problem::name`] is what logs, results and alert
/// attributes carry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Problem {
    /// The writer role may not `s3:PutObject` on the destination's prefix.
    AccessDenied,
    /// The destination's KMS key refuses the writer (or is disabled, missing
    /// or pending deletion).
    KmsDenied,
    /// The bucket does not exist.
    NoSuchBucket,
    /// The bucket is in another region than the one written to; `actual` is
    /// the bucket's region when S3 said it.
    WrongRegion { actual: Option<String> },
    /// The bucket is not owned by the destination's `accountId`.
    OwnerMismatch,
    /// No answer in time (not a permission problem).
    Timeout,
    /// No answer at all: DNS, connection, TLS (not a permission problem).
    Network,
    /// Anything else; the code and message say what.
    Other,
}

impl Problem {
    /// A stable snake_case name: `access_denied`, `kms_denied`,
    /// `no_such_bucket`, `wrong_region`, `owner_mismatch`, `timeout`,
    /// `network`, `other`.
    pub fn name(&self) -> &'static str {
        match self {
            Problem::AccessDenied => "access_denied",
            Problem::KmsDenied => "kms_denied",
            Problem::NoSuchBucket => "no_such_bucket",
            Problem::WrongRegion { .. } => "wrong_region",
            Problem::OwnerMismatch => "owner_mismatch",
            Problem::Timeout => "timeout",
            Problem::Network => "network",
            Problem::Other => "other",
        }
    }

    /// True for problems a later attempt may not have (timeouts, network
    /// failures); false for those that need a person to change something.
    pub fn is_transient(&self) -> bool {
        matches!(self, Problem::Timeout | Problem::Network)
    }
}

/// A diagnosis: S3's error code (or `Timeout` / `NetworkError` when S3 did
/// not answer), the problem, a one-sentence summary naming the action,
/// resource or region at fault, a remedy saying what to change, and the
/// policies to paste when permissions are missing (pretty-printed JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub code: String,
    pub problem: Problem,
    pub summary: String,
    pub remedy: String,
    /// The destination bucket's policy granting the writer roles
    /// `s3:PutObject`, for access denied.
    pub bucket_policy: Option<String>,
    /// The statement to add to the destination's KMS key policy, for a KMS
    /// refusal when the destination names its key.
    pub kms_key_policy_statement: Option<String>,
}

impl Diagnosis {
    /// The whole diagnosis as text for a person (an alert, a log, a
    /// terminal): summary, remedy, then the policies to paste.
    pub fn to_text(&self) -> String {
        let mut text = format!("{} ({})\n\n{}\n", self.summary, self.code, self.remedy);
        if let Some(policy) = &self.bucket_policy {
            let _ = write!(text, "\nBucket policy to paste:\n{policy}\n");
        }
        if let Some(statement) = &self.kms_key_policy_statement {
            let _ = write!(text, "\nKMS key policy statement to add:\n{statement}\n");
        }
        text
    }
}

/// As JSON: `{"code", "problem", "actualRegion"?, "summary", "remedy",
/// "bucketPolicy"?, "kmsKeyPolicyStatement"?}`, with the policies as JSON
/// objects rather than strings.
impl Serialize for Diagnosis {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("code", &self.code)?;
        map.serialize_entry("problem", self.problem.name())?;
        if let Problem::WrongRegion {
            actual: Some(region),
        } = &self.problem
        {
            map.serialize_entry("actualRegion", region)?;
        }
        map.serialize_entry("summary", &self.summary)?;
        map.serialize_entry("remedy", &self.remedy)?;
        for (name, json) in [
            ("bucketPolicy", &self.bucket_policy),
            ("kmsKeyPolicyStatement", &self.kms_key_policy_statement),
        ] {
            if let Some(json) = json {
                match RawValue::from_string(json.clone()) {
                    Ok(raw) => map.serialize_entry(name, &raw)?,
                    Err(_) => map.serialize_entry(name, json)?,
                }
            }
        }
        map.end()
    }
}

/// Diagnoses a failed write of `key` into `destination` by the writer roles
/// `principals` (the functions' own roles; empty when unknown, and the
/// generated policies then carry a placeholder to replace). A destination
/// with a `roleArn` is written by that role, so the diagnosis and its
/// policies name it instead ([`policy::writers`]).
pub fn diagnose(
    destination: &Destination,
    key: &str,
    failure: &WriteFailure,
    principals: &[String],
) -> Diagnosis {
    let writers = policy::writers(destination, principals);
    let principals = writers.as_slice();
    let target = format!("s3://{}/{}", destination.bucket, key);
    let said = failure
        .message
        .as_deref()
        .filter(|m| !m.is_empty())
        .map(|m| format!(" (S3 said: {m})"))
        .unwrap_or_default();
    match failure.kind {
        FailureKind::Timeout => {
            return plain(
                "Timeout",
                Problem::Timeout,
                format!(
                    "writing {target} timed out: S3 did not answer in time; this is not a permission problem{}",
                    detail(failure)
                ),
                "Usually transient: the next run tries again. If it persists, check the network \
                 path to S3 from the function (a VPC needs a NAT gateway or an S3 gateway \
                 endpoint) and the function's timeout.",
            );
        }
        FailureKind::Network => {
            return plain(
                "NetworkError",
                Problem::Network,
                format!(
                    "writing {target} failed before S3 answered (DNS, connection or TLS); this is not a permission problem{}",
                    detail(failure)
                ),
                "Check the network path to S3 from the function (a VPC needs a NAT gateway or an \
                 S3 gateway endpoint; a custom endpoint must be reachable); the next run tries again.",
            );
        }
        FailureKind::Response | FailureKind::Other => {}
    }

    let code = failure
        .code
        .clone()
        .unwrap_or_else(|| match failure.status {
            Some(status) => format!("Http{status}"),
            None => "Unknown".to_owned(),
        });
    let message = failure.message.as_deref().unwrap_or("");
    let who = match principals {
        [] => "the writer role".to_owned(),
        [one] => format!("`{one}`"),
        many => format!("`{}`", many.join("`, `")),
    };
    let partition = principals
        .first()
        .map_or("aws", |p| policy::partition_of(p));

    if code.starts_with("KMS.") || (code == "AccessDenied" && message.contains("kms:")) {
        return kms_denied(destination, &code, message, &who, principals);
    }

    match (code.as_str(), failure.status) {
        ("AccessDenied", _) | ("AllAccessDisabled", _) | (_, Some(403))
            if owner_refused(destination, message) =>
        {
            owner_mismatch(destination, code, &said)
        }
        ("AccessDenied", _) | (_, Some(403)) if !is_credentials_code(&code) => {
            let resource = policy::object_arn(partition, destination);
            let denial = NotAuthorized::parse(message);
            let explicit = message.contains("explicit deny");
            let mut summary = format!(
                "{who} may not `{}` on `{resource}`, so nothing can be written to destination `{}`{said}",
                policy::PUT_OBJECT,
                destination.name
            );
            if let Some(denial) = &denial
                && denial.action != policy::PUT_OBJECT
            {
                let _ = write!(summary, "; S3 refused `{}`", denial.action);
            }
            let mut remedy = if explicit {
                format!(
                    "An explicit Deny matches this write: remove or narrow the Deny statement for \
                     `{}` on `{resource}` (in the bucket policy, a service control policy or a \
                     permissions boundary); an Allow cannot override it. ",
                    policy::PUT_OBJECT
                )
            } else {
                String::new()
            };
            let _ = write!(
                remedy,
                "The owner of bucket `{}` pastes the bucket policy below (S3 console > bucket > \
                 Permissions > Bucket policy; merge its statement into an existing policy). The \
                 writer role's own policy must allow `{}` on `{resource}` too (the template grants \
                 it for the configured destinations).",
                destination.bucket,
                policy::PUT_OBJECT
            );
            if !destination.content.tags.is_empty() {
                let _ = write!(
                    remedy,
                    " The destination tags its objects, so S3 also requires `{}` for every \
                     write (both policies must allow it; the bucket policy below does).",
                    policy::PUT_OBJECT_TAGGING
                );
            }
            if let Some(account) = &destination.account_id {
                let _ = write!(
                    remedy,
                    " Writes carry ExpectedBucketOwner {account}, which S3 also refuses with \
                     AccessDenied when the bucket belongs to another account: if the policy is in \
                     place, check who owns the bucket."
                );
            }
            if principals.is_empty() {
                remedy.push_str(&format!(
                    " Replace `{}` with the writer role's ARN.",
                    policy::UNKNOWN_PRINCIPAL
                ));
            }
            Diagnosis {
                code,
                problem: Problem::AccessDenied,
                summary,
                remedy,
                bucket_policy: Some(policy::pretty(&policy::bucket_policy(
                    destination,
                    principals,
                ))),
                kms_key_policy_statement: None,
            }
        }
        ("NoSuchBucket", _) => plain(
            code,
            Problem::NoSuchBucket,
            format!(
                "bucket `{}` of destination `{}` does not exist{said}",
                destination.bucket, destination.name
            ),
            format!(
                "Create bucket `{}`{} or correct `bucket` of destination `{}`. A deleted bucket's \
                 name can be taken by another account: set `accountId` on the destination so \
                 writes are refused by any other owner.",
                destination.bucket,
                destination
                    .region
                    .as_deref()
                    .map(|r| format!(" in {r}"))
                    .unwrap_or_default(),
                destination.name
            ),
        ),
        ("PermanentRedirect" | "TemporaryRedirect" | "AuthorizationHeaderMalformed", _)
        | (_, Some(301 | 307)) => {
            let actual = failure
                .bucket_region
                .clone()
                .or_else(|| expected_region_in_message(message));
            let configured = destination
                .region
                .as_deref()
                .map(|r| format!("`{r}`"))
                .unwrap_or_else(|| "the function's own region".to_owned());
            let summary = match &actual {
                Some(actual) => format!(
                    "bucket `{}` is in `{actual}`, not in {configured} where destination `{}` writes",
                    destination.bucket, destination.name
                ),
                None => format!(
                    "bucket `{}` is not in {configured} where destination `{}` writes, and S3 did not say which region it is in{said}",
                    destination.bucket, destination.name
                ),
            };
            let remedy = match &actual {
                Some(actual) => format!(
                    "Set `\"region\": \"{actual}\"` on destination `{}`.",
                    destination.name
                ),
                None => format!(
                    "Find the bucket's region (S3 console, or `aws s3api get-bucket-location --bucket {}`) and set `region` on destination `{}`.",
                    destination.bucket, destination.name
                ),
            };
            plain(code, Problem::WrongRegion { actual }, summary, remedy)
        }
        ("InvalidBucketOwnerAWSAccountID", _) => owner_mismatch(destination, code, &said),
        ("RequestTimeout", _) => plain(
            code,
            Problem::Timeout,
            format!(
                "S3 gave up waiting for the body of {target}: a slow or broken upload, not a permission problem{said}"
            ),
            "Usually transient: the next run tries again. If it persists, check the network path \
             to S3 from the function.",
        ),
        (
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "TokenRefreshRequired"
            | "InvalidToken",
            _,
        ) => plain(
            code,
            Problem::Other,
            format!("S3 refused the writer's credentials for {target}{said}"),
            "The function's credentials are invalid or expired: check the execution role (and \
             any role assumed for this destination); they are not a bucket permission problem.",
        ),
        ("SlowDown" | "ServiceUnavailable" | "InternalError", _) | (_, Some(500..=599)) => plain(
            code,
            Problem::Other,
            format!("S3 could not take the write of {target} right now{said}"),
            "Transient on S3's side: the next run tries again.",
        ),
        ("InvalidArgument" | "InvalidRequest" | "InvalidEncryptionAlgorithmError", _) => plain(
            code,
            Problem::Other,
            format!("S3 refused the request for {target}{said}"),
            format!(
                "Check destination `{}`'s settings: encryption `{}`, storage class and key \
                 names must be ones the bucket accepts.",
                destination.name,
                encryption_name(&destination.encryption)
            ),
        ),
        _ => plain(
            code.clone(),
            Problem::Other,
            format!("writing {target} failed with `{code}`{said}"),
            "See S3's error code reference for this code; the next run tries again.",
        ),
    }
}

/// The encryption header value a destination asks for, for messages.
pub fn encryption_name(encryption: &Encryption) -> &'static str {
    match encryption {
        Encryption::BucketDefault => "bucket default",
        Encryption::Aes256 => "AES256",
        Encryption::Kms { .. } => "aws:kms",
    }
}

fn plain(
    code: impl Into<String>,
    problem: Problem,
    summary: String,
    remedy: impl Into<String>,
) -> Diagnosis {
    Diagnosis {
        code: code.into(),
        problem,
        summary,
        remedy: remedy.into(),
        bucket_policy: None,
        kms_key_policy_statement: None,
    }
}

fn detail(failure: &WriteFailure) -> String {
    failure
        .message
        .as_deref()
        .filter(|m| !m.is_empty())
        .map(|m| format!(" ({m})"))
        .unwrap_or_default()
}

fn is_credentials_code(code: &str) -> bool {
    matches!(
        code,
        "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "TokenRefreshRequired"
            | "InvalidToken"
    )
}

/// S3-compatible stores, and test fault layers, name the owner check in the
/// message; AWS itself answers a mismatch with a plain AccessDenied.
fn owner_refused(destination: &Destination, message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    destination.account_id.is_some()
        && (lower.contains("expected bucket owner") || lower.contains("expectedbucketowner"))
}

fn owner_mismatch(destination: &Destination, code: String, said: &str) -> Diagnosis {
    let account = destination.account_id.as_deref().unwrap_or("(none)");
    plain(
        code,
        Problem::OwnerMismatch,
        format!(
            "bucket `{}` is not owned by account {account}, the `accountId` of destination `{}`, so nothing was written{said}",
            destination.bucket, destination.name
        ),
        format!(
            "The bucket changed hands, or `accountId` is wrong. Confirm who owns `{}`; if it is \
             yours, correct `accountId` on destination `{}`. Never remove `accountId` to make the \
             write pass: it is what keeps data out of a bucket someone else took.",
            destination.bucket, destination.name
        ),
    )
}

fn kms_denied(
    destination: &Destination,
    code: &str,
    message: &str,
    who: &str,
    principals: &[String],
) -> Diagnosis {
    let denial = NotAuthorized::parse(message);
    let action = denial
        .as_ref()
        .map(|d| d.action.clone())
        .filter(|a| a.starts_with("kms:"))
        .or_else(|| first_token_with(message, "kms:"))
        .unwrap_or_else(|| "kms:GenerateDataKey".to_owned());
    let key = denial
        .as_ref()
        .and_then(|d| d.resource.clone())
        .filter(|r| r.contains(":kms:"))
        .or_else(|| first_arn_of(message, ":kms:"))
        .or_else(|| policy::kms_key(destination).map(str::to_owned))
        .unwrap_or_else(|| "the destination's KMS key".to_owned());
    let state = match code {
        "KMS.DisabledException" => Some("the key is disabled: enable it"),
        "KMS.NotFoundException" => Some(
            "the key does not exist (or not in the bucket's region): check `kmsKeyId`, and use the key's ARN",
        ),
        "KMS.KMSInvalidStateException" => Some(
            "the key is pending deletion or unavailable: cancel its deletion or choose another key",
        ),
        _ => None,
    };
    let summary = match state {
        Some(_) => format!(
            "KMS key `{key}` cannot encrypt writes to destination `{}` ({code}: {message})",
            destination.name
        ),
        None => format!(
            "{who} may not `{action}` on KMS key `{key}`, so S3 cannot encrypt writes to destination `{}`",
            destination.name
        ),
    };
    let mut remedy = match state {
        Some(state) => format!("{}. ", capitalize(state)),
        None => String::new(),
    };
    let _ = write!(
        remedy,
        "Add the statement below to the key policy of `{key}` (KMS console > key > Key policy), \
         and allow {} on that key in the writer role's policy (the template grants it for the \
         configured keys). The key must be in the bucket's region.",
        policy::KMS_ACTIONS
            .iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Diagnosis {
        code: code.to_owned(),
        problem: Problem::KmsDenied,
        summary,
        remedy,
        bucket_policy: None,
        kms_key_policy_statement: policy::kms_key_policy_statement(destination, principals)
            .map(|s| policy::pretty(&s)),
    }
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The parts of AWS's "User: <principal> is not authorized to perform:
/// <action> on resource: <resource> because <reason>" message.
#[derive(Debug, PartialEq, Eq)]
struct NotAuthorized {
    action: String,
    resource: Option<String>,
}

impl NotAuthorized {
    fn parse(message: &str) -> Option<Self> {
        let (_, rest) = message.split_once("is not authorized to perform:")?;
        let rest = rest.trim_start();
        let action: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == ':' || *c == '*')
            .collect();
        let resource = rest.split_once("on resource:").map(|(_, r)| {
            r.trim_start()
                .trim_start_matches('"')
                .split(|c: char| c.is_whitespace() || c == '"')
                .next()
                .unwrap_or("")
                .to_owned()
        });
        (!action.is_empty()).then_some(Self {
            action,
            resource: resource.filter(|r| !r.is_empty()),
        })
    }
}

fn first_token_with(message: &str, prefix: &str) -> Option<String> {
    let start = message.find(prefix)?;
    let token: String = message[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == ':')
        .collect();
    (token.len() > prefix.len()).then_some(token)
}

fn first_arn_of(message: &str, service: &str) -> Option<String> {
    message
        .split(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',')
        .find(|word| word.starts_with("arn:") && word.contains(service))
        .map(|word| word.trim_end_matches(['.', ')']).to_owned())
}

/// `the region 'us-east-1' is wrong; expecting 'us-west-2'` gives `us-west-2`.
fn expected_region_in_message(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("expecting '")?;
    let region = rest.split('\'').next()?;
    (!region.is_empty()).then(|| region.to_owned())
}

/// `bucket.s3.us-west-2.amazonaws.com`, `s3-us-west-2.amazonaws.com` or
/// `s3.dualstack.eu-west-1.amazonaws.com` give the region.
fn region_of_endpoint(endpoint: &str) -> Option<String> {
    let labels: Vec<&str> = endpoint.split('.').collect();
    let s3 = labels
        .iter()
        .position(|l| *l == "s3" || l.starts_with("s3-"))?;
    let candidate = if let Some(region) = labels[s3].strip_prefix("s3-") {
        region
    } else {
        labels[s3 + 1..]
            .iter()
            .find(|l| **l != "dualstack")
            .copied()?
    };
    (candidate.split('-').count() >= 3).then(|| candidate.to_owned())
}

/// The text of the first `<name>…</name>` element, unescaped.
fn xml_element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = "arn:aws:iam::111122223333:role/s3-export-writer";
    const KEY: &str = "arn:aws:kms:us-west-2:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    const KEY_NAME: &str = "events/airkit-verify-test-20261122T093000Z";

    use crate::config::test_destination as configured;

    fn destination() -> Destination {
        configured(
            r#"{"name":"acme","bucket":"acme-exports","region":"us-west-2","prefix":"events/","encryption":"AES256"}"#,
        )
    }

    fn kms_destination() -> Destination {
        Destination {
            encryption: Encryption::Kms {
                key_id: Some(KEY.into()),
                bucket_key: true,
            },
            ..destination()
        }
    }

    fn roles() -> Vec<String> {
        vec![ROLE.to_owned()]
    }

    fn from_xml(status: u16, region: Option<&str>, xml: &str) -> Diagnosis {
        diagnose(
            &destination(),
            KEY_NAME,
            &WriteFailure::from_response(status, region, xml),
            &roles(),
        )
    }

    #[test]
    fn cross_account_access_denied_names_action_arn_and_gives_the_policy() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>AccessDenied</Code><Message>Access Denied</Message><RequestId>4442587FB7D0A2F9</RequestId><HostId>Uuag1LuByRx9e6j5Onimru9pO4ZVKnJ2Qz7/C1NPcfTWAtRPfTaOFg==</HostId></Error>"#;
        let diagnosis = from_xml(403, None, xml);
        assert_eq!(diagnosis.code, "AccessDenied");
        assert_eq!(diagnosis.problem, Problem::AccessDenied);
        assert!(
            diagnosis.summary.contains("`s3:PutObject`"),
            "{diagnosis:?}"
        );
        assert!(
            diagnosis
                .summary
                .contains("`arn:aws:s3:::acme-exports/events/*`"),
            "{diagnosis:?}"
        );
        assert!(diagnosis.summary.contains(ROLE));
        let policy: serde_json::Value =
            serde_json::from_str(diagnosis.bucket_policy.as_deref().unwrap()).unwrap();
        assert_eq!(policy["Statement"][0]["Principal"]["AWS"], ROLE);
        assert_eq!(
            policy["Statement"][0]["Resource"][0],
            "arn:aws:s3:::acme-exports/events/*"
        );
    }

    #[test]
    fn explicit_deny_says_so() {
        let xml = "<Error><Code>AccessDenied</Code><Message>User: arn:aws:sts::111122223333:assumed-role/s3-export-writer/verify is not authorized to perform: s3:PutObject on resource: \"arn:aws:s3:::acme-exports/events/airkit-verify-test-20261122T093000Z\" with an explicit deny in a resource-based policy</Message></Error>";
        let diagnosis = from_xml(403, None, xml);
        assert_eq!(diagnosis.problem, Problem::AccessDenied);
        assert!(
            diagnosis.remedy.starts_with("An explicit Deny"),
            "{diagnosis:?}"
        );
    }

    #[test]
    fn access_denied_with_expected_owner_mentions_the_owner_check() {
        let destination = Destination {
            account_id: Some("444455556666".into()),
            ..destination()
        };
        let failure = WriteFailure::from_response(
            403,
            None,
            "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
        );
        let diagnosis = diagnose(&destination, KEY_NAME, &failure, &[]);
        assert_eq!(diagnosis.problem, Problem::AccessDenied);
        assert!(
            diagnosis
                .remedy
                .contains("ExpectedBucketOwner 444455556666")
        );
        assert!(diagnosis.remedy.contains(policy::UNKNOWN_PRINCIPAL));
    }

    #[test]
    fn access_denied_of_a_tagging_destination_asks_for_put_object_tagging() {
        let destination =
            configured(r#"{"name":"acme","bucket":"acme-exports","tags":{"team":"data"}}"#);
        let failure = WriteFailure::from_response(
            403,
            None,
            "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
        );
        let diagnosis = diagnose(&destination, KEY_NAME, &failure, &[ROLE.to_owned()]);
        assert!(
            diagnosis.remedy.contains(policy::PUT_OBJECT_TAGGING),
            "{diagnosis:?}"
        );
        assert!(
            diagnosis
                .bucket_policy
                .unwrap()
                .contains("s3:PutObjectTagging")
        );
        let untagged = configured(r#"{"name":"acme","bucket":"acme-exports"}"#);
        let diagnosis = diagnose(&untagged, KEY_NAME, &failure, &[ROLE.to_owned()]);
        assert!(!diagnosis.remedy.contains(policy::PUT_OBJECT_TAGGING));
    }

    /// A destination with a `roleArn` is written by that role: the
    /// diagnosis and the policy to paste name it, not the function's role.
    #[test]
    fn access_denied_of_a_destination_with_a_role_names_that_role() {
        let assumed = "arn:aws:iam::444455556666:role/acme-writes";
        let destination = configured(&format!(
            r#"{{"name":"acme","bucket":"acme-exports","roleArn":"{assumed}","externalId":"xid"}}"#
        ));
        let failure = WriteFailure::from_response(
            403,
            None,
            "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
        );
        let diagnosis = diagnose(&destination, KEY_NAME, &failure, &roles());
        assert!(diagnosis.summary.contains(assumed), "{diagnosis:?}");
        let pasted: serde_json::Value =
            serde_json::from_str(&diagnosis.bucket_policy.unwrap()).unwrap();
        assert_eq!(pasted["Statement"][0]["Principal"]["AWS"], assumed);
    }

    #[test]
    fn kms_refusal_names_the_action_and_the_key() {
        let xml = format!(
            "<Error><Code>AccessDenied</Code><Message>User: arn:aws:sts::111122223333:assumed-role/s3-export-writer/verify is not authorized to perform: kms:GenerateDataKey on resource: {KEY} because no resource-based policy allows the kms:GenerateDataKey action</Message><RequestId>R</RequestId></Error>"
        );
        let failure = WriteFailure::from_response(403, None, &xml);
        let diagnosis = diagnose(&kms_destination(), KEY_NAME, &failure, &roles());
        assert_eq!(diagnosis.problem, Problem::KmsDenied);
        assert_eq!(diagnosis.code, "AccessDenied");
        assert!(
            diagnosis.summary.contains("`kms:GenerateDataKey`"),
            "{diagnosis:?}"
        );
        assert!(diagnosis.summary.contains(KEY));
        let statement: serde_json::Value =
            serde_json::from_str(diagnosis.kms_key_policy_statement.as_deref().unwrap()).unwrap();
        assert_eq!(statement["Principal"]["AWS"], ROLE);
        assert!(diagnosis.bucket_policy.is_none());
    }

    #[test]
    fn disabled_key_is_a_kms_problem() {
        let failure = WriteFailure::from_response(
            400,
            None,
            &format!(
                "<Error><Code>KMS.DisabledException</Code><Message>{KEY} is disabled.</Message></Error>"
            ),
        );
        let diagnosis = diagnose(&kms_destination(), KEY_NAME, &failure, &roles());
        assert_eq!(diagnosis.problem, Problem::KmsDenied);
        assert!(diagnosis.remedy.starts_with("The key is disabled"));
    }

    #[test]
    fn no_such_bucket() {
        let xml = "<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><BucketName>acme-exports</BucketName></Error>";
        let diagnosis = from_xml(404, None, xml);
        assert_eq!(diagnosis.problem, Problem::NoSuchBucket);
        assert!(diagnosis.summary.contains("`acme-exports`"));
        assert!(diagnosis.remedy.contains("in us-west-2"));
    }

    #[test]
    fn permanent_redirect_gives_the_real_region_from_the_header() {
        let xml = "<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.</Message><Endpoint>acme-exports.s3.eu-central-1.amazonaws.com</Endpoint><Bucket>acme-exports</Bucket></Error>";
        let diagnosis = from_xml(301, Some("eu-west-1"), xml);
        assert_eq!(
            diagnosis.problem,
            Problem::WrongRegion {
                actual: Some("eu-west-1".into())
            }
        );
        assert!(diagnosis.remedy.contains(r#""region": "eu-west-1""#));
        // Without the header, the endpoint names the region.
        let diagnosis = from_xml(301, None, xml);
        assert_eq!(
            diagnosis.problem,
            Problem::WrongRegion {
                actual: Some("eu-central-1".into())
            }
        );
    }

    #[test]
    fn malformed_authorization_region_is_a_wrong_region() {
        let xml = "<Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is malformed; the region 'us-west-2' is wrong; expecting 'ap-southeast-2'</Message><Region>ap-southeast-2</Region></Error>";
        let diagnosis = from_xml(400, None, xml);
        assert_eq!(
            diagnosis.problem,
            Problem::WrongRegion {
                actual: Some("ap-southeast-2".into())
            }
        );
    }

    #[test]
    fn owner_mismatch_is_told_when_the_answer_names_it() {
        let destination = Destination {
            account_id: Some("444455556666".into()),
            ..destination()
        };
        let failure = WriteFailure::from_response(
            403,
            None,
            "<Error><Code>AccessDenied</Code><Message>Access Denied: the bucket is not owned by the expected bucket owner</Message></Error>",
        );
        let diagnosis = diagnose(&destination, KEY_NAME, &failure, &roles());
        assert_eq!(diagnosis.problem, Problem::OwnerMismatch);
        assert!(diagnosis.summary.contains("444455556666"));
        let failure = WriteFailure::from_response(
            400,
            None,
            "<Error><Code>InvalidBucketOwnerAWSAccountID</Code><Message>The value of the expected bucket owner parameter must be an AWS Account ID</Message></Error>",
        );
        let diagnosis = diagnose(&destination, KEY_NAME, &failure, &roles());
        assert_eq!(diagnosis.problem, Problem::OwnerMismatch);
    }

    #[test]
    fn timeouts_and_network_errors_are_not_permission_problems() {
        let timeout = diagnose(
            &destination(),
            KEY_NAME,
            &WriteFailure::transport(FailureKind::Timeout, "operation timed out after 10s"),
            &roles(),
        );
        assert_eq!(timeout.problem, Problem::Timeout);
        assert_eq!(timeout.code, "Timeout");
        assert!(timeout.summary.contains("not a permission problem"));
        assert!(timeout.bucket_policy.is_none());
        let network = diagnose(
            &destination(),
            KEY_NAME,
            &WriteFailure::transport(FailureKind::Network, "connection refused"),
            &roles(),
        );
        assert_eq!(network.problem, Problem::Network);
        assert_eq!(network.code, "NetworkError");
        assert!(network.problem.is_transient());
        let request_timeout = from_xml(
            400,
            None,
            "<Error><Code>RequestTimeout</Code><Message>Your socket connection to the server was not read from or written to within the timeout period. Idle connections will be closed.</Message></Error>",
        );
        assert_eq!(request_timeout.problem, Problem::Timeout);
    }

    #[test]
    fn bad_credentials_are_not_a_bucket_policy_problem() {
        let diagnosis = from_xml(
            403,
            None,
            "<Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>",
        );
        assert_eq!(diagnosis.problem, Problem::Other);
        assert!(diagnosis.bucket_policy.is_none());
        assert!(diagnosis.remedy.contains("credentials"));
    }

    #[test]
    fn serializes_policies_as_json_objects() {
        let diagnosis = from_xml(
            403,
            None,
            "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
        );
        let json = serde_json::to_value(&diagnosis).unwrap();
        assert_eq!(json["problem"], "access_denied");
        assert_eq!(json["bucketPolicy"]["Version"], "2012-10-17");
        let text = diagnosis.to_text();
        assert!(text.contains("Bucket policy to paste:"));
    }

    #[test]
    fn xml_entities_are_unescaped() {
        let failure = WriteFailure::from_response(
            400,
            None,
            "<Error><Code>InvalidArgument</Code><Message>a &amp; b &lt;c&gt;</Message></Error>",
        );
        assert_eq!(failure.message.as_deref(), Some("a & b <c>"));
    }
}
