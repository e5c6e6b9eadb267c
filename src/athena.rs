//! Athena `CREATE EXTERNAL TABLE` statements for a destination's export
//! files: one table per stream, read with the OpenX JSON SerDe, with
//! partition projection over the folders the destination's key layout gives
//! (no crawler, no `MSCK REPAIR TABLE`, new hours are visible at once).
//!
//! Pure: [`table`] turns a stream's profile, a key layout and a location into
//! a [`TableDdl`], whose [`TableDdl::sql`] is the statement.
//!
//! How a layout maps to partitions (only folders can be projected: Athena
//! reads every file under a partition's folder):
//! - `{date}` in a folder is the `dt` column (`string`, `yyyy-MM-dd`, a date
//!   projection from `since` to `NOW`); `{yyyy}`, `{MM}` and `{dd}` in
//!   folders, separated by anything but letters, are one `dt` column in their
//!   format (`yyyy/MM/dd`).
//! - `{HH}` / `{H}` in a folder is the `hour` column (`int`, 0 to 23, two
//!   digits for `{HH}`).
//! - `{tenant}` in a folder is the `tenant` column (`string`, the tenant's
//!   key segment): an `enum` projection of the destination's tenants when
//!   it lists them, else `injected` (every query names its tenant).
//! - `{stream}` is the table's stream, written out.
//!
//! So `hive` and `date-folders` project tenant, date and hour; `amplitude`
//! (`<stream>/<date>/<tenant>_<date>_<H>#<n>.json.gz`) has one folder per
//! stream and day, and projects the date only: its hour and tenant are in
//! the file names, so a query selects them with the data's own columns.

use std::fmt::Write as _;

use shared::key_layout::KeyLayout;
use shared::partition::TenantKey;
use shared::profile::{Profile, ProfileKind};

/// The default start of the date projection: Athena looks for a year of
/// days back from today when a query does not restrict `dt`.
pub const DEFAULT_SINCE: &str = "NOW-1YEARS";

/// The JSON SerDe the statement uses.
pub const SERDE: &str = "org.openx.data.jsonserde.JsonSerDe";

/// What to describe.
#[derive(Debug, Clone)]
pub struct TableSpec<'a> {
    /// The table's name (`[database.]table`, letters, digits and `_`).
    pub table: String,
    /// The stream, as named in keys (`{stream}`).
    pub stream: &'a str,
    /// The stream's profile: gives the columns.
    pub profile: &'a Profile,
    /// `s3://<bucket>/<prefix>`: the destination's bucket and its prefix
    /// exactly as configured (the prefix is written before every key as is).
    pub location: String,
    pub layout: &'a KeyLayout,
    /// The destination's tenants (original ids), when it lists them: the
    /// tenant column is then an `enum` projection of their key segments.
    pub tenants: Option<Vec<String>>,
    /// The first day of the date projection: `yyyy-MM-dd`, or a relative
    /// Athena date such as `NOW-2YEARS`.
    pub since: String,
}

/// One column: its name in the table, its Athena type, and a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub kind: String,
    pub comment: Option<String>,
}

/// A generated statement, kept in parts so that callers (and tests) can read
/// its structure; [`TableDdl::sql`] renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDdl {
    pub table: String,
    pub columns: Vec<Column>,
    pub partitions: Vec<Column>,
    /// `WITH SERDEPROPERTIES`, in order.
    pub serde_properties: Vec<(String, String)>,
    pub location: String,
    /// `TBLPROPERTIES` (the partition projection), in order.
    pub table_properties: Vec<(String, String)>,
    /// What a user should know about the table (printed apart from the SQL).
    pub notes: Vec<String>,
}

/// Why no statement can be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DdlError(pub String);

/// The `CREATE EXTERNAL TABLE` for `spec`.
pub fn table(spec: &TableSpec<'_>) -> Result<TableDdl, DdlError> {
    check_table_name(&spec.table)?;
    let Some(bucket_and_prefix) = spec.location.strip_prefix("s3://") else {
        return Err(DdlError(format!(
            "the location `{}` is not an s3://bucket/prefix URI",
            spec.location
        )));
    };
    if bucket_and_prefix.is_empty() || bucket_and_prefix.starts_with('/') {
        return Err(DdlError(format!(
            "the location `{}` names no bucket",
            spec.location
        )));
    }
    let base = if bucket_and_prefix.contains('/') {
        spec.location.clone()
    } else {
        format!("{}/", spec.location)
    };
    let folders = Folders::of(spec.layout.template(), spec.stream)?;
    let mut notes = Vec::new();
    let mut partitions = Vec::new();
    let mut properties: Vec<(String, String)> = Vec::new();
    let mut projected: Vec<(String, String)> = Vec::new();
    for partition in &folders.partitions {
        match partition {
            Partition::Tenant => {
                partitions.push(column(
                    "tenant",
                    "string",
                    Some("the key segment of the tenant id (percent-encoded when unusual)"),
                ));
                match &spec.tenants {
                    Some(tenants) if !tenants.is_empty() => {
                        let values: Vec<String> = tenants
                            .iter()
                            .map(|t| TenantKey::encode(t).as_str().to_owned())
                            .collect();
                        projected.push(("projection.tenant.type".into(), "enum".into()));
                        projected.push(("projection.tenant.values".into(), values.join(",")));
                    }
                    _ => {
                        projected.push(("projection.tenant.type".into(), "injected".into()));
                        notes.push(
                            "`tenant` is an injected projection: every query names its tenants, \
                             `WHERE tenant = '<tenant>'` (or `tenant IN (…)`); with --config and a \
                             destination that lists its tenants, they are enumerated instead"
                                .into(),
                        );
                    }
                }
            }
            Partition::Date { format } => {
                partitions.push(column(
                    "dt",
                    "string",
                    Some(&format!("the UTC day of the export hour, {format}")),
                ));
                projected.push(("projection.dt.type".into(), "date".into()));
                projected.push(("projection.dt.format".into(), format.clone()));
                projected.push((
                    "projection.dt.range".into(),
                    format!("{},NOW", since_in(&spec.since, format)?),
                ));
                projected.push(("projection.dt.interval".into(), "1".into()));
                projected.push(("projection.dt.interval.unit".into(), "DAYS".into()));
            }
            Partition::Hour { padded } => {
                partitions.push(column(
                    "hour",
                    "int",
                    Some("the UTC hour of the export (ingest time by default), 0 to 23"),
                ));
                projected.push(("projection.hour.type".into(), "integer".into()));
                projected.push(("projection.hour.range".into(), "0,23".into()));
                if *padded {
                    projected.push(("projection.hour.digits".into(), "2".into()));
                }
            }
        }
    }
    let location = format!("{base}{}", folders.fixed);
    if partitions.is_empty() {
        notes.push(format!(
            "the layout `{}` gives no folder per date: the table reads every file under {location} (no partitions)",
            spec.layout.template()
        ));
    } else {
        properties.push(("projection.enabled".into(), "true".into()));
        properties.extend(projected);
        properties.push((
            "storage.location.template".into(),
            format!("{base}{}{}", folders.fixed, folders.template),
        ));
    }
    if !folders.file_only.is_empty() {
        notes.push(format!(
            "{} {} in the file names, not in folders (layout `{}`): Athena cannot project them; \
             select with the data's own columns ({}) within a `dt`",
            folders.file_only.join(" and "),
            if folders.file_only.len() > 1 {
                "are"
            } else {
                "is"
            },
            spec.layout.template(),
            data_columns_for(spec.profile, &folders.file_only)
        ));
    }
    if !spec.since.starts_with("NOW") && folders.has_date() {
        notes.push(format!(
            "days before {} are not projected: give --since to reach back further",
            spec.since
        ));
    } else if folders.has_date() {
        notes.push(format!(
            "the date projection covers {},NOW (UTC); give --since yyyy-MM-dd to match the first export",
            spec.since
        ));
    }
    let (columns, time_note) = columns(spec.profile);
    notes.extend(time_note);
    let mut serde_properties = vec![
        ("ignore.malformed.json".to_owned(), "false".to_owned()),
        ("case.insensitive".to_owned(), "false".to_owned()),
    ];
    for column in &columns {
        let lower = column.name.to_lowercase();
        if lower != column.name {
            serde_properties.push((format!("mapping.{lower}"), column.name.clone()));
        }
    }
    Ok(TableDdl {
        table: spec.table.clone(),
        columns,
        partitions,
        serde_properties,
        location,
        table_properties: properties,
        notes,
    })
}

impl TableDdl {
    /// The statement, ready for the Athena console or `start-query-execution`.
    pub fn sql(&self) -> String {
        let mut sql = String::new();
        let _ = writeln!(sql, "CREATE EXTERNAL TABLE IF NOT EXISTS {} (", self.table);
        push_columns(&mut sql, &self.columns);
        sql.push(')');
        if !self.partitions.is_empty() {
            sql.push_str("\nPARTITIONED BY (\n");
            push_columns(&mut sql, &self.partitions);
            sql.push(')');
        }
        let _ = write!(
            sql,
            "\nROW FORMAT SERDE '{SERDE}'\nWITH SERDEPROPERTIES (\n"
        );
        push_properties(&mut sql, &self.serde_properties);
        sql.push_str(")\nSTORED AS INPUTFORMAT 'org.apache.hadoop.mapred.TextInputFormat'\n");
        sql.push_str("OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'\n");
        let _ = write!(sql, "LOCATION '{}'", quote(&self.location));
        if !self.table_properties.is_empty() {
            sql.push_str("\nTBLPROPERTIES (\n");
            push_properties(&mut sql, &self.table_properties);
            sql.push(')');
        }
        sql.push_str(";\n");
        sql
    }
}

fn push_columns(sql: &mut String, columns: &[Column]) {
    for (n, column) in columns.iter().enumerate() {
        let _ = write!(sql, "  `{}` {}", column.name, column.kind);
        if let Some(comment) = &column.comment {
            let _ = write!(sql, " COMMENT '{}'", quote(comment));
        }
        sql.push_str(if n + 1 < columns.len() { ",\n" } else { "\n" });
    }
}

fn push_properties(sql: &mut String, properties: &[(String, String)]) {
    for (n, (key, value)) in properties.iter().enumerate() {
        let _ = write!(sql, "  '{}'='{}'", quote(key), quote(value));
        sql.push_str(if n + 1 < properties.len() {
            ",\n"
        } else {
            "\n"
        });
    }
}

/// A Hive string literal's content: `\` and `'` escaped.
fn quote(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "\\'")
}

fn column(name: &str, kind: &str, comment: Option<&str>) -> Column {
    Column {
        name: name.to_owned(),
        kind: kind.to_owned(),
        comment: comment.map(str::to_owned),
    }
}

/// The Airkit App Events columns: the standard fields and the seed's
/// example event's others. `defaultMetrics` (keys are schema paths and ids)
/// is kept as its JSON text: read it with `json_extract`.
const APP_EVENT_COLUMNS: [(&str, &str); 16] = [
    ("organizationId", "string"),
    ("eventTime", "timestamp"),
    ("appId", "string"),
    ("branchId", "string"),
    ("sessionId", "string"),
    ("deployId", "string"),
    ("type", "string"),
    ("kind", "string"),
    ("actorId", "string"),
    ("sourceRuntime", "string"),
    ("sourceDetail", "string"),
    ("appEventSchema", "string"),
    ("appEventId", "string"),
    ("ipAddresses", "array<string>"),
    ("billingCode", "string"),
    ("defaultMetrics", "string"),
];

/// The Airkit Audit Logs columns, as the seed's schema table lists them
/// (its one unnamed row left out): VARCHAR as `string`, NUMBER as `int`,
/// `EVENT_DATE` as `date`, `EVENT_TIME` (TIMESTAMP_NTZ, UTC) as `timestamp`.
/// `EVENT_MONTH` (DATE in the seed, of no stated form) stays a `string`.
const AUDIT_LOG_COLUMNS: [(&str, &str); 28] = [
    ("ORGANIZATION_ID", "string"),
    ("EVENT_ID", "string"),
    ("EVENT_YEAR", "int"),
    ("EVENT_MONTH", "string"),
    ("EVENT_DATE", "date"),
    ("EVENT_TIME", "timestamp"),
    ("ROOT_SCOPE_USER_ID", "string"),
    ("USER_ID", "string"),
    ("APP_ID", "string"),
    ("BRANCH_ID", "string"),
    ("DEPLOY_ID", "string"),
    ("SAVEPOINT_ID", "string"),
    ("SAVEPOINT_REVISION", "string"),
    ("RESOURCE_TYPE", "string"),
    ("RESOURCE_ID", "string"),
    ("DOMAIN", "string"),
    ("DATASTORE_ID", "string"),
    ("API_KEY_ID", "string"),
    ("NOTIFIER_ID", "string"),
    ("SAML_ID", "string"),
    ("WEBHOOK_ID", "string"),
    ("ADAPTER_ID", "string"),
    ("EMBED_ID", "string"),
    ("ROLE_ID", "string"),
    ("SERVICE", "string"),
    ("SERVICE_REVISION", "string"),
    ("LOGIN_TYPE", "string"),
    ("EVENT_TYPE", "string"),
];

/// The data columns of a profile, and a note on its time column.
fn columns(profile: &Profile) -> (Vec<Column>, Option<String>) {
    let fixed = |list: &[(&str, &str)], time: &str| -> Vec<Column> {
        list.iter()
            .map(|(name, kind)| {
                column(
                    name,
                    kind,
                    (*name == time).then_some(match profile.kind {
                        ProfileKind::AirkitAuditLogs => "zone-less, UTC",
                        _ => "RFC 3339, read as UTC",
                    }),
                )
            })
            .collect()
    };
    match profile.kind {
        ProfileKind::AirkitAppEvents => (
            fixed(&APP_EVENT_COLUMNS, "eventTime"),
            Some(
                "`defaultMetrics` is kept as JSON text: `json_extract(defaultMetrics, '$[\"…\"]')`"
                    .into(),
            ),
        ),
        ProfileKind::AirkitAuditLogs => (fixed(&AUDIT_LOG_COLUMNS, "EVENT_TIME"), None),
        ProfileKind::Generic => {
            let mut columns = Vec::new();
            let mut nested = Vec::new();
            let fields = [
                (Some(&profile.tenant), "string"),
                (Some(&profile.time), "timestamp"),
                (profile.id.as_ref(), "string"),
                (profile.event_type.as_ref(), "string"),
            ];
            for (path, kind) in fields {
                let Some(path) = path else { continue };
                let pointer = path.pointer();
                match pointer[1..].contains('/') {
                    false => {
                        let name = pointer[1..].replace("~1", "/").replace("~0", "~");
                        if !columns.iter().any(|c: &Column| c.name == name) {
                            columns.push(column(&name, kind, None));
                        }
                    }
                    true => nested.push(pointer.to_owned()),
                }
            }
            let mut note = "a generic stream's table has only its profile's top-level fields: \
                            add the other columns of your events"
                .to_owned();
            if !nested.is_empty() {
                let _ = write!(
                    note,
                    " (nested fields {} need a struct column for their top-level field)",
                    nested.join(", ")
                );
            }
            (columns, Some(note))
        }
    }
}

fn data_columns_for(profile: &Profile, tokens: &[&str]) -> String {
    let mut names = Vec::new();
    if tokens.contains(&"the tenant") {
        names.push(profile.tenant.to_string());
    }
    if tokens.contains(&"the hour") {
        names.push(profile.time.to_string());
    }
    names.join(", ")
}

fn check_table_name(table: &str) -> Result<(), DdlError> {
    let parts: Vec<&str> = table.split('.').collect();
    let valid = parts.len() <= 2
        && parts.iter().all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        });
    if valid {
        Ok(())
    } else {
        Err(DdlError(format!(
            "the table name `{table}` must be `[database.]table` of lower-case letters, digits and `_`"
        )))
    }
}

/// The default table name of a stream: `airkit-app-events` → `airkit_app_events`.
pub fn default_table_name(stream: &str) -> String {
    let name: String = stream
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("t_{name}")
    } else {
        name
    }
}

/// `since` in the date projection's format: relative dates as they are,
/// `yyyy-MM-dd` rewritten in `format` (only `yyyy`, `MM`, `dd` and
/// separators).
fn since_in(since: &str, format: &str) -> Result<String, DdlError> {
    if since.starts_with("NOW") {
        return Ok(since.to_owned());
    }
    let date = chrono::NaiveDate::parse_from_str(since, "%Y-%m-%d").map_err(|_| {
        DdlError(format!(
            "--since `{since}` is not a yyyy-MM-dd date or a relative date such as NOW-2YEARS"
        ))
    })?;
    let strftime = format
        .replace("yyyy", "%Y")
        .replace("MM", "%m")
        .replace("dd", "%d");
    Ok(date.format(&strftime).to_string())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Partition {
    Tenant,
    Date { format: String },
    Hour { padded: bool },
}

/// The folder part of a layout (everything before the last `/`), split into
/// the fixed text before the first partition, and the rest as a
/// `storage.location.template` tail.
#[derive(Debug)]
struct Folders {
    fixed: String,
    template: String,
    partitions: Vec<Partition>,
    /// `the tenant`, `the hour` or `the date` when only file names hold them.
    file_only: Vec<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Text(String),
    Name(String),
}

impl Folders {
    fn of(template: &str, stream: &str) -> Result<Self, DdlError> {
        let tokens = tokenize(template);
        let last_slash = tokens
            .iter()
            .rposition(|t| matches!(t, Token::Text(text) if text.contains('/')));
        let (mut folder, file): (Vec<Token>, Vec<Token>) = match last_slash {
            None => (Vec::new(), tokens),
            Some(at) => {
                let Token::Text(text) = &tokens[at] else {
                    unreachable!("found as text")
                };
                let cut = text.rfind('/').expect("has a slash") + 1;
                let mut folder = tokens[..at].to_vec();
                folder.push(Token::Text(text[..cut].to_owned()));
                let mut file = vec![Token::Text(text[cut..].to_owned())];
                file.extend_from_slice(&tokens[at + 1..]);
                (folder, file)
            }
        };
        let has =
            |tokens: &[Token], name: &str| tokens.iter().any(|t| *t == Token::Name(name.into()));
        let in_folder = |name: &str| has(&folder, name);
        let in_file = |name: &str| has(&file, name);
        if in_file("stream") && !in_folder("stream") {
            return Err(DdlError(format!(
                "the layout `{template}` puts every stream's files in the same folders: an Athena table \
                 reads all files under its folders, so give each stream its own folder (`{{stream}}/…`)"
            )));
        }
        if in_folder("part") || in_folder("part5") {
            return Err(DdlError(format!(
                "the layout `{template}` has the part number in a folder: Athena cannot project it"
            )));
        }
        if in_folder("HH") && in_folder("H") {
            return Err(DdlError(format!(
                "the layout `{template}` has both {{HH}} and {{H}} in folders: use one"
            )));
        }
        // {yyyy} {MM} {dd} in folders become one date column in their format.
        let mut file_only = Vec::new();
        if in_file("tenant") && !in_folder("tenant") {
            file_only.push("the tenant");
        }
        if (in_file("HH") || in_file("H")) && !(in_folder("HH") || in_folder("H")) {
            file_only.push("the hour");
        }
        let split_date = ["yyyy", "MM", "dd"].map(in_folder);
        let whole_date = in_folder("date");
        if split_date.iter().any(|&b| b) {
            if whole_date || !split_date.iter().all(|&b| b) {
                return Err(DdlError(format!(
                    "the layout `{template}` has part of a date in folders: use {{date}}, or {{yyyy}}, {{MM}} and {{dd}} together"
                )));
            }
            folder = merge_split_date(&folder, template)?;
        }
        let mut fixed = String::new();
        let mut rest = String::new();
        let mut partitions = Vec::new();
        for token in &folder {
            let (text, partition) = match token {
                Token::Text(text) => (text.clone(), None),
                Token::Name(name) => match name.as_str() {
                    "stream" => (stream.to_owned(), None),
                    "tenant" => ("${tenant}".to_owned(), Some(Partition::Tenant)),
                    "date" => (
                        "${dt}".to_owned(),
                        Some(Partition::Date {
                            format: "yyyy-MM-dd".into(),
                        }),
                    ),
                    "HH" => ("${hour}".to_owned(), Some(Partition::Hour { padded: true })),
                    "H" => (
                        "${hour}".to_owned(),
                        Some(Partition::Hour { padded: false }),
                    ),
                    other => match other.strip_prefix("dt:") {
                        Some(format) => (
                            "${dt}".to_owned(),
                            Some(Partition::Date {
                                format: format.to_owned(),
                            }),
                        ),
                        None => {
                            return Err(DdlError(format!(
                                "unknown token `{{{other}}}` in `{template}`"
                            )));
                        }
                    },
                },
            };
            if let Some(partition) = partition
                && !partitions.contains(&partition)
            {
                partitions.push(partition);
            }
            if partitions.is_empty() {
                fixed.push_str(&text);
            } else {
                rest.push_str(&text);
            }
        }
        // The fixed part ends at its last `/`: LOCATION is a folder.
        if let Some(cut) = fixed.rfind('/') {
            rest.insert_str(0, &fixed[cut + 1..]);
            fixed.truncate(cut + 1);
        } else {
            rest.insert_str(0, &fixed);
            fixed.clear();
        }
        Ok(Self {
            fixed,
            template: rest,
            partitions,
            file_only,
        })
    }

    fn has_date(&self) -> bool {
        self.partitions
            .iter()
            .any(|p| matches!(p, Partition::Date { .. }))
    }
}

/// Replaces the span from the first to the last of `{yyyy}`, `{MM}`, `{dd}`
/// by one `dt:<format>` token; the text between them must have no letters
/// (they would need quoting in the date format).
fn merge_split_date(folder: &[Token], template: &str) -> Result<Vec<Token>, DdlError> {
    let is_date =
        |t: &Token| matches!(t, Token::Name(n) if ["yyyy", "MM", "dd"].contains(&n.as_str()));
    let first = folder.iter().position(is_date).expect("present");
    let last = folder.iter().rposition(is_date).expect("present");
    let mut format = String::new();
    for token in &folder[first..=last] {
        match token {
            Token::Name(name) if is_date(token) => format.push_str(name),
            Token::Text(text) if !text.chars().any(|c| c.is_alphabetic() || c == '\'') => {
                format.push_str(text)
            }
            _ => {
                return Err(DdlError(format!(
                    "the layout `{template}` has other text or tokens between {{yyyy}}, {{MM}} and {{dd}}: \
                     Athena's date projection cannot read it; use {{date}}"
                )));
            }
        }
    }
    let mut merged = folder[..first].to_vec();
    merged.push(Token::Name(format!("dt:{format}")));
    merged.extend_from_slice(&folder[last + 1..]);
    Ok(merged)
}

fn tokenize(template: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        if open > 0 {
            tokens.push(Token::Text(rest[..open].to_owned()));
        }
        tokens.push(Token::Name(rest[open + 1..open + close].to_owned()));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        tokens.push(Token::Text(rest.to_owned()));
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ddl(profile: &Profile, stream: &str, layout: &str, tenants: Option<&[&str]>) -> TableDdl {
        let layout = KeyLayout::parse(layout, true, true).unwrap();
        table(&TableSpec {
            table: default_table_name(stream),
            stream,
            profile,
            location: "s3://acme-exports/exports/".into(),
            layout: &layout,
            tenants: tenants.map(|t| t.iter().map(|s| s.to_string()).collect()),
            since: "2026-01-01".into(),
        })
        .unwrap()
    }

    fn property<'a>(properties: &'a [(String, String)], key: &str) -> Option<&'a str> {
        properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn names(columns: &[Column]) -> Vec<&str> {
        columns.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn hive_layout_projects_tenant_date_and_hour() {
        let profile = Profile::airkit_app_events();
        let table = ddl(&profile, "airkit-app-events", "hive", None);
        assert_eq!(table.table, "airkit_app_events");
        assert_eq!(names(&table.partitions), ["tenant", "dt", "hour"]);
        assert_eq!(table.partitions[2].kind, "int");
        assert_eq!(
            table.location,
            "s3://acme-exports/exports/airkit-app-events/"
        );
        let p = &table.table_properties;
        assert_eq!(property(p, "projection.enabled"), Some("true"));
        assert_eq!(property(p, "projection.tenant.type"), Some("injected"));
        assert_eq!(property(p, "projection.dt.type"), Some("date"));
        assert_eq!(property(p, "projection.dt.format"), Some("yyyy-MM-dd"));
        assert_eq!(property(p, "projection.dt.range"), Some("2026-01-01,NOW"));
        assert_eq!(property(p, "projection.hour.type"), Some("integer"));
        assert_eq!(property(p, "projection.hour.range"), Some("0,23"));
        assert_eq!(property(p, "projection.hour.digits"), Some("2"));
        assert_eq!(
            property(p, "storage.location.template"),
            Some(
                "s3://acme-exports/exports/airkit-app-events/tenant=${tenant}/dt=${dt}/hour=${hour}/"
            )
        );
        // The template's placeholders are exactly the partition columns.
        for column in &table.partitions {
            assert!(
                property(p, "storage.location.template")
                    .unwrap()
                    .contains(&format!("${{{}}}", column.name))
            );
        }
    }

    #[test]
    fn app_event_columns_are_typed_and_mapped_from_camel_case() {
        let profile = Profile::airkit_app_events();
        let table = ddl(&profile, "airkit-app-events", "hive", None);
        let kind = |name: &str| {
            table
                .columns
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.kind.as_str())
        };
        assert_eq!(kind("organizationId"), Some("string"));
        assert_eq!(kind("eventTime"), Some("timestamp"));
        assert_eq!(kind("type"), Some("string"));
        assert_eq!(kind("kind"), Some("string"));
        assert_eq!(kind("ipAddresses"), Some("array<string>"));
        assert_eq!(kind("defaultMetrics"), Some("string"));
        let s = &table.serde_properties;
        assert_eq!(property(s, "ignore.malformed.json"), Some("false"));
        assert_eq!(property(s, "case.insensitive"), Some("false"));
        assert_eq!(
            property(s, "mapping.organizationid"),
            Some("organizationId")
        );
        assert_eq!(property(s, "mapping.eventtime"), Some("eventTime"));
        assert_eq!(property(s, "mapping.type"), None, "already lower case");
    }

    #[test]
    fn audit_log_columns_follow_the_seed_schema() {
        let profile = Profile::airkit_audit_logs();
        let table = ddl(&profile, "airkit-audit-logs", "date-folders", None);
        assert_eq!(table.columns.len(), 28);
        assert_eq!(table.columns[0].name, "ORGANIZATION_ID");
        let time = table
            .columns
            .iter()
            .find(|c| c.name == "EVENT_TIME")
            .unwrap();
        assert_eq!(time.kind, "timestamp");
        assert_eq!(
            property(&table.serde_properties, "mapping.event_type"),
            Some("EVENT_TYPE")
        );
        // Every upper-case column is mapped from its JSON key.
        assert_eq!(table.serde_properties.len(), 2 + 28);
        assert_eq!(
            property(&table.table_properties, "storage.location.template"),
            Some("s3://acme-exports/exports/airkit-audit-logs/${tenant}/${dt}/${hour}/")
        );
    }

    #[test]
    fn listed_tenants_are_an_enum_of_their_key_segments() {
        let profile = Profile::airkit_audit_logs();
        let table = ddl(
            &profile,
            "airkit-audit-logs",
            "hive",
            Some(&["acme", "a/b"]),
        );
        let p = &table.table_properties;
        assert_eq!(property(p, "projection.tenant.type"), Some("enum"));
        assert_eq!(property(p, "projection.tenant.values"), Some("acme,a%2Fb"));
    }

    #[test]
    fn amplitude_layout_projects_the_date_folder_only_and_says_why() {
        let profile = Profile::airkit_app_events();
        let table = ddl(&profile, "airkit-app-events", "amplitude", None);
        assert_eq!(names(&table.partitions), ["dt"]);
        assert_eq!(
            property(&table.table_properties, "storage.location.template"),
            Some("s3://acme-exports/exports/airkit-app-events/${dt}/")
        );
        assert!(property(&table.table_properties, "projection.hour.type").is_none());
        let note = table
            .notes
            .iter()
            .find(|n| n.contains("file names"))
            .unwrap();
        assert!(note.contains("the tenant and the hour"), "{note}");
        assert!(note.contains("organizationId, eventTime"), "{note}");
    }

    #[test]
    fn split_date_folders_are_one_date_column() {
        let profile = Profile::airkit_app_events();
        let table = ddl(
            &profile,
            "airkit-app-events",
            "logs/{stream}/{yyyy}/{MM}/{dd}/{H}/{tenant}-{part}.gz",
            None,
        );
        assert_eq!(names(&table.partitions), ["dt", "hour"]);
        let p = &table.table_properties;
        assert_eq!(property(p, "projection.dt.format"), Some("yyyy/MM/dd"));
        assert_eq!(property(p, "projection.dt.range"), Some("2026/01/01,NOW"));
        assert_eq!(property(p, "projection.hour.digits"), None);
        assert_eq!(
            table.location,
            "s3://acme-exports/exports/logs/airkit-app-events/"
        );
        assert_eq!(
            property(p, "storage.location.template"),
            Some("s3://acme-exports/exports/logs/airkit-app-events/${dt}/${hour}/")
        );
    }

    #[test]
    fn layouts_athena_cannot_read_are_refused_with_the_reason() {
        let profile = Profile::airkit_app_events();
        for (template, words) in [
            ("{date}/{HH}/{stream}.{tenant}-{part}.gz", "same folders"),
            ("{stream}/{date}/{HH}/{part}/x.gz", "part number"),
            ("{stream}/{yyyy}-x{MM}/{dd}/{HH}/{part}.gz", "between"),
        ] {
            let layout = KeyLayout::parse(template, true, true).unwrap();
            let error = table(&TableSpec {
                table: "t".into(),
                stream: "airkit-app-events",
                profile: &profile,
                location: "s3://b/".into(),
                layout: &layout,
                tenants: None,
                since: DEFAULT_SINCE.into(),
            })
            .unwrap_err();
            assert!(error.0.contains(words), "{template}: {error}");
        }
    }

    #[test]
    fn sql_holds_every_part_once() {
        let profile = Profile::airkit_audit_logs();
        let table = ddl(&profile, "airkit-audit-logs", "hive", None);
        let sql = table.sql();
        assert!(sql.starts_with("CREATE EXTERNAL TABLE IF NOT EXISTS airkit_audit_logs ("));
        assert!(sql.contains("ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'"));
        assert!(sql.contains("PARTITIONED BY (\n  `tenant` string"));
        assert!(sql.contains("LOCATION 's3://acme-exports/exports/airkit-audit-logs/'"));
        for (key, value) in table.serde_properties.iter().chain(&table.table_properties) {
            assert_eq!(
                sql.matches(&format!("'{key}'='{value}'")).count(),
                1,
                "{key}"
            );
        }
        for column in table.columns.iter().chain(&table.partitions) {
            assert!(
                sql.contains(&format!("`{}` {}", column.name, column.kind)),
                "{}",
                column.name
            );
        }
        assert!(sql.trim_end().ends_with(");"));
    }

    #[test]
    fn bad_names_locations_and_dates_are_refused() {
        let profile = Profile::airkit_app_events();
        let layout = KeyLayout::parse("hive", false, false).unwrap();
        let spec = |table: &str, location: &str, since: &str| TableSpec {
            table: table.into(),
            stream: "airkit-app-events",
            profile: &profile,
            location: location.into(),
            layout: &layout,
            tenants: None,
            since: since.into(),
        };
        assert!(table(&spec("Bad-Name", "s3://b/", DEFAULT_SINCE)).is_err());
        assert!(table(&spec("t", "b/prefix/", DEFAULT_SINCE)).is_err());
        assert!(table(&spec("t", "s3://b/", "last tuesday")).is_err());
        let bare = table(&spec("db.t", "s3://b", DEFAULT_SINCE)).unwrap();
        assert_eq!(bare.location, "s3://b/airkit-app-events/");
        assert_eq!(default_table_name("9-lives"), "t_9_lives");
    }
}
