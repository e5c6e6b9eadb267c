//! Key layouts of export files in a destination bucket: presets and a token
//! template, checked at cold start so that no two partitions or parts can
//! ever be given the same key.
//!
//! Tokens: `{stream}`, `{tenant}` (the tenant's safe key segment),
//! `{date}` (`yyyy-MM-dd`), `{yyyy}`, `{MM}`, `{dd}`, `{HH}` (two digits),
//! `{H}` (no padding), `{part}` (1, 2, …), `{part5}` (`00001`) and `{ext}`,
//! the compression extension of the destination's format (`.gz`, `.zst`, or
//! nothing for plain NDJSON). The presets end in `.json{ext}` or
//! `.ndjson{ext}`; a template that ends in a literal `.gz` or `.zst` that
//! contradicts the format is refused (see [`KeyLayout::with_extension`]).

use std::fmt;

use chrono::DateTime;

use crate::partition::PartitionKey;

/// The Amplitude-style default:
/// `<stream>/<yyyy-MM-dd>/<tenant>_<yyyy-MM-dd>_<H>#<n>.json.gz` (for gzip).
pub const AMPLITUDE: &str = "{stream}/{date}/{tenant}_{date}_{H}#{part}.json{ext}";
/// Date folders: `<stream>/<tenant>/<yyyy-MM-dd>/<HH>/part-<n>.ndjson.gz`.
pub const DATE_FOLDERS: &str = "{stream}/{tenant}/{date}/{HH}/part-{part5}.ndjson{ext}";
/// Hive-style partitions for Athena, Spark and DuckDB.
pub const HIVE: &str = "{stream}/tenant={tenant}/dt={date}/hour={HH}/part-{part5}.ndjson{ext}";

/// A parsed key layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    template: String,
    pieces: Vec<Piece>,
    /// What `{ext}` renders to: `.gz` unless [`KeyLayout::with_extension`]
    /// says otherwise.
    extension: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Stream,
    Tenant,
    Date,
    Year,
    Month,
    Day,
    Hour2,
    Hour,
    Part,
    Part5,
    Ext,
}

/// Why a layout was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutError(pub String);

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl KeyLayout {
    /// A preset by name (`amplitude`, `date-folders`, `hive`) or a template.
    /// `single_stream` and `single_tenant` say whether the destination
    /// receives one stream or one tenant only, so the token may be left out.
    pub fn parse(
        spec: &str,
        single_stream: bool,
        single_tenant: bool,
    ) -> Result<Self, LayoutError> {
        let template = match spec {
            "amplitude" => AMPLITUDE,
            "date-folders" => DATE_FOLDERS,
            "hive" => HIVE,
            template => template,
        };
        let mut pieces = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| LayoutError(format!("unclosed `{{` in `{template}`")))?;
            let token = &rest[open + 1..open + close];
            pieces.push(match token {
                "stream" => Piece::Stream,
                "tenant" => Piece::Tenant,
                "date" => Piece::Date,
                "yyyy" => Piece::Year,
                "MM" => Piece::Month,
                "dd" => Piece::Day,
                "HH" => Piece::Hour2,
                "H" => Piece::Hour,
                "part" => Piece::Part,
                "part5" => Piece::Part5,
                "ext" => Piece::Ext,
                other => {
                    return Err(LayoutError(format!(
                        "unknown token `{{{other}}}` in `{template}`"
                    )));
                }
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        let has = |wanted: &[Piece]| pieces.iter().any(|p| wanted.contains(p));
        let missing = if !has(&[Piece::Part, Piece::Part5]) {
            Some("{part}")
        } else if !has(&[Piece::Hour, Piece::Hour2]) {
            Some("{HH}")
        } else if !(has(&[Piece::Date])
            || has(&[Piece::Year]) && has(&[Piece::Month]) && has(&[Piece::Day]))
        {
            Some("{date}")
        } else if !single_stream && !has(&[Piece::Stream]) {
            Some("{stream}")
        } else if !single_tenant && !has(&[Piece::Tenant]) {
            Some("{tenant}")
        } else {
            None
        };
        if let Some(token) = missing {
            return Err(LayoutError(format!(
                "`{template}` lacks {token}: two partitions or parts could get the same key"
            )));
        }
        // Tokens never render to `.` or `..` (see `TenantKey`), so the
        // template's own text is all there is to check.
        if template.starts_with('/')
            || template
                .split('/')
                .any(|segment| segment == "." || segment == "..")
        {
            return Err(LayoutError(format!(
                "`{template}` has a `.` or `..` segment or starts with `/`"
            )));
        }
        Ok(Self {
            template: template.to_owned(),
            pieces,
            extension: ".gz",
        })
    }

    /// The layout for files with this compression `extension` (`.gz`,
    /// `.zst`, or `""` for plain NDJSON), which `{ext}` renders. A template
    /// ending in a literal `.gz` or `.zst` other than `extension` is refused:
    /// the key would lie about the file's format.
    pub fn with_extension(mut self, extension: &'static str) -> Result<Self, LayoutError> {
        let literal = match self.pieces.last() {
            Some(Piece::Text(text)) if text.ends_with(".gz") => Some(".gz"),
            Some(Piece::Text(text)) if text.ends_with(".zst") => Some(".zst"),
            _ => None,
        };
        if let Some(literal) = literal
            && literal != extension
        {
            return Err(LayoutError(format!(
                "`{}` ends in `{literal}` but the format's files are `{}`: end it in `{{ext}}`",
                self.template,
                if extension.is_empty() {
                    "uncompressed"
                } else {
                    extension
                }
            )));
        }
        self.extension = extension;
        Ok(self)
    }

    /// The template text.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The folder that holds one partition's parts and nothing else, when
    /// the layout has one: every token but the part number comes before the
    /// last `/`. The `_SUCCESS` marker of an hour goes there.
    pub fn partition_folder(&self, prefix: &str, partition: &PartitionKey) -> Option<String> {
        let last_slash = self
            .pieces
            .iter()
            .rposition(|piece| matches!(piece, Piece::Text(text) if text.contains('/')))?;
        let folder_tokens =
            |wanted: &[Piece]| self.pieces[..last_slash].iter().any(|p| wanted.contains(p));
        let complete = folder_tokens(&[Piece::Stream])
            && folder_tokens(&[Piece::Tenant])
            && folder_tokens(&[Piece::Hour, Piece::Hour2])
            && (folder_tokens(&[Piece::Date])
                || folder_tokens(&[Piece::Year])
                    && folder_tokens(&[Piece::Month])
                    && folder_tokens(&[Piece::Day]));
        if !complete {
            return None;
        }
        let mut folder = prefix.to_owned();
        for piece in &self.pieces[..last_slash] {
            push_piece(&mut folder, piece, partition, 0, self.extension);
        }
        let Piece::Text(text) = &self.pieces[last_slash] else {
            unreachable!("found as text above")
        };
        folder.push_str(&text[..=text.rfind('/').expect("has a slash")]);
        Some(folder)
    }

    /// The key of part `number` of `partition`, after `prefix`.
    pub fn render(&self, prefix: &str, partition: &PartitionKey, number: u32) -> String {
        let mut key = prefix.to_owned();
        for piece in &self.pieces {
            push_piece(&mut key, piece, partition, number, self.extension);
        }
        key
    }
}

fn push_piece(
    key: &mut String,
    piece: &Piece,
    partition: &PartitionKey,
    number: u32,
    extension: &str,
) {
    let start =
        DateTime::from_timestamp_millis(partition.hour.start_millis()).expect("hours are in range");
    match piece {
        Piece::Text(text) => key.push_str(text),
        Piece::Stream => key.push_str(&partition.stream),
        Piece::Tenant => key.push_str(partition.tenant.as_str()),
        Piece::Date => key.push_str(&start.format("%Y-%m-%d").to_string()),
        Piece::Year => key.push_str(&start.format("%Y").to_string()),
        Piece::Month => key.push_str(&start.format("%m").to_string()),
        Piece::Day => key.push_str(&start.format("%d").to_string()),
        Piece::Hour2 => key.push_str(&start.format("%H").to_string()),
        Piece::Hour => key.push_str(&start.format("%-H").to_string()),
        Piece::Part => key.push_str(&number.to_string()),
        Piece::Part5 => key.push_str(&format!("{number:05}")),
        Piece::Ext => key.push_str(extension),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::{Hour, TenantKey};

    fn partition() -> PartitionKey {
        PartitionKey {
            hour: Hour::containing(1_579_971_600_000), // 2020-01-25T17:00Z
            stream: "airkit-app-events".into(),
            tenant: TenantKey::encode("187520"),
        }
    }

    #[test]
    fn amplitude_preset_matches_amplitudes_names() {
        let layout = KeyLayout::parse("amplitude", false, false).unwrap();
        assert_eq!(
            layout.render("exports/", &partition(), 1),
            "exports/airkit-app-events/2020-01-25/187520_2020-01-25_17#1.json.gz"
        );
    }

    #[test]
    fn hive_and_date_folder_presets() {
        let hive = KeyLayout::parse("hive", false, false).unwrap();
        assert_eq!(
            hive.render("", &partition(), 2),
            "airkit-app-events/tenant=187520/dt=2020-01-25/hour=17/part-00002.ndjson.gz"
        );
        let dates = KeyLayout::parse("date-folders", false, false).unwrap();
        assert_eq!(
            dates.render("p/", &partition(), 2),
            "p/airkit-app-events/187520/2020-01-25/17/part-00002.ndjson.gz"
        );
    }

    #[test]
    fn template_with_every_token() {
        let layout = KeyLayout::parse(
            "{yyyy}/{MM}/{dd}/{H}-{HH}/{stream}-{tenant}-{part}.gz",
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            layout.render("", &partition(), 7),
            "2020/01/25/17-17/airkit-app-events-187520-7.gz"
        );
    }

    #[test]
    fn templates_that_could_collide_name_the_missing_token() {
        for (template, token) in [
            ("{stream}/{tenant}/{date}/{HH}.gz", "{part}"),
            ("{stream}/{tenant}/{date}/{part}.gz", "{HH}"),
            ("{stream}/{tenant}/{HH}/{part}.gz", "{date}"),
            ("{tenant}/{date}/{HH}/{part}.gz", "{stream}"),
            ("{stream}/{date}/{HH}/{part}.gz", "{tenant}"),
        ] {
            let error = KeyLayout::parse(template, false, false).unwrap_err();
            assert!(error.0.contains(token), "{template}: {error}");
        }
        assert!(KeyLayout::parse("{date}/{HH}/{part}.gz", true, true).is_ok());
    }

    #[test]
    fn partition_folders_exist_only_where_one_partition_owns_the_folder() {
        let hive = KeyLayout::parse("hive", false, false).unwrap();
        assert_eq!(
            hive.partition_folder("x/", &partition()).as_deref(),
            Some("x/airkit-app-events/tenant=187520/dt=2020-01-25/hour=17/")
        );
        let dates = KeyLayout::parse("date-folders", false, false).unwrap();
        assert_eq!(
            dates.partition_folder("", &partition()).as_deref(),
            Some("airkit-app-events/187520/2020-01-25/17/")
        );
        let amplitude = KeyLayout::parse("amplitude", false, false).unwrap();
        assert_eq!(amplitude.partition_folder("", &partition()), None);
    }

    #[test]
    fn ext_follows_the_format_and_contradicting_literals_are_refused() {
        let zstd = KeyLayout::parse("hive", false, false)
            .unwrap()
            .with_extension(".zst")
            .unwrap();
        assert!(
            zstd.render("", &partition(), 1)
                .ends_with("part-00001.ndjson.zst")
        );
        let plain = KeyLayout::parse("amplitude", false, false)
            .unwrap()
            .with_extension("")
            .unwrap();
        assert!(plain.render("", &partition(), 1).ends_with("#1.json"));
        let literal =
            KeyLayout::parse("{stream}/{tenant}/{date}/{HH}/{part}.json.gz", false, false).unwrap();
        assert!(literal.clone().with_extension(".gz").is_ok());
        let error = literal.with_extension(".zst").unwrap_err();
        assert!(error.0.contains("{ext}"), "{error}");
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(KeyLayout::parse("{stream}/{nope}/{date}/{HH}/{part}", false, false).is_err());
        assert!(KeyLayout::parse("{stream}/{tenant}/{date}/{HH}/{part", false, false).is_err());
        assert!(KeyLayout::parse("../{stream}/{tenant}/{date}/{HH}/{part}", false, false).is_err());
    }
}
