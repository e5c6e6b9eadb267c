//! What a destination's export files contain and how they are stored: the
//! format and compression level, which events (by event type), which fields
//! (`omitFields`), an optional `_export` metadata object, the storage class
//! and object tags. Validated at cold start; every error names the
//! destination's field.
//!
//! The flusher applies these options when it publishes a part (see the
//! flusher's `export` module); a destination whose options equal the
//! archive's own encoding receives the archive part's bytes unchanged.

use std::collections::BTreeMap;

use crate::config::ConfigError;
use crate::profile::FieldPath;

/// The file format of a destination's export files: NDJSON, compressed or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportFormat {
    /// gzip NDJSON (`.gz`), the archive's own format. The default.
    #[default]
    Gzip,
    /// Plain NDJSON, uncompressed (no extension after `.json`/`.ndjson`).
    Ndjson,
    /// Zstandard NDJSON (`.zst`).
    Zstd,
}

/// The zstd level used when `compressionLevel` is unset (zstd's own default).
pub const ZSTD_DEFAULT_LEVEL: u32 = 3;

impl ExportFormat {
    /// Parses the configured name (`gzip`, `ndjson`, `zstd`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "gzip" => Some(Self::Gzip),
            "ndjson" => Some(Self::Ndjson),
            "zstd" => Some(Self::Zstd),
            _ => None,
        }
    }

    /// The configured name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Ndjson => "ndjson",
            Self::Zstd => "zstd",
        }
    }

    /// What the `{ext}` token of a key layout renders to.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Gzip => ".gz",
            Self::Ndjson => "",
            Self::Zstd => ".zst",
        }
    }

    /// The `Content-Type` of an export file.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Gzip => "application/gzip",
            Self::Ndjson => "application/x-ndjson",
            Self::Zstd => "application/zstd",
        }
    }
}

/// S3's storage classes that a `PutObject` to a general purpose bucket takes.
pub const STORAGE_CLASSES: [&str; 8] = [
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
];

/// S3's limit on tags per object.
pub const MAX_TAGS: usize = 10;

/// The content and storage options of one destination.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContentOptions {
    pub format: ExportFormat,
    /// The compression level; `None`: the archive's gzip level for `gzip`,
    /// [`ZSTD_DEFAULT_LEVEL`] for `zstd`. Always `None` for `ndjson`.
    pub compression_level: Option<u32>,
    /// When set, only events whose type is listed are exported.
    pub include_event_types: Option<Vec<String>>,
    /// Events whose type is listed are not exported.
    pub exclude_event_types: Vec<String>,
    /// Fields removed from every exported event (JSON pointers into objects).
    pub omit_fields: Vec<OmitField>,
    /// Whether every exported line carries an `_export` object.
    pub include_metadata: bool,
    /// The S3 storage class of export objects; `None`: the bucket's default
    /// (`STANDARD`).
    pub storage_class: Option<String>,
    /// Object tags on every export object (key → value, in key order).
    pub tags: BTreeMap<String, String>,
}

/// A field to leave out, as its JSON pointer's unescaped tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OmitField {
    pub pointer: String,
    pub tokens: Vec<String>,
}

/// The content options as configured (the destination document's fields).
#[derive(Debug, Default)]
pub struct ContentDocument<'a> {
    pub format: Option<&'a str>,
    pub compression_level: Option<u32>,
    pub include_event_types: Option<&'a [String]>,
    pub exclude_event_types: Option<&'a [String]>,
    pub omit_fields: Option<&'a [String]>,
    pub include_metadata: bool,
    pub storage_class: Option<&'a str>,
    pub tags: Option<&'a BTreeMap<String, String>>,
}

impl ContentOptions {
    /// Validates the configured options; `field` names a destination field
    /// (`format` → `destinations[3].format`) for errors.
    pub fn build(
        document: &ContentDocument<'_>,
        field: impl Fn(&str) -> String,
    ) -> Result<Self, ConfigError> {
        let format = match document.format {
            None => ExportFormat::Gzip,
            Some(text) => ExportFormat::parse(text).ok_or_else(|| {
                ConfigError::new(
                    field("format"),
                    format!("`{text}` is not `gzip`, `ndjson` or `zstd`"),
                )
            })?,
        };
        if let Some(level) = document.compression_level {
            let range = match format {
                ExportFormat::Gzip => 0..=9,
                ExportFormat::Zstd => 1..=19,
                ExportFormat::Ndjson => {
                    return Err(ConfigError::new(
                        field("compressionLevel"),
                        "`ndjson` is not compressed: leave the level out",
                    ));
                }
            };
            if !range.contains(&level) {
                return Err(ConfigError::new(
                    field("compressionLevel"),
                    format!(
                        "{level} is outside {}..={} for `{}`",
                        range.start(),
                        range.end(),
                        format.name()
                    ),
                ));
            }
        }
        let type_list = |name: &str, list: Option<&[String]>| -> Result<(), ConfigError> {
            if let Some(list) = list
                && (list.is_empty() || list.iter().any(|t| t.is_empty()))
            {
                return Err(ConfigError::new(
                    field(name),
                    "list at least one non-empty event type, or leave it out",
                ));
            }
            Ok(())
        };
        type_list("includeEventTypes", document.include_event_types)?;
        type_list("excludeEventTypes", document.exclude_event_types)?;
        let mut omit_fields = Vec::new();
        for pointer in document.omit_fields.unwrap_or_default() {
            FieldPath::parse(pointer).map_err(|m| ConfigError::new(field("omitFields"), m))?;
            let tokens = pointer[1..]
                .split('/')
                .map(|t| t.replace("~1", "/").replace("~0", "~"))
                .collect();
            omit_fields.push(OmitField {
                pointer: pointer.clone(),
                tokens,
            });
        }
        if let Some(class) = document.storage_class
            && !STORAGE_CLASSES.contains(&class)
        {
            return Err(ConfigError::new(
                field("storageClass"),
                format!(
                    "`{class}` is not an S3 storage class ({})",
                    STORAGE_CLASSES.join(", ")
                ),
            ));
        }
        let tags = document.tags.cloned().unwrap_or_default();
        check_tags(&tags).map_err(|m| ConfigError::new(field("tags"), m))?;
        Ok(Self {
            format,
            compression_level: document.compression_level,
            include_event_types: document.include_event_types.map(<[String]>::to_vec),
            exclude_event_types: document
                .exclude_event_types
                .map(<[String]>::to_vec)
                .unwrap_or_default(),
            omit_fields,
            include_metadata: document.include_metadata,
            storage_class: document.storage_class.map(str::to_owned),
            tags,
        })
    }

    /// The level this destination compresses at, given the archive's gzip
    /// level; `None` for `ndjson`.
    pub fn level(&self, archive_gzip_level: u32) -> Option<u32> {
        match self.format {
            ExportFormat::Gzip => Some(self.compression_level.unwrap_or(archive_gzip_level)),
            ExportFormat::Zstd => Some(self.compression_level.unwrap_or(ZSTD_DEFAULT_LEVEL)),
            ExportFormat::Ndjson => None,
        }
    }

    /// Whether the archive part's bytes are this destination's file as is:
    /// gzip at the archive's level, every event, every field, no metadata.
    pub fn is_archive_encoding(&self, archive_gzip_level: u32) -> bool {
        self.format == ExportFormat::Gzip
            && self.level(archive_gzip_level) == Some(archive_gzip_level)
            && !self.filters_events()
            && self.omit_fields.is_empty()
            && !self.include_metadata
    }

    /// Whether events are selected by type.
    pub fn filters_events(&self) -> bool {
        self.include_event_types.is_some() || !self.exclude_event_types.is_empty()
    }

    /// Whether an event of type `event_type` (`None`: it has none) is
    /// exported. An event without a type passes an exclude list and fails an
    /// include list.
    pub fn selects(&self, event_type: Option<&str>) -> bool {
        let included = match (&self.include_event_types, event_type) {
            (None, _) => true,
            (Some(list), Some(kind)) => list.iter().any(|t| t == kind),
            (Some(_), None) => false,
        };
        included
            && !event_type.is_some_and(|kind| self.exclude_event_types.iter().any(|t| t == kind))
    }

    /// The `Tagging` header value (`k1=v1&k2=v2`, URL-encoded), if any.
    pub fn tagging(&self) -> Option<String> {
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        if self.tags.is_empty() {
            return None;
        }
        let encode = |text: &str| utf8_percent_encode(text, NON_ALPHANUMERIC).to_string();
        Some(
            self.tags
                .iter()
                .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
                .collect::<Vec<_>>()
                .join("&"),
        )
    }
}

/// S3's object tag rules: at most 10; keys 1-128 and values 0-256 Unicode
/// characters of letters, digits, spaces and `+ - = . _ : / @`; keys do not
/// start with `aws:`.
fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), String> {
    if tags.len() > MAX_TAGS {
        return Err(format!(
            "{} tags: S3 allows at most {MAX_TAGS} per object",
            tags.len()
        ));
    }
    let allowed = |text: &str| {
        text.chars()
            .all(|c| c.is_alphanumeric() || c == ' ' || "+-=._:/@".contains(c))
    };
    for (key, value) in tags {
        let key_length = key.chars().count();
        if !(1..=128).contains(&key_length) || !allowed(key) {
            return Err(format!(
                "tag key `{key}` must be 1-128 letters, digits, spaces or + - = . _ : / @"
            ));
        }
        if key.starts_with("aws:") {
            return Err(format!(
                "tag key `{key}`: the `aws:` prefix is reserved for AWS"
            ));
        }
        if value.chars().count() > 256 || !allowed(value) {
            return Err(format!(
                "tag `{key}`'s value must be 0-256 letters, digits, spaces or + - = . _ : / @"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_by_type() {
        let options = ContentOptions {
            include_event_types: Some(vec!["a".into(), "b".into()]),
            exclude_event_types: vec!["b".into()],
            ..ContentOptions::default()
        };
        assert!(options.selects(Some("a")));
        assert!(!options.selects(Some("b")));
        assert!(!options.selects(Some("c")));
        assert!(!options.selects(None));
        let exclude = ContentOptions {
            exclude_event_types: vec!["b".into()],
            ..ContentOptions::default()
        };
        assert!(exclude.selects(None));
        assert!(!exclude.selects(Some("b")));
    }

    #[test]
    fn tagging_is_url_encoded_in_key_order() {
        let options = ContentOptions {
            tags: BTreeMap::from([
                ("team".into(), "data eng".into()),
                ("cost-center".into(), "a/b".into()),
            ]),
            ..ContentOptions::default()
        };
        assert_eq!(
            options.tagging().as_deref(),
            Some("cost%2Dcenter=a%2Fb&team=data%20eng")
        );
    }

    #[test]
    fn archive_encoding_is_only_the_defaults() {
        assert!(ContentOptions::default().is_archive_encoding(6));
        let level9 = ContentOptions {
            compression_level: Some(9),
            ..ContentOptions::default()
        };
        assert!(!level9.is_archive_encoding(6));
        assert!(level9.is_archive_encoding(9));
    }
}
