//! The template's permissions, option set by option set: the writer role
//! grants exactly what writing to each configured destination needs (the
//! same statements `shared::policy` prints for verify and `s3-export
//! policy`), its outputs are the policies those print, only the named
//! principal may change `config/`, and the export bucket keeps the
//! configuration's versions.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use shared::Config;
use shared::config::Destination;
use shared::policy;

use super::{Stack, allowed_actions, load, strings};

const BUCKET: [(&str, &str); 2] = [
    ("DestinationBucket", "acme-exports"),
    ("DestinationPrefix", "events/"),
];
const KEY: &str = "arn:aws:kms:us-west-2:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const ROLE: &str = "arn:aws:iam::444455556666:role/s3-export-writes";
const CONFIG_WRITER: &str = "arn:aws:iam::111122223333:role/config-admin";
/// The writer role's ARN as the evaluated template writes it.
const WRITER: &str = "DestinationWriterRole.Arn";

/// Every option of the single destination, alone and together.
fn destination_option_sets() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    let with = |more: &[(&'static str, &'static str)]| {
        let mut all = BUCKET.to_vec();
        all.extend_from_slice(more);
        all
    };
    let tags = ("DestinationTags", "team=data,cost=export");
    let kms = [
        ("DestinationEncryption", "aws:kms"),
        ("DestinationKmsKeyArn", KEY),
        ("DestinationRegion", "us-west-2"),
    ];
    let owner = ("DestinationAccountId", "444455556666");
    let role = [
        ("DestinationRoleArn", ROLE),
        ("DestinationExternalId", "acme-external-id"),
    ];
    let mut all_but_a_role = with(&[tags, owner]);
    all_but_a_role.extend_from_slice(&kms);
    let mut everything = all_but_a_role.clone();
    everything.extend_from_slice(&role);
    vec![
        ("bucket", with(&[])),
        ("tags", with(&[tags])),
        ("kms", with(&kms)),
        ("kms in the stack's region", with(&kms[..2])),
        ("owner", with(&[owner])),
        ("role", with(&role)),
        ("all but a role", all_but_a_role),
        ("everything", everything),
    ]
}

/// The `default` destination the flusher builds from the environment the
/// template gives it.
fn flusher_destination(stack: &Stack) -> Destination {
    let environment: BTreeMap<String, String> = stack.environment("FlusherFunction");
    let config = Config::from_sources(|name| environment.get(name).cloned(), None)
        .unwrap_or_else(|error| panic!("the template's environment is refused: {error}"));
    config
        .destinations
        .into_iter()
        .find(|destination| destination.name == "default")
        .expect("DestinationBucket makes the `default` destination")
}

/// The writer role (flusher and verify) grants, for every option set,
/// exactly the actions `shared::policy::identity_policy` says writing to the
/// destination needs, on the same resources: `s3:PutObjectTagging` with
/// tags and not without, the KMS actions on the key through S3 in the
/// destination's region, the owner condition. With a role to assume, it
/// grants `sts:AssumeRole` on that role and no write of its own: the role
/// writes.
#[test]
fn template_writer_role_grants_exactly_what_each_destination_option_needs() {
    let template = load();
    for (name, parameters) in destination_option_sets() {
        let stack = Stack::new(&template, &parameters);
        let destination = flusher_destination(&stack);
        let granted = stack.role_statements("DestinationWriterRole");
        let needed = policy::identity_policy(&destination, "aws");
        for statement in needed["Statement"].as_array().unwrap() {
            let mut actions = strings(&statement["Action"]);
            actions.sort();
            if destination.role_arn.is_some() {
                actions.clear();
            }
            for resource in strings(&statement["Resource"]) {
                assert_eq!(
                    allowed_actions(&granted, &resource),
                    actions,
                    "{name}: actions on {resource}; granted {granted:#?}"
                );
            }
        }
        let assumable = destination
            .role_arn
            .as_deref()
            .map_or(vec![], |role| allowed_actions(&granted, role));
        let expected: Vec<String> = destination
            .role_arn
            .iter()
            .map(|_| "sts:AssumeRole".to_owned())
            .collect();
        assert_eq!(assumable, expected, "{name}");
        if destination.role_arn.is_some() {
            continue;
        }
        let object_arn = policy::object_arn("aws", &destination);
        let write = granted
            .iter()
            .find(|s| strings(&s["Resource"]).contains(&object_arn))
            .unwrap();
        let owner = destination
            .account_id
            .as_deref()
            .map(|account| json!({ "StringEquals": { "s3:ResourceAccount": account } }));
        assert_eq!(write.get("Condition"), owner.as_ref(), "{name}");
        if let Some(key) = policy::kms_key(&destination) {
            let region = destination.region.as_deref().unwrap_or(super::REGION);
            let through_s3 = granted
                .iter()
                .find(|s| strings(&s["Resource"]).iter().any(|r| r == key))
                .unwrap();
            assert_eq!(
                through_s3["Condition"],
                json!({ "StringEquals": { "kms:ViaService": format!("s3.{region}.amazonaws.com") } }),
                "{name}"
            );
        }
    }
}

/// Without a destination the writer role may write to no bucket but its
/// own and assume no role.
#[test]
fn template_without_destinations_grants_no_destination_writes() {
    let template = load();
    let stack = Stack::new(&template, &[]);
    assert!(stack.resource("DestinationWritePolicy").is_none());
    for statement in stack.role_statements("DestinationWriterRole") {
        for resource in strings(&statement["Resource"]) {
            assert!(
                !resource.starts_with("arn:aws:s3:::") && !resource.starts_with("arn:aws:iam:"),
                "{statement:#}"
            );
        }
    }
}

/// The outputs a destination's owner pastes are the policies
/// `shared::policy` prints (verify's diagnosis, `s3-export policy`) for the
/// same destination and the same writing principal (the role to assume,
/// when there is one), so neither asks for less than the writes need.
#[test]
fn template_policy_outputs_are_the_ones_verify_prints() {
    let template = load();
    for (name, parameters) in destination_option_sets() {
        let stack = Stack::new(&template, &parameters);
        let destination = flusher_destination(&stack);
        let principals = policy::writers(&destination, &[WRITER.to_owned()]);
        let output: Value = serde_json::from_str(
            stack
                .output("DestinationBucketPolicy")
                .unwrap()
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            output,
            policy::bucket_policy(&destination, &principals),
            "{name}"
        );
        let key_statement = stack
            .output("DestinationKmsKeyPolicyStatement")
            .map(|text| serde_json::from_str::<Value>(text.as_str().unwrap()).unwrap());
        let printed = policy::kms_key_policy_statement(&destination, &principals);
        if destination.region.is_some() {
            assert_eq!(key_statement, printed, "{name}");
        } else {
            // Without DestinationRegion the output names the stack's region,
            // which verify cannot know; the rest is the same.
            assert_eq!(key_statement.is_some(), printed.is_some(), "{name}");
        }
    }
}

/// Destinations of the configuration document: the writer role may write,
/// tags included, to each ARN listed in ExtraDestinationBucketArns (a
/// document destination with `tags` needs both actions), and assume each
/// role listed in ExtraDestinationRoleArns.
#[test]
fn template_grants_document_destinations_what_tagged_writes_need() {
    let template = load();
    let stack = Stack::new(
        &template,
        &[
            (
                "ExtraDestinationBucketArns",
                "arn:aws:s3:::lake-a/events/*,arn:aws:s3:::lake-b/*",
            ),
            ("ExtraDestinationRoleArns", ROLE),
        ],
    );
    let document = r#"{"destinations":[
        {"name":"a","bucket":"lake-a","prefix":"events/","tags":{"team":"data"}},
        {"name":"b","bucket":"lake-b","roleArn":"arn:aws:iam::444455556666:role/s3-export-writes","externalId":"xid"}]}"#;
    let environment = stack.environment("FlusherFunction");
    let config = Config::from_sources(|name| environment.get(name).cloned(), Some(document))
        .unwrap_or_else(|error| panic!("{error}"));
    let granted = stack.role_statements("DestinationWriterRole");
    for destination in &config.destinations {
        let needed = policy::identity_policy(destination, "aws");
        for statement in needed["Statement"].as_array().unwrap() {
            for resource in strings(&statement["Resource"]) {
                let allowed = allowed_actions(&granted, &resource);
                for action in strings(&statement["Action"]) {
                    assert!(
                        allowed.contains(&action),
                        "{}: {action} on {resource}",
                        destination.name
                    );
                }
            }
        }
    }
    assert_eq!(allowed_actions(&granted, ROLE), ["sts:AssumeRole"]);
}

/// The statements of the export bucket's policy.
fn export_bucket_policy(stack: &Stack) -> Vec<Value> {
    let policies: Vec<Value> = stack
        .resources()
        .into_iter()
        .filter(|(_, kind, properties)| {
            kind == "AWS::S3::BucketPolicy" && properties["Bucket"] == "exportbucket"
        })
        .map(|(_, _, properties)| properties)
        .collect();
    assert_eq!(policies.len(), 1, "one policy on the export bucket");
    policies[0]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap()
        .clone()
}

const CONFIG_OBJECTS: &str = "ExportBucket.Arn/config/*";

/// Every way to change an object's content or who may read it.
const CONFIG_CHANGES: [&str; 7] = [
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:PutObjectAcl",
    "s3:PutObjectVersionAcl",
    "s3:PutObjectRetention",
    "s3:PutObjectLegalHold",
];

/// The bucket policy denies every change to `config/` to every principal
/// but ConfigWriterArn (by `aws:PrincipalArn`), and to every principal when
/// it is empty; reads are not denied, so the functions' roles still read
/// the document, and no function may write it.
#[test]
fn template_only_the_config_writer_changes_the_configuration_document() {
    let template = load();
    for (writer, condition) in [
        (
            CONFIG_WRITER,
            Some(json!({ "ArnNotEquals": { "aws:PrincipalArn": CONFIG_WRITER } })),
        ),
        ("", None),
    ] {
        let stack = Stack::new(
            &template,
            &[
                ("ConfigWriterArn", writer),
                ("ExportConfig", "s3://exportbucket/config/export.json"),
            ],
        );
        let statements = export_bucket_policy(&stack);
        let denials: Vec<&Value> = statements
            .iter()
            .filter(|s| {
                s["Effect"] == "Deny"
                    && strings(&s["Resource"]).contains(&CONFIG_OBJECTS.to_owned())
            })
            .collect();
        assert_eq!(denials.len(), 1, "writer {writer:?}: {statements:#?}");
        let denial = denials[0];
        assert_eq!(denial["Principal"], "*");
        let denied = strings(&denial["Action"]);
        for action in CONFIG_CHANGES {
            assert!(denied.contains(&action.to_owned()), "{action} not denied");
        }
        assert!(
            !denied.iter().any(|a| a.contains("Get") || a == "s3:*"),
            "{denied:?}"
        );
        assert_eq!(
            denial.get("Condition"),
            condition.as_ref(),
            "writer {writer:?}"
        );

        for role in ["BatcherRole", "DestinationWriterRole"] {
            let granted = stack.role_statements(role);
            assert_eq!(
                allowed_actions(&granted, CONFIG_OBJECTS),
                ["s3:GetObject"],
                "{role}"
            );
        }
    }
}

/// The export bucket is versioned; `config/` versions are kept a year, and
/// every other prefix a function writes or deletes in forgets old versions
/// a day later (so versioning does not keep every consumed staged chunk),
/// with expired delete markers removed.
#[test]
fn template_export_bucket_keeps_config_versions_and_forgets_the_rest() {
    let template = load();
    let stack = Stack::new(&template, &[]);
    let bucket = stack.resource("ExportBucket").unwrap();
    assert_eq!(bucket["VersioningConfiguration"]["Status"], "Enabled");
    let rules = bucket["LifecycleConfiguration"]["Rules"]
        .as_array()
        .unwrap();
    let enabled = |rule: &&Value| rule["Status"] == "Enabled";
    let noncurrent_days = |prefix: &str| -> Option<i64> {
        rules
            .iter()
            .filter(enabled)
            .filter(|rule| rule["Prefix"] == prefix)
            .find_map(|rule| rule["NoncurrentVersionExpiration"]["NoncurrentDays"].as_i64())
    };
    assert!(noncurrent_days("config/").is_some_and(|days| days >= 365));

    let mut written: Vec<String> = Vec::new();
    for role in ["BatcherRole", "DestinationWriterRole"] {
        for statement in stack.role_statements(role) {
            let changes = strings(&statement["Action"])
                .iter()
                .any(|a| a == "s3:PutObject" || a == "s3:DeleteObject");
            for resource in strings(&statement["Resource"]) {
                match resource.strip_prefix("ExportBucket.Arn/") {
                    Some(prefix) if changes && prefix != "config/*" => {
                        written.push(prefix.trim_end_matches('*').to_owned());
                    }
                    _ => {}
                }
            }
        }
    }
    written.sort();
    written.dedup();
    assert!(written.contains(&"staging/".to_owned()), "{written:?}");
    for prefix in &written {
        assert_eq!(noncurrent_days(prefix), Some(1), "{prefix}");
    }
    assert!(
        rules
            .iter()
            .filter(enabled)
            .any(|rule| rule["ExpiredObjectDeleteMarker"] == true && rule.get("Prefix").is_none()),
        "{rules:#?}"
    );
}
