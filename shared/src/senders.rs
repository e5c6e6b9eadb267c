//! Which senders may send events for which tenants: the optional `senders`
//! setting, and the check of one event against it.
//!
//! Without the setting, any principal allowed `sqs:SendMessage` on the queue
//! may send events for any tenant. With it, each message's sender is read
//! from the `SenderId` system attribute SQS sets (the caller cannot choose
//! it), and an event whose tenant the sender is not mapped to is refused
//! `tenant_not_allowed`.
//!
//! A sender is named by its [`sender_key`]: the `SenderId` up to its first
//! `:`. That is the role id of an assumed role (`AROA…:session`), the user id
//! of an IAM user (`AIDA…`) or the account id of an account's root. The part
//! after `:` (a role session name, a federated user's name) is chosen by the
//! caller, so it is never matched.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::config::ConfigError;
use crate::rejection::{RejectReason, Rejection};

/// The SQS system attribute that names a message's sender.
pub const SENDER_ID_ATTRIBUTE: &str = "SenderId";

/// The tenant that stands for every tenant in a sender's list.
pub const EVERY_TENANT: &str = "*";

/// The longest sender key accepted (AWS unique ids are at most 128
/// characters; account ids are 12 digits).
const SENDER_KEY_MAX_LEN: usize = 128;

/// The sender a `SenderId` names: the part before the first `:` (the whole
/// id when it has none). `None` when that part is empty, too long, or not
/// ASCII letters and digits, as no AWS account, user or role id is.
pub fn sender_key(sender_id: &str) -> Option<&str> {
    let key = sender_id.split_once(':').map_or(sender_id, |(key, _)| key);
    is_sender_key(key).then_some(key)
}

fn is_sender_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= SENDER_KEY_MAX_LEN
        && key.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The tenants one sender may send events for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    Every,
    Only(HashSet<String>),
}

/// The validated `senders` mapping: sender key → the tenants it may send
/// for. Tenants are compared exactly, as the event's tenant field reads
/// (an integer tenant as its digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderTenants {
    senders: HashMap<String, Allowed>,
}

impl SenderTenants {
    /// Validates the mapping; an error names `{field}.<sender>` (and the
    /// tenant's index in its list when the tenant is at fault).
    pub fn new(field: &str, lists: BTreeMap<String, Vec<String>>) -> Result<Self, ConfigError> {
        let mut senders = HashMap::with_capacity(lists.len());
        for (sender, tenants) in lists {
            let entry = format!("{field}.{sender}");
            if sender.contains(':') {
                return Err(ConfigError::new(
                    entry,
                    "a sender is the account id or the user or role id before the `:` of a SenderId; the session name after it is chosen by the caller and is never matched",
                ));
            }
            if !is_sender_key(&sender) {
                return Err(ConfigError::new(
                    entry,
                    format!(
                        "a sender must be an AWS account id or a user or role id: 1 to {SENDER_KEY_MAX_LEN} ASCII letters and digits"
                    ),
                ));
            }
            if tenants.is_empty() {
                return Err(ConfigError::new(
                    entry,
                    "lists no tenant; remove the entry to refuse the sender, or list `*` for every tenant",
                ));
            }
            let allowed = if tenants.iter().any(|tenant| tenant == EVERY_TENANT) {
                if tenants.len() > 1 {
                    return Err(ConfigError::new(
                        entry,
                        "`*` allows every tenant; list no other tenant with it",
                    ));
                }
                Allowed::Every
            } else {
                if let Some(position) = tenants.iter().position(String::is_empty) {
                    return Err(ConfigError::new(
                        format!("{entry}[{position}]"),
                        "a tenant must not be empty",
                    ));
                }
                Allowed::Only(tenants.into_iter().collect())
            };
            senders.insert(sender, allowed);
        }
        Ok(Self { senders })
    }

    /// Parses `sender=tenant` pairs separated by commas (the environment
    /// variable's form): a sender listed several times may send for each of
    /// its tenants, `sender=*` for every tenant. A tenant may contain `=` but
    /// not `,`. Errors name `variable`.
    pub fn parse_pairs(variable: &str, text: &str) -> Result<Self, ConfigError> {
        let mut lists: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((sender, tenant)) = pair.split_once('=') else {
                return Err(ConfigError::new(
                    variable,
                    format!("`{pair}` is not `sender=tenant`"),
                ));
            };
            lists
                .entry(sender.trim().to_owned())
                .or_default()
                .push(tenant.trim().to_owned());
        }
        if lists.is_empty() {
            return Err(ConfigError::new(variable, "names no `sender=tenant` pair"));
        }
        Self::new(variable, lists).map_err(|error| {
            let entry = error.field.strip_prefix(variable).unwrap_or(&error.field);
            let entry = entry.strip_prefix('.').unwrap_or(entry);
            ConfigError::new(variable, format!("sender `{entry}`: {}", error.message))
        })
    }

    /// Whether a message of `sender_id` (its `SenderId` attribute, if it has
    /// one) may carry an event of `tenant`; else the `tenant_not_allowed`
    /// refusal, naming the sender key and the tenant (never a session name).
    pub fn check(&self, sender_id: Option<&str>, tenant: &str) -> Result<(), Rejection> {
        let refuse = |detail: String| Err(Rejection::new(RejectReason::TenantNotAllowed, detail));
        let Some(sender_id) = sender_id else {
            return refuse(format!(
                "the message has no `{SENDER_ID_ATTRIBUTE}` attribute, so its sender cannot be checked against `senders`"
            ));
        };
        let Some(sender) = sender_key(sender_id) else {
            return refuse(format!(
                "the message's `{SENDER_ID_ATTRIBUTE}` does not start with an account, user or role id, so its sender cannot be checked against `senders`"
            ));
        };
        match self.senders.get(sender) {
            Some(Allowed::Every) => Ok(()),
            Some(Allowed::Only(tenants)) if tenants.contains(tenant) => Ok(()),
            Some(Allowed::Only(_)) => refuse(format!(
                "sender `{sender}` may not send events for tenant `{tenant}` (see `senders`)"
            )),
            None => refuse(format!(
                "sender `{sender}` is not in `senders`, so it may not send events for tenant `{tenant}`"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(json: &str) -> Result<SenderTenants, ConfigError> {
        SenderTenants::new("senders", serde_json::from_str(json).unwrap())
    }

    #[test]
    fn sender_key_is_the_id_before_the_session_name() {
        // An assumed role: the role id, whatever session name the caller chose.
        assert_eq!(
            sender_key("AROAEXAMPLEROLEID:acme-eu"),
            Some("AROAEXAMPLEROLEID")
        );
        assert_eq!(
            sender_key("AROAEXAMPLEROLEID:i-0abc:with:colons"),
            Some("AROAEXAMPLEROLEID")
        );
        // An IAM user, and an account's root.
        assert_eq!(sender_key("AIDAEXAMPLEUSERID"), Some("AIDAEXAMPLEUSERID"));
        assert_eq!(sender_key("123456789012"), Some("123456789012"));
        // A federated user: the account id, not the caller-chosen name.
        assert_eq!(sender_key("123456789012:alice"), Some("123456789012"));
    }

    #[test]
    fn malformed_sender_ids_name_no_sender() {
        for malformed in ["", ":AROAEXAMPLEROLEID", "AROA EXAMPLE", "AROA-EXAMPLE:x"] {
            assert_eq!(sender_key(malformed), None, "{malformed}");
        }
        assert_eq!(sender_key(&"A".repeat(129)), None);
        // "arn" alone would be a well-formed key: an ARN is read as sender
        // `arn`, which no one maps, so it is refused all the same.
        assert_eq!(sender_key("arn:aws:sts::1:x"), Some("arn"));
    }

    #[test]
    fn mapped_tenants_pass_and_others_are_refused_naming_sender_and_tenant() {
        let senders =
            mapping(r#"{"AROAEXAMPLEROLEID": ["acme", "acme-eu", "1234"], "123456789012": ["*"]}"#)
                .unwrap();
        assert!(senders.check(Some("AROAEXAMPLEROLEID:s1"), "acme").is_ok());
        assert!(
            senders
                .check(Some("AROAEXAMPLEROLEID:s2"), "acme-eu")
                .is_ok()
        );
        assert!(senders.check(Some("AROAEXAMPLEROLEID:s2"), "1234").is_ok());
        assert!(senders.check(Some("123456789012"), "anyone").is_ok());

        let refused = senders
            .check(Some("AROAEXAMPLEROLEID:acme-session"), "evil")
            .unwrap_err();
        assert_eq!(refused.reason, RejectReason::TenantNotAllowed);
        assert!(refused.detail.contains("`AROAEXAMPLEROLEID`"), "{refused}");
        assert!(refused.detail.contains("`evil`"), "{refused}");
        assert!(!refused.detail.contains("acme-session"), "{refused}");

        // Tenants are compared exactly.
        assert!(senders.check(Some("AROAEXAMPLEROLEID"), "ACME").is_err());
        assert!(senders.check(Some("AROAEXAMPLEROLEID"), "acme ").is_err());
    }

    #[test]
    fn a_session_name_that_looks_like_a_mapped_sender_is_not_that_sender() {
        let senders = mapping(r#"{"AROAEXAMPLEROLEID": ["acme"]}"#).unwrap();
        let refused = senders
            .check(Some("AROAOTHERROLE:AROAEXAMPLEROLEID"), "acme")
            .unwrap_err();
        assert_eq!(refused.reason, RejectReason::TenantNotAllowed);
        assert!(refused.detail.contains("`AROAOTHERROLE`"), "{refused}");
    }

    #[test]
    fn unmapped_missing_and_malformed_senders_are_refused() {
        let senders = mapping(r#"{"AROAEXAMPLEROLEID": ["acme"]}"#).unwrap();
        let unmapped = senders.check(Some("AIDAOTHERUSER"), "acme").unwrap_err();
        assert_eq!(unmapped.reason, RejectReason::TenantNotAllowed);
        assert!(
            unmapped
                .detail
                .contains("`AIDAOTHERUSER` is not in `senders`"),
            "{unmapped}"
        );

        let missing = senders.check(None, "acme").unwrap_err();
        assert_eq!(missing.reason, RejectReason::TenantNotAllowed);
        assert!(missing.detail.contains("no `SenderId`"), "{missing}");

        let malformed = senders
            .check(Some(":AROAEXAMPLEROLEID"), "acme")
            .unwrap_err();
        assert_eq!(malformed.reason, RejectReason::TenantNotAllowed);
        assert!(malformed.detail.contains("`SenderId`"), "{malformed}");
    }

    #[test]
    fn bad_mappings_name_their_entry() {
        let cases = [
            (r#"{"": ["acme"]}"#, "senders."),
            (
                r#"{"AROAEXAMPLEROLEID:session": ["acme"]}"#,
                "senders.AROAEXAMPLEROLEID:session",
            ),
            (
                r#"{"arn:aws:iam::1:role/x": ["acme"]}"#,
                "senders.arn:aws:iam::1:role/x",
            ),
            (r#"{"AROA EXAMPLE": ["acme"]}"#, "senders.AROA EXAMPLE"),
            (r#"{"AROAEXAMPLEROLEID": []}"#, "senders.AROAEXAMPLEROLEID"),
            (
                r#"{"AROAEXAMPLEROLEID": ["*", "acme"]}"#,
                "senders.AROAEXAMPLEROLEID",
            ),
            (
                r#"{"AROAEXAMPLEROLEID": ["acme", ""]}"#,
                "senders.AROAEXAMPLEROLEID[1]",
            ),
        ];
        for (json, field) in cases {
            let error = mapping(json).expect_err(json);
            assert_eq!(error.field, field, "{json}: {error}");
        }
    }

    #[test]
    fn pairs_accumulate_per_sender_and_errors_name_the_variable() {
        let senders = SenderTenants::parse_pairs(
            "SENDER_TENANTS",
            " AROAEXAMPLEROLEID=acme, AROAEXAMPLEROLEID=acme-eu ,123456789012=*,AIDAUSER=a=b",
        )
        .unwrap();
        assert!(senders.check(Some("AROAEXAMPLEROLEID:x"), "acme").is_ok());
        assert!(
            senders
                .check(Some("AROAEXAMPLEROLEID:x"), "acme-eu")
                .is_ok()
        );
        assert!(senders.check(Some("123456789012"), "z").is_ok());
        assert!(senders.check(Some("AIDAUSER"), "a=b").is_ok());
        assert!(senders.check(Some("AIDAUSER"), "a").is_err());

        for bad in [
            "AROAEXAMPLEROLEID",
            "AROAEXAMPLEROLEID:s=acme",
            "=acme",
            "X=",
            " , ",
        ] {
            let error = SenderTenants::parse_pairs("SENDER_TENANTS", bad).expect_err(bad);
            assert_eq!(error.field, "SENDER_TENANTS", "{bad}: {error}");
        }
    }
}
