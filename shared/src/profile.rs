//! Stream profiles: where an event's tenant, time, id and type live, and what
//! a stream requires of its events.
//!
//! Reading an event scans it once, borrowing: only the top-level fields the
//! profile names are captured (as raw JSON slices); every other field is
//! skipped without being built. The event's bytes are never changed here.
//! The scan is `crate::json_scan`'s; what it does not vouch for (text that
//! is not JSON, escaped keys) is read again with `serde_json`, which gives
//! the same fields, or the error that names what is wrong.
//!
//! One routing field, one value: JSON readers disagree about an object with
//! a repeated key (this reader would see the first value, most others the
//! last), so an event in which a routing field (tenant, time, id, type), or
//! an object on its pointer path, appears more than once in its object is
//! refused `duplicate_field`. The keys are counted while they are matched,
//! so the check costs no second parse. Other repeated keys are accepted.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::json_scan::{self, Slot};
use crate::rejection::{RejectReason, Rejection};
use crate::time;

/// The 45 `EVENT_TYPE` values of Airkit's audit log schema (the seed). An
/// event with another type is accepted and counted as unknown.
pub const AIRKIT_AUDIT_EVENT_TYPES: [&str; 45] = [
    "portal_page_view",
    "deployment_changed",
    "new_adapter",
    "deleted_api_key",
    "deleted_encryption_key",
    "modified_notifier",
    "new_saml",
    "invite_sent",
    "new_encryption_key",
    "user_support_scope_assigned",
    "deleted_resource",
    "user_role_removed",
    "deleted_notifier",
    "clone_datastore",
    "invalid_login",
    "saml_assertion_received",
    "user_created",
    "user_logout",
    "deleted_domain_certificate",
    "new_embed",
    "user_root_scope_assigned",
    "deleted_adapter",
    "modified_datastore",
    "deleted_datastore",
    "user_login",
    "app_deployed",
    "new_resource",
    "new_api_key",
    "modified_adapter",
    "modified_api_key",
    "data_migration",
    "org_created",
    "new_domain_certificate",
    "modified_domain_certificate",
    "new_notifier",
    "backup_datastore",
    "new_datastore",
    "password_change",
    "modified_embed",
    "user_locked",
    "deleted_embed",
    "app_undeployed",
    "app_created",
    "user_role_added",
    "request_state",
];

/// The built-in profile names, usable as stream names or as the `profile` of a
/// configured stream.
pub const AIRKIT_APP_EVENTS: &str = "airkit-app-events";
pub const AIRKIT_AUDIT_LOGS: &str = "airkit-audit-logs";
pub const GENERIC: &str = "generic";

/// The location of a field in an event, as a JSON pointer (RFC 6901).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    pointer: String,
    tokens: Vec<String>,
}

impl FieldPath {
    /// A top-level field by name.
    pub fn top(name: &str) -> Self {
        Self::from_tokens(&[name.to_owned()])
    }

    /// The path of the given tokens, with its pointer escaped (RFC 6901).
    fn from_tokens(tokens: &[String]) -> Self {
        let pointer = tokens
            .iter()
            .map(|token| format!("/{}", token.replace('~', "~0").replace('/', "~1")))
            .collect();
        Self {
            pointer,
            tokens: tokens.to_vec(),
        }
    }

    /// Parses a JSON pointer such as `/user/org_id`; it must name a field,
    /// so the empty pointer (the whole event) is refused.
    pub fn parse(pointer: &str) -> Result<Self, String> {
        let Some(rest) = pointer.strip_prefix('/') else {
            return Err(format!(
                "`{pointer}` is not a JSON pointer: it must start with `/`"
            ));
        };
        let tokens = rest
            .split('/')
            .map(|token| token.replace("~1", "/").replace("~0", "~"))
            .collect::<Vec<_>>();
        if tokens.iter().any(String::is_empty) {
            return Err(format!("`{pointer}` has an empty segment"));
        }
        Ok(Self {
            pointer: pointer.to_owned(),
            tokens,
        })
    }

    /// The pointer text, as configured.
    pub fn pointer(&self) -> &str {
        &self.pointer
    }
}

impl fmt::Display for FieldPath {
    /// Top-level fields are shown by name, nested ones as their pointer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tokens.as_slice() {
            [name] => f.write_str(name),
            _ => f.write_str(&self.pointer),
        }
    }
}

/// Which family a profile belongs to; the built-in ones fix their fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    AirkitAppEvents,
    AirkitAuditLogs,
    Generic,
}

/// What a stream requires of its events and where their routing fields live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub kind: ProfileKind,
    /// The tenant: a non-empty string or an integer. Required.
    pub tenant: FieldPath,
    /// The event time (see [`crate::time`]). Required.
    pub time: FieldPath,
    /// The per-occurrence id used to drop duplicates; when set, required.
    /// Without one, duplicates are found by a hash of the event's line.
    pub id: Option<FieldPath>,
    /// The event type, counted per value.
    pub event_type: Option<FieldPath>,
    /// Whether the event type must be present.
    pub type_required: bool,
    /// The known event types; an event of another type is counted, never
    /// refused. Empty when the stream has no fixed list.
    pub known_types: &'static [&'static str],
    /// Fields that must be strings (or null) when present.
    pub string_fields: Vec<FieldPath>,
    /// The distinct first tokens of every path above, captured in one pass:
    /// those of the routing fields (tenant, time, id, type) first.
    top_keys: Vec<String>,
    /// How many of `top_keys` lead to a routing field, and so must appear at
    /// most once in an event.
    routing_top_keys: usize,
}

/// The routing fields read from one event, borrowed from it where possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFields<'a> {
    pub tenant: Cow<'a, str>,
    pub time_millis: i64,
    pub id: Option<Cow<'a, str>>,
    pub event_type: Option<Cow<'a, str>>,
    /// `Some(false)` when the profile has a list of known types and this
    /// event's type is not on it.
    pub type_known: Option<bool>,
}

impl Profile {
    /// Airkit App Events: camelCase standard fields, tenant `organizationId`,
    /// time `eventTime`, type `type`; no per-occurrence id.
    pub fn airkit_app_events() -> Self {
        Self::build(
            ProfileKind::AirkitAppEvents,
            FieldPath::top("organizationId"),
            FieldPath::top("eventTime"),
            None,
            Some(FieldPath::top("type")),
            true,
            &[],
            ["appId", "branchId", "sessionId", "deployId", "kind"]
                .iter()
                .map(|name| FieldPath::top(name))
                .collect(),
        )
    }

    /// Airkit Audit Logs: upper-case columns, tenant `ORGANIZATION_ID`, id
    /// `EVENT_ID`, zone-less `EVENT_TIME` read as UTC, the seed's 45 types.
    pub fn airkit_audit_logs() -> Self {
        Self::build(
            ProfileKind::AirkitAuditLogs,
            FieldPath::top("ORGANIZATION_ID"),
            FieldPath::top("EVENT_TIME"),
            Some(FieldPath::top("EVENT_ID")),
            Some(FieldPath::top("EVENT_TYPE")),
            true,
            &AIRKIT_AUDIT_EVENT_TYPES,
            Vec::new(),
        )
    }

    /// A profile of the user's own, with JSON pointers for its fields.
    pub fn generic(
        tenant: FieldPath,
        time: FieldPath,
        id: Option<FieldPath>,
        event_type: Option<FieldPath>,
    ) -> Self {
        Self::build(
            ProfileKind::Generic,
            tenant,
            time,
            id,
            event_type,
            false,
            &[],
            Vec::new(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        kind: ProfileKind,
        tenant: FieldPath,
        time: FieldPath,
        id: Option<FieldPath>,
        event_type: Option<FieldPath>,
        type_required: bool,
        known_types: &'static [&'static str],
        string_fields: Vec<FieldPath>,
    ) -> Self {
        fn add_first_token(top_keys: &mut Vec<String>, path: &FieldPath) {
            if !top_keys.contains(&path.tokens[0]) {
                top_keys.push(path.tokens[0].clone());
            }
        }
        let mut top_keys: Vec<String> = Vec::new();
        let routing = [Some(&tenant), Some(&time), id.as_ref(), event_type.as_ref()];
        for path in routing.into_iter().flatten() {
            add_first_token(&mut top_keys, path);
        }
        let routing_top_keys = top_keys.len();
        for path in &string_fields {
            add_first_token(&mut top_keys, path);
        }
        Self {
            kind,
            tenant,
            time,
            id,
            event_type,
            type_required,
            known_types,
            string_fields,
            top_keys,
            routing_top_keys,
        }
    }

    /// Reads and checks one event (the text of one JSON object). Returns its
    /// routing fields, or the rejection naming the field at fault. An event
    /// in which a routing field, or an object on its path, appears more than
    /// once in its object is refused `duplicate_field`.
    pub fn read<'a>(&self, event: &'a str) -> Result<EventFields<'a>, Rejection> {
        self.read_checking(event, true, Capture::Scan)
    }

    /// Reads an event that was accepted already (a staged or archived line)
    /// as it was read when it was accepted: a repeated routing field gives
    /// its first non-null value. Lines staged before repeated fields were
    /// refused keep their id, time and type; newer lines have no repeats.
    ///
    /// Such a line was valid JSON when it was accepted, so it is read only
    /// as far as its routing fields: the rest is not checked again.
    pub fn read_stored<'a>(&self, event: &'a str) -> Result<EventFields<'a>, Rejection> {
        self.read_checking(event, false, Capture::ScanStored)
    }

    fn read_checking<'a>(
        &self,
        event: &'a str,
        refuse_duplicates: bool,
        capture: Capture,
    ) -> Result<EventFields<'a>, Rejection> {
        let top = capture_object(event, &self.top_keys, capture)?;
        let mut routing_keys = self.top_keys.iter().zip(&top).take(self.routing_top_keys);
        if refuse_duplicates
            && let Some((key, slot)) = routing_keys.find(|(_, slot)| slot.occurrences > 1)
        {
            return Err(duplicate_field(&FieldPath::top(key), slot.occurrences));
        }
        // `routing`: whether a repeated key on the rest of the path refuses
        // the event (string fields are only type-checked).
        let find = |path: &FieldPath, routing: bool| -> Result<Option<&'a str>, Rejection> {
            let index = self
                .top_keys
                .iter()
                .position(|key| *key == path.tokens[0])
                .expect("every profile path has its first token captured");
            match top[index].value {
                Some(raw) => descend(raw, path, routing && refuse_duplicates, capture),
                None => Ok(None),
            }
        };
        let lookup = |path: &FieldPath| find(path, true);
        let required = |path: &FieldPath| -> Result<&'a str, Rejection> {
            lookup(path)?.ok_or_else(|| {
                Rejection::new(
                    RejectReason::MissingField,
                    format!("required field `{path}` is missing or null"),
                )
            })
        };

        let tenant = string_or_integer(required(&self.tenant)?)
            .filter(|tenant| !tenant.is_empty())
            .ok_or_else(|| wrong_type(&self.tenant, "a non-empty string or an integer"))?;

        let time_raw = required(&self.time)?;
        let time_result = match as_str(time_raw) {
            Some(text) => time::parse_timestamp(&text),
            None if is_number(time_raw) => time::parse_epoch_millis(time_raw),
            None => {
                return Err(wrong_type(
                    &self.time,
                    "a timestamp string or epoch milliseconds",
                ));
            }
        };
        let time_millis = time_result.map_err(|error| {
            Rejection::new(
                RejectReason::BadTime,
                format!("field `{}`: {error}", self.time),
            )
        })?;

        let id = match &self.id {
            Some(path) => Some(
                string_or_integer(required(path)?)
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| wrong_type(path, "a non-empty string or an integer"))?,
            ),
            None => None,
        };

        let event_type = match &self.event_type {
            Some(path) => {
                let raw = if self.type_required {
                    Some(required(path)?)
                } else {
                    lookup(path)?
                };
                match raw {
                    Some(raw) => Some(as_str(raw).ok_or_else(|| wrong_type(path, "a string"))?),
                    None => None,
                }
            }
            None => None,
        };
        let type_known = match (&event_type, self.known_types.is_empty()) {
            (Some(kind), false) => Some(self.known_types.contains(&kind.as_ref())),
            _ => None,
        };

        for path in &self.string_fields {
            if let Some(raw) = find(path, false)?
                && as_str(raw).is_none()
            {
                return Err(wrong_type(path, "a string"));
            }
        }

        Ok(EventFields {
            tenant,
            time_millis,
            id,
            event_type,
            type_known,
        })
    }
}

fn wrong_type(path: &FieldPath, expected: &str) -> Rejection {
    Rejection::new(
        RejectReason::WrongType,
        format!("field `{path}` must be {expected}"),
    )
}

/// The refusal of an event in which `path` (a routing field, or an object
/// on its path) appears `occurrences` times in its object.
fn duplicate_field(path: &FieldPath, occurrences: u32) -> Rejection {
    Rejection::new(
        RejectReason::DuplicateField,
        format!(
            "field `{path}` appears {occurrences} times in the event; refusing to guess which value routes it"
        ),
    )
}

/// How [`capture_object`] finds an object's keys: with the scanner, and
/// `serde_json` where the scanner does not answer; or with `serde_json`
/// alone, the reader before the scanner, kept as the tests' oracle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    /// `json_scan::object`: the whole event is checked.
    Scan,
    /// `json_scan::object_prefix`, for stored events (JSON when they were
    /// accepted): read up to the last wanted key.
    ScanStored,
    #[cfg_attr(not(test), allow(dead_code))]
    Serde,
}

/// Reads the object `event` once, capturing the raw values of its `wanted`
/// keys and counting them, and skipping everything else. Text the scanner
/// does not vouch for is parsed with `serde_json`, for its error.
fn capture_object<'a>(
    event: &'a str,
    wanted: &[String],
    capture: Capture,
) -> Result<Vec<Slot<'a>>, Rejection> {
    let scanned = match capture {
        Capture::Scan => json_scan::object(event, wanted),
        Capture::ScanStored => json_scan::object_prefix(event, wanted),
        Capture::Serde => None,
    };
    if let Some(slots) = scanned {
        return Ok(slots);
    }
    if !event.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<IgnoredAny>(event) {
            Ok(_) => Rejection::new(RejectReason::NotAnObject, "the JSON is not an object"),
            Err(error) => Rejection::new(RejectReason::NotJson, format!("not JSON: {error}")),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_str(event);
    let captured = CaptureSeed { wanted }
        .deserialize(&mut deserializer)
        .and_then(|captured| deserializer.end().map(|()| captured))
        .map_err(|error| Rejection::new(RejectReason::NotJson, format!("not JSON: {error}")))?;
    Ok(captured)
}

/// The raw text of element `index` of the array `raw` (None past its end).
fn array_element(
    raw: &str,
    index: Option<usize>,
    capture: Capture,
) -> Result<Option<&str>, Rejection> {
    if capture != Capture::Serde
        && let Some(index) = index
        && let Some(element) = json_scan::array_element(raw, index)
    {
        return Ok(element);
    }
    let elements: Vec<&RawValue> = serde_json::from_str(raw)
        .map_err(|error| Rejection::new(RejectReason::NotJson, error.to_string()))?;
    Ok(index
        .and_then(|index| elements.get(index).copied())
        .map(RawValue::get))
}

/// Follows `path` below its top-level value `raw` into nested objects and
/// arrays. With `routing`, a key of the path that appears more than once in
/// its object refuses the event, naming the path down to that key.
fn descend<'a>(
    mut raw: &'a str,
    path: &FieldPath,
    routing: bool,
    capture: Capture,
) -> Result<Option<&'a str>, Rejection> {
    for (depth, token) in path.tokens.iter().enumerate().skip(1) {
        let text = raw.trim_start();
        let next = if text.starts_with('{') {
            let [slot] = capture_object(raw, std::slice::from_ref(token), capture)?[..] else {
                unreachable!("one wanted key gives one slot");
            };
            if routing && slot.occurrences > 1 {
                let level = FieldPath::from_tokens(&path.tokens[..=depth]);
                return Err(duplicate_field(&level, slot.occurrences));
            }
            slot.value
        } else if text.starts_with('[') {
            array_element(raw, token.parse::<usize>().ok(), capture)?
        } else {
            return Err(wrong_type(path, "inside an object or array"));
        };
        match next {
            Some(value) if value != "null" => raw = value,
            _ => return Ok(None),
        }
    }
    Ok(Some(raw))
}

/// The value of the JSON string whose raw text is `text` (a whole value
/// as read from a checked event: a string token is complete and valid),
/// borrowed when it has no escapes; `None` when it is not a string.
fn as_str(text: &str) -> Option<Cow<'_, str>> {
    if !text.starts_with('"') {
        return None;
    }
    // A string token without a backslash is its quotes around its value.
    if let Some(plain) = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .filter(|plain| memchr::memchr2(b'\\', b'"', plain.as_bytes()).is_none())
    {
        return Some(Cow::Borrowed(plain));
    }
    match serde_json::from_str::<&str>(text) {
        Ok(borrowed) => Some(Cow::Borrowed(borrowed)),
        Err(_) => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
    }
}

fn is_number(raw: &str) -> bool {
    raw.starts_with(|c: char| c == '-' || c.is_ascii_digit())
}

fn string_or_integer(raw: &str) -> Option<Cow<'_, str>> {
    as_str(raw).or_else(|| raw.parse::<i64>().is_ok().then_some(Cow::Borrowed(raw)))
}

struct CaptureSeed<'w> {
    wanted: &'w [String],
}

impl<'de> DeserializeSeed<'de> for CaptureSeed<'_> {
    type Value = Vec<Slot<'de>>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for CaptureSeed<'_> {
    type Value = Vec<Slot<'de>>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut captured = vec![Slot::default(); self.wanted.len()];
        while let Some(wanted) = map.next_key_seed(KeySeed {
            wanted: self.wanted,
        })? {
            match wanted {
                Some(index) => {
                    let value = map.next_value::<&'de RawValue>()?.get();
                    let slot = &mut captured[index];
                    slot.occurrences = slot.occurrences.saturating_add(1);
                    if slot.value.is_none() && value != "null" {
                        slot.value = Some(value);
                    }
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(captured)
    }
}

/// Matches an object key against the wanted keys without allocating.
struct KeySeed<'w> {
    wanted: &'w [String],
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.wanted.iter().position(|wanted| wanted == key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION_START: &str = r#"{"organizationId":"482f2a38-8e9d-4329-b2a0-e97d5bc05d36","eventTime":"2022-11-19T23:23:16.792323Z","appId":"e0cef201-2697-4e5c-9aa4-9befb2a2e2d7","branchId":"743d626d-e1f1-46d5-858e-c65787b57cb3","sessionId":"69175e43-25d0-47c7-bdec-224e49753e99","deployId":"d0e64edb-7a23-497b-b38f-21efeb3d04a3","type":"session_start","kind":"Session","ipAddresses":["52.9.13.199"]}"#;

    fn audit(fields: &str) -> String {
        format!(
            r#"{{"ORGANIZATION_ID":"org-1","EVENT_ID":"e-1","EVENT_TIME":"2022-11-19 23:40:02.123",{fields}}}"#
        )
    }

    #[test]
    fn app_event_fields_are_read_borrowed() {
        let fields = Profile::airkit_app_events().read(SESSION_START).unwrap();
        assert_eq!(fields.tenant, "482f2a38-8e9d-4329-b2a0-e97d5bc05d36");
        assert!(matches!(fields.tenant, Cow::Borrowed(_)));
        assert_eq!(fields.time_millis, 1_668_900_196_792);
        assert_eq!(fields.event_type.as_deref(), Some("session_start"));
        assert_eq!(fields.id, None);
        assert_eq!(fields.type_known, None);
    }

    #[test]
    fn app_event_without_tenant_names_the_field() {
        let event = r#"{"eventTime":"2022-11-19T23:23:16Z","type":"x"}"#;
        let rejection = Profile::airkit_app_events().read(event).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::MissingField);
        assert!(rejection.detail.contains("`organizationId`"), "{rejection}");
    }

    #[test]
    fn null_counts_as_missing() {
        let event = r#"{"organizationId":null,"eventTime":"2022-11-19T23:23:16Z","type":"x"}"#;
        let rejection = Profile::airkit_app_events().read(event).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::MissingField);
    }

    #[test]
    fn standard_field_of_wrong_type_is_refused() {
        let event = r#"{"organizationId":"o","eventTime":"2022-11-19T23:23:16Z","type":"x","sessionId":42}"#;
        let rejection = Profile::airkit_app_events().read(event).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::WrongType);
        assert!(rejection.detail.contains("`sessionId`"), "{rejection}");
    }

    #[test]
    fn tenant_of_wrong_type_or_empty_is_refused() {
        for tenant in ["{}", "true", "\"\"", "1.5"] {
            let event = format!(
                r#"{{"organizationId":{tenant},"eventTime":"2022-11-19T23:23:16Z","type":"x"}}"#
            );
            let rejection = Profile::airkit_app_events().read(&event).unwrap_err();
            assert_eq!(rejection.reason, RejectReason::WrongType, "{tenant}");
        }
    }

    #[test]
    fn unparsable_time_is_a_bad_time() {
        let event = r#"{"organizationId":"o","eventTime":"last tuesday","type":"x"}"#;
        let rejection = Profile::airkit_app_events().read(event).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::BadTime);
        assert!(rejection.detail.contains("`eventTime`"), "{rejection}");
    }

    #[test]
    fn time_of_wrong_type_is_refused() {
        let event = r#"{"organizationId":"o","eventTime":[1],"type":"x"}"#;
        let rejection = Profile::airkit_app_events().read(event).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::WrongType);
    }

    #[test]
    fn epoch_millis_time_is_accepted() {
        let event = r#"{"organizationId":"o","eventTime":1668900196792,"type":"x"}"#;
        assert_eq!(
            Profile::airkit_app_events()
                .read(event)
                .unwrap()
                .time_millis,
            1_668_900_196_792
        );
    }

    #[test]
    fn not_json_and_not_object_are_told_apart() {
        let profile = Profile::airkit_app_events();
        assert_eq!(
            profile.read("{\"a\":").unwrap_err().reason,
            RejectReason::NotJson
        );
        assert_eq!(
            profile.read("nope").unwrap_err().reason,
            RejectReason::NotJson
        );
        assert_eq!(
            profile.read("[1,2]").unwrap_err().reason,
            RejectReason::NotAnObject
        );
        assert_eq!(
            profile.read("\"text\"").unwrap_err().reason,
            RejectReason::NotAnObject
        );
        assert_eq!(
            profile.read("{} trailing").unwrap_err().reason,
            RejectReason::NotJson
        );
    }

    #[test]
    fn audit_event_has_id_and_zone_less_utc_time() {
        let event = audit(r#""EVENT_TYPE":"user_login","USER_ID":"u""#);
        let fields = Profile::airkit_audit_logs().read(&event).unwrap();
        assert_eq!(fields.id.as_deref(), Some("e-1"));
        assert_eq!(fields.time_millis, 1_668_901_202_123);
        assert_eq!(fields.type_known, Some(true));
    }

    #[test]
    fn unknown_audit_type_is_accepted_and_flagged() {
        let event = audit(r#""EVENT_TYPE":"brand_new_type""#);
        let fields = Profile::airkit_audit_logs().read(&event).unwrap();
        assert_eq!(fields.type_known, Some(false));
    }

    #[test]
    fn audit_event_without_id_is_refused() {
        let event = r#"{"ORGANIZATION_ID":"o","EVENT_TIME":"2022-11-19 23:40:02","EVENT_TYPE":"user_login"}"#;
        let rejection = Profile::airkit_audit_logs().read(event).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::MissingField);
        assert!(rejection.detail.contains("`EVENT_ID`"), "{rejection}");
    }

    #[test]
    fn seed_lists_forty_five_audit_types_without_repeats() {
        let unique: std::collections::HashSet<_> = AIRKIT_AUDIT_EVENT_TYPES.iter().collect();
        assert_eq!(unique.len(), 45);
    }

    #[test]
    fn generic_pointers_reach_nested_fields_and_array_elements() {
        let profile = Profile::generic(
            FieldPath::parse("/account/id").unwrap(),
            FieldPath::parse("/times/0").unwrap(),
            Some(FieldPath::parse("/meta/event~1id").unwrap()),
            Some(FieldPath::parse("/kind").unwrap()),
        );
        let event = r#"{"kind":"order","account":{"name":"x","id":1234},"times":["2024-01-02T03:04:05Z",5],"meta":{"event/id":"abc"}}"#;
        let fields = profile.read(event).unwrap();
        assert_eq!(fields.tenant, "1234");
        assert_eq!(fields.time_millis, 1_704_164_645_000);
        assert_eq!(fields.id.as_deref(), Some("abc"));
        assert_eq!(fields.event_type.as_deref(), Some("order"));
    }

    #[test]
    fn generic_type_is_optional_but_id_is_required_when_configured() {
        let profile = Profile::generic(
            FieldPath::parse("/t").unwrap(),
            FieldPath::parse("/ts").unwrap(),
            Some(FieldPath::parse("/id").unwrap()),
            Some(FieldPath::parse("/kind").unwrap()),
        );
        assert!(profile.read(r#"{"t":"a","ts":0,"id":"1"}"#).is_ok());
        let rejection = profile.read(r#"{"t":"a","ts":0}"#).unwrap_err();
        assert!(
            rejection.detail.contains("`/id`") || rejection.detail.contains("`id`"),
            "{rejection}"
        );
    }

    #[test]
    fn generic_pointer_through_a_scalar_is_a_wrong_type() {
        let profile = Profile::generic(
            FieldPath::parse("/account/id").unwrap(),
            FieldPath::parse("/ts").unwrap(),
            None,
            None,
        );
        let rejection = profile.read(r#"{"account":"flat","ts":0}"#).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::WrongType);
        assert!(rejection.detail.contains("/account/id"), "{rejection}");
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let event = r#"{"organizationId":"a\"b","eventTime":"2022-11-19T23:23:16Z","type":"x"}"#;
        let fields = Profile::airkit_app_events().read(event).unwrap();
        assert_eq!(fields.tenant, "a\"b");
    }

    fn assert_duplicate(profile: &Profile, event: &str, field: &str, times: u32) {
        let rejection = profile.read(event).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::DuplicateField, "{event}");
        let expected = format!(
            "field `{field}` appears {times} times in the event; refusing to guess which value routes it"
        );
        assert_eq!(rejection.detail, expected, "{event}");
    }

    #[test]
    fn app_event_with_a_repeated_routing_field_is_refused_naming_it() {
        let profile = Profile::airkit_app_events();
        // The issue's event: this reader would route by the first value,
        // most JSON readers see the last.
        let event = r#"{"organizationId":"acme","organizationId":"evil","eventTime":"2022-11-19T23:23:16Z","type":"x"}"#;
        assert_duplicate(&profile, event, "organizationId", 2);
        for (field, value) in [
            ("organizationId", r#""acme""#),
            ("eventTime", r#""2022-11-19T23:23:16Z""#),
            ("type", r#""x""#),
        ] {
            let event = format!(
                r#"{{"organizationId":"acme","eventTime":"2022-11-19T23:23:16Z","type":"x","{field}":{value}}}"#
            );
            assert_duplicate(&profile, &event, field, 2);
        }
        // Null is a value some readers keep: it is counted too.
        let event = r#"{"organizationId":null,"organizationId":"evil","eventTime":"2022-11-19T23:23:16Z","type":"x"}"#;
        assert_duplicate(&profile, event, "organizationId", 2);
        // An escaped key is the same key once decoded.
        let event = r#"{"organizationId":"acme","organization\u0049d":"evil","organizationI\u0064":"x","eventTime":"2022-11-19T23:23:16Z","type":"x"}"#;
        assert_duplicate(&profile, event, "organizationId", 3);
    }

    #[test]
    fn audit_event_with_a_repeated_routing_field_is_refused_naming_it() {
        let profile = Profile::airkit_audit_logs();
        for (field, value) in [
            ("ORGANIZATION_ID", r#""evil""#),
            ("EVENT_ID", r#""e-2""#),
            ("EVENT_TIME", r#""2022-11-19 23:40:03""#),
            ("EVENT_TYPE", r#""user_login""#),
        ] {
            let event = audit(&format!(r#""EVENT_TYPE":"user_login","{field}":{value}"#));
            assert_duplicate(&profile, &event, field, 2);
        }
    }

    #[test]
    fn generic_repeated_key_anywhere_on_a_routing_path_is_refused_naming_its_level() {
        let profile = Profile::generic(
            FieldPath::parse("/account/id").unwrap(),
            FieldPath::parse("/times/0").unwrap(),
            Some(FieldPath::parse("/meta/event~1id").unwrap()),
            Some(FieldPath::parse("/kind").unwrap()),
        );
        let good = r#"{"kind":"order","account":{"id":1},"times":["2024-01-02T03:04:05Z"],"meta":{"event/id":"abc"}}"#;
        assert!(profile.read(good).is_ok());
        let cases = [
            // The field itself, inside its object.
            (
                r#"{"kind":"order","account":{"id":1,"id":2},"times":["2024-01-02T03:04:05Z"],"meta":{"event/id":"abc"}}"#,
                "/account/id",
            ),
            // An object on the path: each copy could hold another tenant.
            (
                r#"{"kind":"order","account":{"id":1},"account":{"id":2},"times":["2024-01-02T03:04:05Z"],"meta":{"event/id":"abc"}}"#,
                "account",
            ),
            (
                r#"{"kind":"order","account":{"id":1},"times":["2024-01-02T03:04:05Z"],"times":["2025-01-02T03:04:05Z"],"meta":{"event/id":"abc"}}"#,
                "times",
            ),
            (
                r#"{"kind":"order","account":{"id":1},"times":["2024-01-02T03:04:05Z"],"meta":{"event/id":"abc","event/id":"def"}}"#,
                "/meta/event~1id",
            ),
            (
                r#"{"kind":"order","kind":"refund","account":{"id":1},"times":["2024-01-02T03:04:05Z"],"meta":{"event/id":"abc"}}"#,
                "kind",
            ),
        ];
        for (event, field) in cases {
            assert_duplicate(&profile, event, field, 2);
        }
    }

    #[test]
    fn stored_events_with_repeated_routing_fields_read_as_when_they_were_accepted() {
        let audit = r#"{"ORGANIZATION_ID":"acme","ORGANIZATION_ID":"evil","EVENT_ID":"e-1","EVENT_ID":"e-2","EVENT_TIME":"2022-11-19 23:40:02","EVENT_TYPE":"user_login","EVENT_TYPE":"app_created"}"#;
        let profile = Profile::airkit_audit_logs();
        assert!(profile.read(audit).is_err());
        let fields = profile.read_stored(audit).unwrap();
        assert_eq!(fields.tenant, "acme");
        assert_eq!(fields.id.as_deref(), Some("e-1"));
        assert_eq!(fields.event_type.as_deref(), Some("user_login"));
        assert_eq!(fields.time_millis, 1_668_901_202_000);

        let generic = Profile::generic(
            FieldPath::parse("/account/id").unwrap(),
            FieldPath::parse("/ts").unwrap(),
            None,
            None,
        );
        let nested = r#"{"account":{"id":"acme","id":"evil"},"ts":0}"#;
        assert!(generic.read(nested).is_err());
        assert_eq!(generic.read_stored(nested).unwrap().tenant, "acme");
    }

    #[test]
    fn stored_events_are_read_as_far_as_their_routing_fields() {
        let profile = Profile::generic(
            FieldPath::parse("/service").unwrap(),
            FieldPath::parse("/timestamp").unwrap(),
            Some(FieldPath::parse("/event_id").unwrap()),
            None,
        );
        // What follows the last routing field is not read again: a stored
        // line was checked whole when it was accepted.
        let cut = r#"{"event_id":"e-1","timestamp":"2026-01-01T00:00:00Z","service":"s","message":"unfinis"#;
        assert_eq!(profile.read(cut).unwrap_err().reason, RejectReason::NotJson);
        let fields = profile.read_stored(cut).unwrap();
        assert_eq!(fields.id.as_deref(), Some("e-1"));
        assert_eq!(fields.tenant, "s");
        assert_eq!(fields.time_millis, 1_767_225_600_000);
        // Before them, it is read as before.
        let broken = r#"{"event_id":"e-1","timestamp":"2026-01-01T00:00:00Z",,"service":"s"}"#;
        assert_eq!(
            profile.read_stored(broken).unwrap_err().reason,
            RejectReason::NotJson
        );
    }

    #[test]
    fn repeated_keys_off_the_routing_paths_are_accepted() {
        let app = r#"{"organizationId":"acme","eventTime":"2022-11-19T23:23:16Z","type":"x","appId":"a","appId":"b","extra":1,"extra":2}"#;
        assert_eq!(
            Profile::airkit_app_events().read(app).unwrap().tenant,
            "acme"
        );
        let profile = Profile::generic(
            FieldPath::parse("/account/id").unwrap(),
            FieldPath::parse("/ts").unwrap(),
            None,
            None,
        );
        let nested = r#"{"account":{"name":"x","name":"y","id":7},"ts":0,"other":{"id":1},"other":{"id":2}}"#;
        assert_eq!(profile.read(nested).unwrap().tenant, "7");
    }

    /// Random JSON text, most of it valid, with what a scanner gets wrong:
    /// escapes (in keys too), unicode, nesting, repeated keys, every kind
    /// of number and whitespace; then some of it damaged.
    mod random_json {
        /// Keys the test profiles read, and others.
        const KEYS: [&str; 12] = [
            "service",
            "timestamp",
            "event_id",
            "user",
            "id",
            "times",
            "kind",
            "serv\\u0069ce",
            "event\\u005fid",
            "ti\\u006destamp",
            "message",
            "é✓",
        ];
        const STRINGS: [&str; 14] = [
            "\"checkout\"",
            "\"2026-01-01T00:00:00.018Z\"",
            "\"2022-11-19 23:40:02.123\"",
            "\"\"",
            "\"a\\\"b\"",
            "\"\\\\\"",
            "\"\\/\\b\\f\\n\\r\\t\"",
            "\"\\u00e9t\\u00C9\"",
            "\"\\ud83d\\ude00\"",
            "\"\\ud800 lone\"",
            "\"😀 é\"",
            "\"886fba01-938f-4b22-ad11-cf04549a6c54\"",
            "\"last tuesday\"",
            "\"with\\u0000nul\"",
        ];
        const NUMBERS: [&str; 12] = [
            "0",
            "-0",
            "1668900196792",
            "-12",
            "1.5",
            "1.5e10",
            "1E+2",
            "2e-3",
            "12345678901234567890",
            "1e999",
            "0.000",
            "42",
        ];
        const WHITESPACE: [&str; 5] = ["", " ", "\n", "\t", "\r\n  "];
        /// What damages a text: characters a scanner must refuse or
        /// pass over correctly.
        const DAMAGE: [&str; 16] = [
            "{", "}", "[", "]", "\"", ",", ":", "\\", "\\u12", "\\x", "\u{1}", "\n", "-", "01",
            "tru", "nul",
        ];

        pub fn value(rng: &mut fastrand::Rng, depth: u32) -> String {
            match rng.u8(..if depth > 4 { 4 } else { 6 }) {
                0 => STRINGS[rng.usize(..STRINGS.len())].to_owned(),
                1 => NUMBERS[rng.usize(..NUMBERS.len())].to_owned(),
                2 => ["true", "false", "null"][rng.usize(..3)].to_owned(),
                3 => STRINGS[rng.usize(..STRINGS.len())].to_owned(),
                4 => object(rng, depth + 1),
                _ => {
                    let elements: Vec<String> = (0..rng.usize(..4))
                        .map(|_| {
                            let before = WHITESPACE[rng.usize(..WHITESPACE.len())];
                            format!("{before}{}", value(rng, depth + 1))
                        })
                        .collect();
                    format!("[{}]", elements.join(","))
                }
            }
        }

        pub fn object(rng: &mut fastrand::Rng, depth: u32) -> String {
            let ws = |rng: &mut fastrand::Rng| WHITESPACE[rng.usize(..WHITESPACE.len())];
            let members: Vec<String> = (0..rng.usize(..7))
                .map(|_| {
                    format!(
                        "{}\"{}\"{}:{}{}{}",
                        ws(rng),
                        KEYS[rng.usize(..KEYS.len())],
                        ws(rng),
                        ws(rng),
                        value(rng, depth),
                        ws(rng)
                    )
                })
                .collect();
            format!("{}{{{}}}{}", ws(rng), members.join(","), ws(rng))
        }

        /// `text` with a cut, an insertion or a replacement, at a
        /// character boundary.
        pub fn damage(rng: &mut fastrand::Rng, text: &str) -> String {
            let boundaries: Vec<usize> = (0..=text.len())
                .filter(|&at| text.is_char_boundary(at))
                .collect();
            let at = boundaries[rng.usize(..boundaries.len())];
            let piece = DAMAGE[rng.usize(..DAMAGE.len())];
            match rng.u8(..3) {
                0 => text[..at].to_owned(),
                1 => format!("{}{piece}{}", &text[..at], &text[at..]),
                _ => {
                    let next = boundaries.iter().find(|&&b| b > at).copied();
                    let end = next.unwrap_or(text.len());
                    format!("{}{piece}{}", &text[..at], &text[end..])
                }
            }
        }
    }

    fn test_profiles() -> Vec<Profile> {
        vec![
            Profile::generic(
                FieldPath::parse("/service").unwrap(),
                FieldPath::parse("/timestamp").unwrap(),
                Some(FieldPath::parse("/event_id").unwrap()),
                None,
            ),
            Profile::generic(
                FieldPath::parse("/user/id").unwrap(),
                FieldPath::parse("/times/1").unwrap(),
                Some(FieldPath::parse("/user/kind").unwrap()),
                Some(FieldPath::parse("/kind").unwrap()),
            ),
            Profile::airkit_app_events(),
            Profile::airkit_audit_logs(),
        ]
    }

    #[test]
    fn scanned_fields_equal_serde_json_fields_on_random_and_damaged_json() {
        let profiles = test_profiles();
        let mut rng = fastrand::Rng::with_seed(16);
        let mut scanned = 0;
        for round in 0..30_000 {
            let mut event = random_json::object(&mut rng, 0);
            if round % 3 == 0 {
                event = random_json::damage(&mut rng, &event);
            }
            if round % 5 == 0 {
                // Routing fields the profiles can read, in any order.
                event = event.replacen(
                    '{',
                    r#"{"service":"s","timestamp":"2026-01-01T00:00:00Z","event_id":7,"user":{"id":"u","kind":"k"},"times":[0,1668900196792],"#,
                    1,
                );
            }
            let is_json = serde_json::from_str::<IgnoredAny>(&event).is_ok();
            for profile in &profiles {
                for refuse_duplicates in [true, false] {
                    let oracle = profile.read_checking(&event, refuse_duplicates, Capture::Serde);
                    let fast = profile.read_checking(&event, refuse_duplicates, Capture::Scan);
                    assert_eq!(fast, oracle, "{event}");
                }
                // Stored lines are JSON (they were accepted): read as far
                // as their fields, they give what a whole read gives.
                if is_json {
                    let oracle = profile.read_checking(&event, false, Capture::Serde);
                    assert_eq!(profile.read_stored(&event), oracle, "{event}");
                }
            }
            if let Some(slots) = json_scan::object(&event, &profiles[0].top_keys) {
                scanned += 1;
                let oracle = capture_object(&event, &profiles[0].top_keys, Capture::Serde);
                assert_eq!(Ok(slots), oracle, "{event}");
            }
        }
        // The scanner answered for most events, not only serde_json.
        assert!(scanned > 10_000, "{scanned}");
    }

    #[test]
    fn events_the_scanner_leaves_to_serde_json_are_read_as_before() {
        let profile = Profile::generic(
            FieldPath::parse("/a").unwrap(),
            FieldPath::parse("/t").unwrap(),
            None,
            None,
        );
        let deep = format!(
            "{{\"a\":\"x\",\"t\":0,\"d\":{}1{}}}",
            "[".repeat(65),
            "]".repeat(65)
        );
        for event in [deep.as_str(), r#"{"\u0061":"x","t":0}"#] {
            assert!(json_scan::object(event, &profile.top_keys).is_none());
            assert_eq!(profile.read(event).unwrap().tenant, "x", "{event}");
            assert_eq!(profile.read_stored(event).unwrap().tenant, "x", "{event}");
        }
    }

    #[test]
    fn pointer_must_start_with_a_slash() {
        assert!(FieldPath::parse("org").is_err());
        assert!(FieldPath::parse("").is_err());
        assert!(FieldPath::parse("/a//b").is_err());
    }
}
