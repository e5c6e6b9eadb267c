//! Writing into a destination bucket with the destination's settings, the
//! one way the verify function and the flusher's publishing both write.
//!
//! Guarantees: every request built here names the destination's bucket and
//! region, carries its server-side encryption (`AES256`, or `aws:kms` with its
//! key and S3 Bucket Key setting; nothing for the bucket default) and, when
//! the destination knows its owner's account, `ExpectedBucketOwner`, so a
//! bucket that changed hands is refused by S3 before anything is stored
//! (docs/design.md invariant 6). Only `PutObject` and the multipart upload calls
//! are offered: a destination needs nothing else (invariant 5). A failure
//! becomes a [`WriteFailure`] for [`crate::diagnose`].

use aws_sdk_s3::Client;
use aws_sdk_s3::config::Region;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::abort_multipart_upload::builders::AbortMultipartUploadFluentBuilder;
use aws_sdk_s3::operation::complete_multipart_upload::builders::CompleteMultipartUploadFluentBuilder;
use aws_sdk_s3::operation::create_multipart_upload::builders::CreateMultipartUploadFluentBuilder;
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::operation::upload_part::builders::UploadPartFluentBuilder;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption, StorageClass,
};
use aws_smithy_runtime_api::http::Response as HttpResponse;

use crate::config::{Destination, Encryption};
use crate::diagnose::{FailureKind, WriteFailure};

/// An S3 client for the destination's region (the bucket's region, when the
/// destination sets one), sharing `s3`'s HTTP connections, credentials and
/// endpoint. S3 answers a write sent to another region with a redirect, which
/// the SDK does not follow. When the destination sets `roleArn`, the client
/// writes with that role's credentials, assumed through STS with the
/// destination's `externalId` through `sts` (the function's own STS client)
/// and cached and refreshed by the client ([`crate::cross_account`]): keep
/// the client to reuse them.
pub fn client_for(
    s3: &Client,
    sts: Option<&aws_sdk_sts::Client>,
    destination: &Destination,
) -> Client {
    let region = destination
        .region
        .as_ref()
        .filter(|region| s3.config().region().map(Region::as_ref) != Some(region.as_str()));
    let role = crate::cross_account::AssumedRole::for_destination(sts, destination);
    if region.is_none() && role.is_none() {
        return s3.clone();
    }
    let mut config = s3.config().to_builder();
    if let Some(region) = region {
        config = config.region(Region::new(region.clone()));
    }
    if let Some(role) = role {
        config = config.credentials_provider(role);
    }
    Client::from_conf(config.build())
}

/// `PutObject` of `key` into the destination, with its encryption,
/// expected owner, storage class and tags set, and an SHA-256 integrity
/// checksum (`x-amz-checksum-sha256`, computed by the SDK over the body and
/// checked by S3); the caller adds the body and content headers. Tags make
/// S3 require `s3:PutObjectTagging` as well as `s3:PutObject`.
pub fn put_object(s3: &Client, destination: &Destination, key: &str) -> PutObjectFluentBuilder {
    with_object_settings!(s3.put_object(), destination, key)
}

/// A new object's settings, the same on `PutObject` and
/// `CreateMultipartUpload` (two SDK builders with the same setters): bucket
/// and key, expected owner, SHA-256 checksums, storage class, tags and
/// encryption.
macro_rules! with_object_settings {
    ($builder:expr, $destination:expr, $key:expr) => {{
        let destination = $destination;
        let (sse, kms_key_id, bucket_key) = encryption(destination);
        $builder
            .bucket(&destination.bucket)
            .key($key)
            .set_expected_bucket_owner(expected_bucket_owner(destination))
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .set_storage_class(storage_class(destination))
            .set_tagging(destination.content.tagging())
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key_id)
            .set_bucket_key_enabled(bucket_key)
    }};
}
use with_object_settings;

/// `CreateMultipartUpload` of `key` into the destination: the object's
/// settings as [`put_object`] gives them (encryption, expected owner,
/// storage class, tags), and SHA-256 checksums, which every part then
/// carries ([`upload_part`]); the caller adds the content headers. Needs
/// nothing but `s3:PutObject` (and `s3:PutObjectTagging` with tags).
pub fn create_multipart_upload(
    s3: &Client,
    destination: &Destination,
    key: &str,
) -> CreateMultipartUploadFluentBuilder {
    with_object_settings!(s3.create_multipart_upload(), destination, key)
}

/// `UploadPart` number `part_number` of `upload_id`, with the expected owner
/// and the part's SHA-256 checksum (computed by the SDK over the body, the
/// algorithm [`create_multipart_upload`] named); the caller adds the body.
/// The encryption is the upload's, set when it was created.
pub fn upload_part(
    s3: &Client,
    destination: &Destination,
    key: &str,
    upload_id: &str,
    part_number: i32,
) -> UploadPartFluentBuilder {
    s3.upload_part()
        .bucket(&destination.bucket)
        .key(key)
        .upload_id(upload_id)
        .part_number(part_number)
        .set_expected_bucket_owner(expected_bucket_owner(destination))
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
}

/// `CompleteMultipartUpload` of `upload_id` from `parts` (each with the
/// ETag and checksum its `UploadPart` answered), with the expected owner.
pub fn complete_multipart_upload(
    s3: &Client,
    destination: &Destination,
    key: &str,
    upload_id: &str,
    parts: Vec<CompletedPart>,
) -> CompleteMultipartUploadFluentBuilder {
    s3.complete_multipart_upload()
        .bucket(&destination.bucket)
        .key(key)
        .upload_id(upload_id)
        .set_expected_bucket_owner(expected_bucket_owner(destination))
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
}

/// `AbortMultipartUpload` of `upload_id`, with the expected owner. S3 asks
/// for `s3:AbortMultipartUpload`, which a destination need not grant: an
/// upload that cannot be aborted is left to the bucket's lifecycle rule
/// (`AbortIncompleteMultipartUpload`).
pub fn abort_multipart_upload(
    s3: &Client,
    destination: &Destination,
    key: &str,
    upload_id: &str,
) -> AbortMultipartUploadFluentBuilder {
    s3.abort_multipart_upload()
        .bucket(&destination.bucket)
        .key(key)
        .upload_id(upload_id)
        .set_expected_bucket_owner(expected_bucket_owner(destination))
}

/// The destination's server-side encryption as S3's three request fields:
/// the algorithm, the KMS key and the S3 Bucket Key setting (all `None` for
/// the bucket's default). Decided here for every write that sets it.
fn encryption(
    destination: &Destination,
) -> (Option<ServerSideEncryption>, Option<String>, Option<bool>) {
    match &destination.encryption {
        Encryption::BucketDefault => (None, None, None),
        Encryption::Aes256 => (Some(ServerSideEncryption::Aes256), None, None),
        Encryption::Kms { key_id, bucket_key } => (
            Some(ServerSideEncryption::AwsKms),
            key_id.clone(),
            Some(*bucket_key),
        ),
    }
}

/// The destination's storage class, when it sets one.
fn storage_class(destination: &Destination) -> Option<StorageClass> {
    destination
        .content
        .storage_class
        .as_deref()
        .map(StorageClass::from)
}

/// The `ExpectedBucketOwner` every request to the destination carries.
pub fn expected_bucket_owner(destination: &Destination) -> Option<String> {
    destination.account_id.clone()
}

/// Writes `body` as `key` into the destination (through [`client_for`], with
/// `sts` for a destination's role, and [`put_object`]), returning the ETag S3
/// gave, or what went wrong.
pub async fn write_object(
    s3: &Client,
    sts: Option<&aws_sdk_sts::Client>,
    destination: &Destination,
    key: &str,
    body: Vec<u8>,
    content_type: &str,
) -> Result<Option<String>, WriteFailure> {
    let client = client_for(s3, sts, destination);
    put_object(&client, destination, key)
        .content_type(content_type)
        .body(ByteStream::from(body))
        .send()
        .await
        .map(|output| output.e_tag)
        .map_err(|error| write_failure(&error))
}

/// What an SDK error says about a failed write: S3's code, status, message
/// and the bucket's region (from the raw error response, so a redirect's
/// `x-amz-bucket-region` header is kept), or a timeout, or a network failure.
pub fn write_failure<E>(error: &SdkError<E, HttpResponse>) -> WriteFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let chain = aws_sdk_s3::error::DisplayErrorContext(error).to_string();
    match error {
        SdkError::ServiceError(service) => {
            let raw = service.raw();
            let region = raw.headers().get("x-amz-bucket-region").map(str::to_owned);
            let body = raw
                .body()
                .bytes()
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or("");
            let mut failure =
                WriteFailure::from_response(raw.status().as_u16(), region.as_deref(), body);
            let err = service.err();
            failure.code = failure.code.or_else(|| err.code().map(str::to_owned));
            failure.message = failure.message.or_else(|| err.message().map(str::to_owned));
            failure.request_id = failure
                .request_id
                .or_else(|| raw.headers().get("x-amz-request-id").map(str::to_owned));
            failure
        }
        SdkError::TimeoutError(_) => WriteFailure::transport(FailureKind::Timeout, chain),
        SdkError::DispatchFailure(dispatch) if dispatch.is_timeout() => {
            WriteFailure::transport(FailureKind::Timeout, chain)
        }
        // A request the client itself found unusable (a bad endpoint, say)
        // is not the network's fault.
        SdkError::DispatchFailure(dispatch) if dispatch.is_user() => {
            WriteFailure::transport(FailureKind::Other, chain)
        }
        SdkError::DispatchFailure(_) => WriteFailure::transport(FailureKind::Network, chain),
        SdkError::ResponseError(response) => WriteFailure {
            kind: FailureKind::Other,
            status: Some(response.raw().status().as_u16()),
            message: Some(chain),
            ..WriteFailure::default()
        },
        _ => WriteFailure::transport(FailureKind::Other, chain),
    }
}
