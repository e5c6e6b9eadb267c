//! The permissions a destination needs, written out as the JSON a person
//! pastes: the destination bucket's policy, the KMS key policy statement when
//! the destination encrypts with a key, and the writer role's own identity
//! policy.
//!
//! Upholds docs/design.md's invariant 5: a destination is asked for `s3:PutObject`
//! on its prefix only (plus the KMS actions SSE-KMS needs), never for list,
//! get or delete. Everything here is a pure function of the destination and
//! the principals, so the policies the verify function suggests, the ones the
//! `s3-export policy` command prints and the ones the tests check are the same.

use serde_json::{Value, json};

use crate::config::{Destination, Encryption};

/// The S3 action every destination needs, and the only one. It covers the
/// multipart upload the flusher sends a large export file with (S3
/// authorizes `CreateMultipartUpload`, `UploadPart` and
/// `CompleteMultipartUpload` as `s3:PutObject`). `s3:AbortMultipartUpload`
/// is not asked for: an upload that failed and could not be aborted is
/// removed by the bucket's lifecycle rule (`AbortIncompleteMultipartUpload`),
/// never completed, so no object holds it.
pub const PUT_OBJECT: &str = "s3:PutObject";

/// The S3 action a destination with object tags needs as well: S3
/// authorizes a `PutObject` that carries tags for both actions.
pub const PUT_OBJECT_TAGGING: &str = "s3:PutObjectTagging";

/// The S3 actions writing to the destination needs: `s3:PutObject`, and
/// `s3:PutObjectTagging` when the destination tags its objects.
pub fn s3_actions(destination: &Destination) -> Vec<&'static str> {
    if destination.content.tags.is_empty() {
        vec![PUT_OBJECT]
    } else {
        vec![PUT_OBJECT, PUT_OBJECT_TAGGING]
    }
}

/// The KMS actions a writer needs on a destination's key: S3 asks KMS for a
/// data key (`kms:GenerateDataKey`) on every SSE-KMS write, and decrypts it
/// again (`kms:Decrypt`) for each part of a multipart upload, which the
/// flusher uses for large export files. `kms:Encrypt` covers clients that
/// encrypt with the key directly.
pub const KMS_ACTIONS: [&str; 3] = ["kms:GenerateDataKey", "kms:Encrypt", "kms:Decrypt"];

/// The statement id of the generated bucket policy statement, stable so a
/// person can find and replace it later.
pub const BUCKET_POLICY_SID: &str = "S3ExportWrite";

/// The statement id of the generated KMS key policy statement.
pub const KMS_POLICY_SID: &str = "S3ExportUseKeyForWrites";

/// Shown in place of the principal when the writer role is not known.
pub const UNKNOWN_PRINCIPAL: &str = "arn:aws:iam::<ACCOUNT_ID>:role/<WRITER_ROLE>";

/// The AWS partition of an ARN (`aws`, `aws-cn`, `aws-us-gov`), `aws` when
/// the text is not an ARN, so generated ARNs match the writer's partition.
pub fn partition_of(arn: &str) -> &str {
    match arn.split(':').collect::<Vec<_>>().as_slice() {
        ["arn", partition, ..] if !partition.is_empty() => partition,
        _ => "aws",
    }
}

/// `arn:<partition>:s3:::<bucket>/<prefix>*`: every key the destination is
/// written under (its prefix, or the whole bucket when the prefix is empty).
pub fn object_arn(partition: &str, destination: &Destination) -> String {
    format!(
        "arn:{partition}:s3:::{}/{}*",
        destination.bucket, destination.prefix
    )
}

/// The key ARN or id the destination encrypts with, when it names one.
pub fn kms_key(destination: &Destination) -> Option<&str> {
    match &destination.encryption {
        Encryption::Kms {
            key_id: Some(key), ..
        } => Some(key),
        _ => None,
    }
}

/// The principals whose credentials write to `destination`, which its
/// bucket and key policies must name: its `roleArn` when it has one (the
/// functions assume that role and write as it; their own roles only assume
/// it), else `function_roles`, the functions' own roles.
pub fn writers(destination: &Destination, function_roles: &[String]) -> Vec<String> {
    match &destination.role_arn {
        Some(role) => vec![role.clone()],
        None => function_roles.to_vec(),
    }
}

fn principal_value(principals: &[String]) -> Value {
    match principals {
        [] => json!(UNKNOWN_PRINCIPAL),
        [one] => json!(one),
        many => json!(many),
    }
}

fn partition_for(principals: &[String]) -> &str {
    principals.first().map_or("aws", |p| partition_of(p))
}

/// The destination bucket's policy, in the seeds' shape: one `Allow` of
/// `s3:PutObject` on `arn:aws:s3:::<bucket>/<prefix>*` to the writer roles
/// (a placeholder when `principals` is empty). Its bucket owner pastes it
/// under Permissions > Bucket policy (merging the statement into an existing
/// policy).
pub fn bucket_policy(destination: &Destination, principals: &[String]) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": BUCKET_POLICY_SID,
            "Effect": "Allow",
            "Principal": { "AWS": principal_value(principals) },
            "Action": s3_actions(destination),
            "Resource": [object_arn(partition_for(principals), destination)],
        }]
    })
}

/// The statement to add to the destination's KMS key policy, when it
/// encrypts with a named key: the [`KMS_ACTIONS`] to the writer roles, only
/// through S3 (`kms:ViaService`, when the destination's region is known).
/// `None` for destinations without a named key (SSE-S3 or the AWS managed
/// `aws/s3` key, whose policy cannot be changed).
pub fn kms_key_policy_statement(destination: &Destination, principals: &[String]) -> Option<Value> {
    kms_key(destination)?;
    let mut statement = json!({
        "Sid": KMS_POLICY_SID,
        "Effect": "Allow",
        "Principal": { "AWS": principal_value(principals) },
        "Action": KMS_ACTIONS,
        // In a key policy, "*" means the key the policy is attached to.
        "Resource": "*",
    });
    if let Some(region) = &destination.region {
        statement["Condition"] =
            json!({ "StringEquals": { "kms:ViaService": format!("s3.{region}.amazonaws.com") } });
    }
    Some(statement)
}

/// The writer role's own (identity) policy for this destination: the same
/// actions on the same resources. Within one account either the bucket policy
/// or this suffices; across accounts both are needed.
pub fn identity_policy(destination: &Destination, partition: &str) -> Value {
    let mut statements = vec![json!({
        "Sid": "S3ExportWriteDestination",
        "Effect": "Allow",
        "Action": s3_actions(destination),
        "Resource": [object_arn(partition, destination)],
    })];
    if let Some(key) = kms_key(destination) {
        statements.push(json!({
            "Sid": "S3ExportUseDestinationKey",
            "Effect": "Allow",
            "Action": KMS_ACTIONS,
            "Resource": [key],
        }));
    }
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// Pretty-printed JSON, ready to paste, with the keys in the order AWS's
/// documentation writes them (`Version`, `Sid`, `Effect`, `Principal`,
/// `Action`, `Resource`, `Condition`), not alphabetically.
pub fn pretty(policy: &Value) -> String {
    serde_json::to_string_pretty(&InPolicyOrder(policy)).expect("a JSON value always serializes")
}

/// Serializes a JSON value with policy keys in their customary order.
struct InPolicyOrder<'a>(&'a Value);

impl serde::Serialize for InPolicyOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        const ORDER: [&str; 9] = [
            "Version",
            "Id",
            "Statement",
            "Sid",
            "Effect",
            "Principal",
            "Action",
            "Resource",
            "Condition",
        ];
        match self.0 {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort_by_key(|k| {
                    (
                        ORDER.iter().position(|o| o == k).unwrap_or(ORDER.len()),
                        k.as_str(),
                    )
                });
                let mut out = serializer.serialize_map(Some(keys.len()))?;
                for key in keys {
                    out.serialize_entry(key, &InPolicyOrder(&map[key]))?;
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&InPolicyOrder(item))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// The IAM role ARN behind an assumed-role session ARN, as STS
/// `GetCallerIdentity` reports it inside Lambda
/// (`arn:aws:sts::123456789012:assumed-role/<role>/<session>` becomes
/// `arn:aws:iam::123456789012:role/<role>`). A role ARN is returned as is;
/// anything else gives `None`. A role created with a path loses it here
/// (the session ARN does not carry it): set the role ARN explicitly then.
pub fn role_arn_from_caller(arn: &str) -> Option<String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [_, partition, service, _, account, resource] = parts.as_slice() else {
        return None;
    };
    match *service {
        "iam" if resource.starts_with("role/") => Some(arn.to_owned()),
        "sts" => {
            let role = resource.strip_prefix("assumed-role/")?.split('/').next()?;
            (!role.is_empty()).then(|| format!("arn:{partition}:iam::{account}:role/{role}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::test_destination as configured;

    fn destination(prefix: &str, encryption: Encryption, region: Option<&str>) -> Destination {
        let mut destination = configured(r#"{"name":"acme","bucket":"acme-exports"}"#);
        destination.prefix = prefix.into();
        destination.encryption = encryption;
        destination.region = region.map(Into::into);
        destination
    }

    const ROLE: &str = "arn:aws:iam::111122223333:role/s3-export-writer";

    #[test]
    fn bucket_policy_grants_put_object_on_the_prefix_to_the_role() {
        let policy = bucket_policy(
            &destination("events/", Encryption::Aes256, None),
            &[ROLE.to_owned()],
        );
        assert_eq!(
            policy,
            json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Sid": "S3ExportWrite",
                    "Effect": "Allow",
                    "Principal": {"AWS": ROLE},
                    "Action": ["s3:PutObject"],
                    "Resource": ["arn:aws:s3:::acme-exports/events/*"],
                }]
            })
        );
    }

    #[test]
    fn tags_add_put_object_tagging_to_both_policies() {
        let tagged =
            configured(r#"{"name":"acme","bucket":"acme-exports","tags":{"team":"data"}}"#);
        let policy = bucket_policy(&tagged, &[ROLE.to_owned()]);
        assert_eq!(
            policy["Statement"][0]["Action"],
            json!(["s3:PutObject", "s3:PutObjectTagging"])
        );
        let identity = identity_policy(&tagged, "aws");
        assert_eq!(
            identity["Statement"][0]["Action"],
            json!(["s3:PutObject", "s3:PutObjectTagging"])
        );
        let untagged = configured(r#"{"name":"acme","bucket":"acme-exports"}"#);
        assert_eq!(
            bucket_policy(&untagged, &[ROLE.to_owned()])["Statement"][0]["Action"],
            json!(["s3:PutObject"])
        );
    }

    #[test]
    fn empty_prefix_covers_the_whole_bucket_and_unknown_role_is_a_placeholder() {
        let policy = bucket_policy(&destination("", Encryption::BucketDefault, None), &[]);
        assert_eq!(
            policy["Statement"][0]["Resource"][0],
            "arn:aws:s3:::acme-exports/*"
        );
        assert_eq!(
            policy["Statement"][0]["Principal"]["AWS"],
            UNKNOWN_PRINCIPAL
        );
    }

    #[test]
    fn several_writer_roles_are_listed_and_partition_follows_them() {
        let roles = vec![
            "arn:aws-cn:iam::111122223333:role/a".to_owned(),
            "arn:aws-cn:iam::111122223333:role/b".to_owned(),
        ];
        let policy = bucket_policy(&destination("p/", Encryption::Aes256, None), &roles);
        assert_eq!(policy["Statement"][0]["Principal"]["AWS"], json!(roles));
        assert_eq!(
            policy["Statement"][0]["Resource"][0],
            "arn:aws-cn:s3:::acme-exports/p/*"
        );
    }

    #[test]
    fn kms_statement_only_for_a_named_key() {
        let key = "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let kms = destination(
            "events/",
            Encryption::Kms {
                key_id: Some(key.into()),
                bucket_key: true,
            },
            Some("us-west-2"),
        );
        let statement = kms_key_policy_statement(&kms, &[ROLE.to_owned()]).unwrap();
        assert_eq!(
            statement["Action"],
            json!(["kms:GenerateDataKey", "kms:Encrypt", "kms:Decrypt"])
        );
        assert_eq!(
            statement["Condition"]["StringEquals"]["kms:ViaService"],
            "s3.us-west-2.amazonaws.com"
        );
        assert_eq!(statement["Resource"], "*");
        let identity = identity_policy(&kms, "aws");
        assert_eq!(identity["Statement"][1]["Resource"][0], key);

        let default_key = destination(
            "",
            Encryption::Kms {
                key_id: None,
                bucket_key: true,
            },
            None,
        );
        assert!(kms_key_policy_statement(&default_key, &[]).is_none());
        assert!(
            kms_key_policy_statement(&destination("", Encryption::Aes256, None), &[]).is_none()
        );
    }

    #[test]
    fn a_destination_with_a_role_is_written_by_that_role() {
        let own = [ROLE.to_owned()];
        let plain = configured(r#"{"name":"acme","bucket":"acme-exports"}"#);
        assert_eq!(writers(&plain, &own), own);
        let assumed = "arn:aws:iam::444455556666:role/acme-writes";
        let cross = configured(&format!(
            r#"{{"name":"acme","bucket":"acme-exports","roleArn":"{assumed}","externalId":"xid"}}"#
        ));
        assert_eq!(writers(&cross, &own), [assumed]);
        assert_eq!(writers(&cross, &[]), [assumed]);
    }

    #[test]
    fn pretty_policy_reads_in_the_customary_key_order() {
        let text = pretty(&bucket_policy(
            &destination("", Encryption::Aes256, None),
            &[ROLE.to_owned()],
        ));
        let at = |key: &str| text.find(&format!("\"{key}\"")).unwrap();
        assert!(at("Version") < at("Statement"));
        assert!(at("Sid") < at("Effect"));
        assert!(at("Effect") < at("Principal"));
        assert!(at("Principal") < at("Action"));
        assert!(at("Action") < at("Resource"));
    }

    #[test]
    fn assumed_role_session_arn_gives_the_role_arn() {
        assert_eq!(
            role_arn_from_caller(
                "arn:aws:sts::111122223333:assumed-role/s3-export-writer/s3-export-verify"
            )
            .as_deref(),
            Some(ROLE)
        );
        assert_eq!(role_arn_from_caller(ROLE).as_deref(), Some(ROLE));
        assert_eq!(
            role_arn_from_caller("arn:aws:iam::111122223333:user/alice"),
            None
        );
        assert_eq!(role_arn_from_caller("not an arn"), None);
    }
}
