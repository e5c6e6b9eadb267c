//! Key layouts of export files in a destination bucket: presets and a token
//! template, checked at cold start so that no two partitions or parts can
//! ever be given the same key (docs/design.md, invariant 9).
//!
//! Tokens: `{stream}`, `{tenant}` (the tenant's safe key segment),
//! `{date}` (`yyyy-MM-dd`), `{yyyy}`, `{MM}`, `{dd}`, `{HH}` (two digits),
//! `{H}` (no padding), `{part}` (1, 2, …), `{part5}` (`00001`) and `{ext}`,
//! the compression extension of the destination's format (`.gz`, `.zst`, or
//! nothing for plain NDJSON). The presets end in `.json{ext}` or
//! `.ndjson{ext}`; a template that ends in a literal `.gz` or `.zst` that
//! contradicts the format is refused (see [`KeyLayout::with_extension`]).
//!
//! A template is accepted only when every key it renders can be read back to
//! its stream, tenant, hour and part ([`KeyLayout::read_key`]): having the
//! tokens is not enough (`{tenant}{part}` renders tenant `acme1` part 1 and
//! tenant `acme` part 11 alike). No token renders `/`, so a key has the
//! template's `/`-separated segments. In a segment, a token of variable
//! width (`{stream}`, `{tenant}`, `{H}`, `{part}`, `{part5}`: part numbers
//! can pass 99999) ends where a character it never renders begins: the
//! reading walks from the left while each such token is followed by text
//! starting with such a character, and from the right while each is
//! preceded by text ending with one; tokens of fixed width and text are
//! read from either side. At most one token may be left between the two
//! walks: it takes what remains. The Amplitude preset's
//! `{tenant}_{date}_{H}#{part}.json{ext}` is read from the right, so a
//! tenant holding `_` stays whole. The same plan decides acceptance and
//! reads keys back, so an accepted template is one that can be read.

use std::fmt;

use chrono::DateTime;

use crate::partition::{Hour, PartitionKey, TenantKey, is_stream_name_char};

/// The Amplitude-style default:
/// `<stream>/<yyyy-MM-dd>/<tenant>_<yyyy-MM-dd>_<H>#<n>.json.gz` (for gzip).
pub const AMPLITUDE: &str = "{stream}/{date}/{tenant}_{date}_{H}#{part}.json{ext}";
/// Date folders: `<stream>/<tenant>/<yyyy-MM-dd>/<HH>/part-<n>.ndjson.gz`.
pub const DATE_FOLDERS: &str = "{stream}/{tenant}/{date}/{HH}/part-{part5}.ndjson{ext}";
/// Hive-style partitions for Athena, Spark and DuckDB.
pub const HIVE: &str = "{stream}/tenant={tenant}/dt={date}/hour={HH}/part-{part5}.ndjson{ext}";

/// A parsed key layout, accepted only when every key it renders can be
/// read back to its fields (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    template: String,
    pieces: Vec<Piece>,
    /// What `{ext}` renders to: `.gz` unless [`KeyLayout::with_extension`]
    /// says otherwise.
    extension: &'static str,
    /// How each `/`-separated segment of a key is read back, for this
    /// extension.
    segments: Vec<SegmentPlan>,
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

impl Piece {
    /// The token as a template spells it.
    fn token(&self) -> &'static str {
        match self {
            Piece::Text(_) => "text",
            Piece::Stream => "{stream}",
            Piece::Tenant => "{tenant}",
            Piece::Date => "{date}",
            Piece::Year => "{yyyy}",
            Piece::Month => "{MM}",
            Piece::Day => "{dd}",
            Piece::Hour2 => "{HH}",
            Piece::Hour => "{H}",
            Piece::Part => "{part}",
            Piece::Part5 => "{part5}",
            Piece::Ext => "{ext}",
        }
    }

    /// The width of a token that always renders the same number of bytes
    /// (years are 1970 to 9999, see `time`); `None` for text and for tokens
    /// of variable width.
    fn fixed_width(&self) -> Option<usize> {
        match self {
            Piece::Date => Some(10),
            Piece::Year => Some(4),
            Piece::Month | Piece::Day | Piece::Hour2 => Some(2),
            _ => None,
        }
    }

    /// Whether a token of variable width can render `c`: a character it
    /// never renders ends it.
    fn renders(&self, c: char) -> bool {
        match self {
            Piece::Stream => is_stream_name_char(c),
            Piece::Tenant => TenantKey::renders(c),
            _ => c.is_ascii_digit(),
        }
    }

    /// What a token of variable width renders, for error messages.
    fn alphabet(&self) -> &'static str {
        match self {
            Piece::Stream => "stream names contain a-z, 0-9, `-`, `_`",
            Piece::Tenant => "tenant keys contain letters, digits, `-`, `_`, `.`, `%`, `~`",
            Piece::Hour => "unpadded hours contain digits",
            _ => "part numbers contain digits",
        }
    }
}

/// How one `/`-separated segment of a key is read: `pieces` (text merged,
/// `{ext}` resolved, no `/`) `[..left_end]` from the left, then the rest
/// from the right, and the piece at `left_end`, when `middle`, takes what
/// is left between the two.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SegmentPlan {
    pieces: Vec<Piece>,
    left_end: usize,
    middle: bool,
}

/// The fields a key was rendered from (see [`KeyLayout::read_key`]).
/// `stream` and `tenant` are `None` when the layout leaves them out (a
/// destination that selects one stream or tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFields {
    pub stream: Option<String>,
    pub tenant: Option<TenantKey>,
    pub hour: Hour,
    pub part: u32,
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
    /// A preset by name (`amplitude`, `date-folders`, `hive`) or a template,
    /// accepted only when every key it renders can be read back to its
    /// stream, tenant, hour and part. `single_stream` and `single_tenant`
    /// say whether the destination receives one stream or one tenant only,
    /// so the token may be left out.
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
        let extension = ".gz";
        let segments = plan_segments(template, &pieces, extension)?;
        Ok(Self {
            template: template.to_owned(),
            pieces,
            extension,
            segments,
        })
    }

    /// The layout for files with this compression `extension` (`.gz`,
    /// `.zst`, or `""` for plain NDJSON), which `{ext}` renders. A template
    /// ending in a literal `.gz` or `.zst` other than `extension` is refused:
    /// the key would lie about the file's format. So is one whose keys can
    /// no longer be read back when `{ext}` renders `extension` (`{part}{ext}{H}`
    /// without an extension).
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
        self.segments = plan_segments(&self.template, &self.pieces, extension)?;
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

    /// Reads a key this layout rendered (without its prefix) back to the
    /// fields it was rendered from; `None` for a key it cannot have
    /// rendered. For every partition and part number `n`,
    /// `read_key(&render("", partition, n))` gives them back, so no two of
    /// them share a key.
    pub fn read_key(&self, key: &str) -> Option<KeyFields> {
        let mut found = FoundTokens::default();
        let mut segments = key.split('/');
        for plan in &self.segments {
            plan.read(segments.next()?, &mut found)?;
        }
        if segments.next().is_some() {
            return None;
        }
        let fields = found.fields()?;
        // Reading checked each token's characters; rendering the fields again
        // also refuses what the layout would spell differently (`07` for
        // `{H}`, a `{date}` and a `{yyyy}` that disagree).
        let partition = PartitionKey {
            hour: fields.hour,
            stream: fields.stream.clone().unwrap_or_default(),
            tenant: fields
                .tenant
                .clone()
                .unwrap_or_else(|| TenantKey::from_encoded("")),
        };
        (self.render("", &partition, fields.part) == key).then_some(fields)
    }
}

/// Splits the pieces into `/`-separated segments and plans how each is read
/// back (see the module doc); refuses a template whose keys cannot be read,
/// or that starts with `/` or has a `.` or `..` segment (when `{ext}`
/// renders `extension`).
fn plan_segments(
    template: &str,
    pieces: &[Piece],
    extension: &str,
) -> Result<Vec<SegmentPlan>, LayoutError> {
    let mut segments: Vec<Vec<Piece>> = vec![Vec::new()];
    let push_text = |segments: &mut Vec<Vec<Piece>>, text: &str| {
        for (n, part) in text.split('/').enumerate() {
            if n > 0 {
                segments.push(Vec::new());
            }
            let segment = segments.last_mut().expect("never empty");
            match segment.last_mut() {
                _ if part.is_empty() => {}
                Some(Piece::Text(before)) => before.push_str(part),
                _ => segment.push(Piece::Text(part.to_owned())),
            }
        }
    };
    for piece in pieces {
        match piece {
            Piece::Text(text) => push_text(&mut segments, text),
            Piece::Ext => push_text(&mut segments, extension),
            token => segments
                .last_mut()
                .expect("never empty")
                .push(token.clone()),
        }
    }
    let dot_segment = |segment: &Vec<Piece>| matches!(segment.as_slice(), [Piece::Text(text)] if text == "." || text == "..");
    // Tokens never render `.` or `..` (see `TenantKey`), so the template's
    // own text is all there is to check.
    if segments[0].is_empty() && segments.len() > 1 || segments.iter().any(dot_segment) {
        return Err(LayoutError(format!(
            "`{template}` has a `.` or `..` segment or starts with `/`"
        )));
    }
    segments
        .into_iter()
        .map(|pieces| {
            SegmentPlan::new(pieces).map_err(|(a, b)| ambiguity(template, extension, &a, &b))
        })
        .collect()
}

/// The refusal of a template in which tokens `a` and `b` of one segment
/// cannot be told apart.
fn ambiguity(template: &str, extension: &str, a: &Piece, b: &Piece) -> LayoutError {
    let (a_token, b_token) = (a.token(), b.token());
    let empty_ext = if extension.is_empty() && template.contains("{ext}") {
        " (`{ext}` renders nothing for uncompressed files)"
    } else {
        ""
    };
    LayoutError(format!(
        "key layout `{template}`: `{a_token}` and `{b_token}` are not separated by a character \
         `{a_token}` never renders ({}) right after `{a_token}`, nor by one `{b_token}` never \
         renders ({}) right before `{b_token}`{empty_ext}: two partitions or parts could get \
         the same key; separate them with `/` or such a character",
        a.alphabet(),
        b.alphabet()
    ))
}

impl SegmentPlan {
    /// Plans the reading of one segment's pieces, or names the two tokens
    /// of variable width that both walks stop at.
    fn new(pieces: Vec<Piece>) -> Result<Self, (Piece, Piece)> {
        let fixed_or_text =
            |piece: &Piece| matches!(piece, Piece::Text(_)) || piece.fixed_width().is_some();
        let ended_on_the_right = |k: usize| {
            fixed_or_text(&pieces[k])
                || matches!(pieces.get(k + 1), Some(Piece::Text(text))
                    if !pieces[k].renders(text.chars().next().expect("text is not empty")))
        };
        let ended_on_the_left = |k: usize| {
            fixed_or_text(&pieces[k])
                || k > 0
                    && matches!(&pieces[k - 1], Piece::Text(text)
                        if !pieces[k].renders(text.chars().next_back().expect("text is not empty")))
        };
        let mut left_end = 0;
        while left_end < pieces.len() && ended_on_the_right(left_end) {
            left_end += 1;
        }
        let mut right_start = pieces.len();
        while right_start > left_end + 1 && ended_on_the_left(right_start - 1) {
            right_start -= 1;
        }
        if right_start > left_end + 1 {
            return Err((pieces[left_end].clone(), pieces[right_start - 1].clone()));
        }
        Ok(Self {
            middle: right_start > left_end,
            pieces,
            left_end,
        })
    }

    /// Reads one segment of a key into `found`; `None` when the segment
    /// does not fit the pieces.
    fn read<'k>(&self, segment: &'k str, found: &mut FoundTokens<'k>) -> Option<()> {
        let mut start = 0;
        for (k, piece) in self.pieces[..self.left_end].iter().enumerate() {
            let end = match piece {
                Piece::Text(text) => {
                    segment[start..].starts_with(text.as_str()).then_some(())?;
                    start + text.len()
                }
                _ => match piece.fixed_width() {
                    Some(width) => start + width,
                    None => {
                        let Some(Piece::Text(text)) = self.pieces.get(k + 1) else {
                            unreachable!("planned: text follows")
                        };
                        start + segment[start..].find(text.chars().next()?)?
                    }
                },
            };
            found.put(piece, segment.get(start..end)?)?;
            start = end;
        }
        let mut end = segment.len();
        let right = self.left_end + usize::from(self.middle);
        for k in (right..self.pieces.len()).rev() {
            let piece = &self.pieces[k];
            let remaining = segment.get(start..end)?;
            let begin = match piece {
                Piece::Text(text) => {
                    remaining.ends_with(text.as_str()).then_some(())?;
                    end - text.len()
                }
                _ => match piece.fixed_width() {
                    Some(width) => end.checked_sub(width).filter(|&b| b >= start)?,
                    None => {
                        let Piece::Text(text) = &self.pieces[k - 1] else {
                            unreachable!("planned: text precedes")
                        };
                        let stop = text.chars().next_back()?;
                        start + remaining.rfind(stop)? + stop.len_utf8()
                    }
                },
            };
            found.put(piece, segment.get(begin..end)?)?;
            end = begin;
        }
        if self.middle {
            found.put(&self.pieces[self.left_end], segment.get(start..end)?)
        } else {
            (start == end).then_some(())
        }
    }
}

/// The text each token was read as, in one key; a token met twice must
/// read the same both times.
#[derive(Debug, Default)]
struct FoundTokens<'k> {
    stream: Option<&'k str>,
    tenant: Option<&'k str>,
    date: Option<&'k str>,
    year: Option<&'k str>,
    month: Option<&'k str>,
    day: Option<&'k str>,
    hour2: Option<&'k str>,
    hour: Option<&'k str>,
    part: Option<&'k str>,
    part5: Option<&'k str>,
}

impl<'k> FoundTokens<'k> {
    /// Records `text` as `piece`'s; `None` when a token of variable width
    /// is empty or holds a character it never renders, or when the token
    /// was read before as other text. Text pieces are checked by the caller.
    fn put(&mut self, piece: &Piece, text: &'k str) -> Option<()> {
        let slot = match piece {
            Piece::Text(_) | Piece::Ext => return Some(()),
            Piece::Stream => &mut self.stream,
            Piece::Tenant => &mut self.tenant,
            Piece::Date => &mut self.date,
            Piece::Year => &mut self.year,
            Piece::Month => &mut self.month,
            Piece::Day => &mut self.day,
            Piece::Hour2 => &mut self.hour2,
            Piece::Hour => &mut self.hour,
            Piece::Part => &mut self.part,
            Piece::Part5 => &mut self.part5,
        };
        if piece.fixed_width().is_none()
            && (text.is_empty() || !text.chars().all(|c| piece.renders(c)))
        {
            return None;
        }
        match slot {
            Some(before) if *before != text => None,
            _ => {
                *slot = Some(text);
                Some(())
            }
        }
    }

    /// The fields the tokens name; `None` when a date, hour or part does
    /// not parse.
    fn fields(&self) -> Option<KeyFields> {
        let date = match (self.date, self.year, self.month, self.day) {
            (Some(date), ..) => date.to_owned(),
            (None, Some(year), Some(month), Some(day)) => format!("{year}-{month}-{day}"),
            _ => return None,
        };
        let hour: u32 = self.hour2.or(self.hour)?.parse().ok()?;
        let start = chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d")
            .ok()?
            .and_hms_opt(hour, 0, 0)?;
        let part: u32 = self.part.or(self.part5)?.parse().ok()?;
        Some(KeyFields {
            stream: self.stream.map(str::to_owned),
            tenant: self.tenant.map(TenantKey::from_encoded),
            hour: Hour::containing(start.and_utc().timestamp_millis()),
            part,
        })
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
            "{yyyy}/{MM}/{dd}/{H}-{HH}/{stream}.{tenant}-{part}.gz",
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            layout.render("", &partition(), 7),
            "2020/01/25/17-17/airkit-app-events.187520-7.gz"
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

    /// Tenant ids chosen to make keys meet: digits and separators where a
    /// template puts its own, the percent and digest forms, dot segments.
    fn adversarial_tenants() -> Vec<TenantKey> {
        let long = "t".repeat(300);
        [
            "acme",
            "acme1",
            "1",
            "11",
            "a_2026-11-22_1",
            "a_1#1.json",
            "x#1",
            "..",
            "ünïcødé",
            long.as_str(),
            "-",
            "_._",
            "a-b",
            "2026-11-22",
            "%41",
            "~abc",
            "hour=1",
            "tenant=x/dt=y",
        ]
        .iter()
        .map(|id| TenantKey::encode(id))
        .collect()
    }

    /// Stream names (valid ones: `a-z 0-9 - _`) chosen likewise.
    const ADVERSARIAL_STREAMS: [&str; 6] = ["airkit-app-events", "a", "a1", "1", "a_1", "a-1_1"];

    /// Part numbers on both sides of each width change.
    const ADVERSARIAL_PARTS: [u32; 6] = [1, 9, 10, 11, 99_999, 100_000];

    /// 2026-11-22T00:00Z.
    const DAY: i64 = 1_795_305_600_000;

    /// Renders every combination of the inputs with `layout` and reads each
    /// key back: `Err` names the first key read wrong and the first two
    /// inputs that render the same key.
    fn check_round_trip(
        layout: &KeyLayout,
        streams: &[&str],
        tenants: &[TenantKey],
        hours: &[Hour],
        parts: &[u32],
    ) -> Result<usize, String> {
        let has = |token: &str| layout.template().contains(token);
        let mut seen = std::collections::HashMap::new();
        for stream in streams {
            for tenant in tenants {
                for &hour in hours {
                    for &part in parts {
                        let partition = PartitionKey {
                            hour,
                            stream: (*stream).to_owned(),
                            tenant: tenant.clone(),
                        };
                        let key = layout.render("", &partition, part);
                        let input = (*stream, tenant.as_str(), hour, part);
                        if let Some(other) = seen.insert(key.clone(), input) {
                            return Err(format!("{other:?} and {input:?} both render `{key}`"));
                        }
                        let want = KeyFields {
                            stream: has("{stream}").then(|| (*stream).to_owned()),
                            tenant: has("{tenant}").then(|| tenant.clone()),
                            hour,
                            part,
                        };
                        let got = layout.read_key(&key);
                        if got.as_ref() != Some(&want) {
                            return Err(format!("`{key}` reads as {got:?}, not {want:?}"));
                        }
                    }
                }
            }
        }
        Ok(seen.len())
    }

    fn hours_of_a_day() -> Vec<Hour> {
        (0..24)
            .map(|h| Hour::containing(DAY + h * 3_600_000))
            .collect()
    }

    #[test]
    fn every_preset_reads_back_every_adversarial_key() {
        for preset in ["amplitude", "date-folders", "hive"] {
            for extension in [".gz", ".zst", ""] {
                let layout = KeyLayout::parse(preset, false, false)
                    .and_then(|layout| layout.with_extension(extension))
                    .unwrap_or_else(|error| panic!("{preset} {extension:?}: {error}"));
                let keys = check_round_trip(
                    &layout,
                    &ADVERSARIAL_STREAMS,
                    &adversarial_tenants(),
                    &hours_of_a_day(),
                    &ADVERSARIAL_PARTS,
                )
                .unwrap_or_else(|error| panic!("{preset} {extension:?}: {error}"));
                assert_eq!(keys, 6 * 18 * 24 * 6);
            }
        }
    }

    #[test]
    fn accepted_custom_templates_read_back_every_adversarial_key() {
        for template in [
            "{stream}/{tenant}/{date}/{HH}/{part5}.{ext}",
            "{stream}/{tenant}/{date}{HH}/{part}{ext}",
            "{stream}/{tenant}.{part}/{date}/{HH}{ext}",
            "{stream}/{tenant}_{part}_{H}/{date}{ext}",
            "{stream}.{tenant}-{date}-{H}-{part}",
            "{yyyy}/{MM}/{dd}/{H}-{HH}/{stream}.{tenant}-{part}.gz",
            "{H}#{tenant}#{stream}/{date}/{part}",
            "{tenant}/{date}_{H}_{part}{ext}/{stream}",
            "x{stream}x{date}{HH}#{part}/{tenant}",
        ] {
            let layout = KeyLayout::parse(template, false, false)
                .unwrap_or_else(|error| panic!("{template}: {error}"));
            check_round_trip(
                &layout,
                &ADVERSARIAL_STREAMS,
                &adversarial_tenants(),
                &hours_of_a_day(),
                &ADVERSARIAL_PARTS,
            )
            .unwrap_or_else(|error| panic!("{template}: {error}"));
        }
        for one_stream in [
            "{tenant}/{date}/{H}#{part}{ext}",
            "{tenant}_{yyyy}-{MM}-{dd}_{H}#{part}.{ext}",
        ] {
            let layout = KeyLayout::parse(one_stream, true, false).unwrap();
            check_round_trip(
                &layout,
                &["airkit-app-events"],
                &adversarial_tenants(),
                &hours_of_a_day(),
                &ADVERSARIAL_PARTS,
            )
            .unwrap_or_else(|error| panic!("{one_stream}: {error}"));
        }
    }

    #[test]
    fn templates_whose_keys_could_meet_are_refused_naming_both_tokens() {
        for (template, first, second) in [
            (
                "{stream}/{date}/{HH}/{tenant}{part}{ext}",
                "{tenant}",
                "{part}",
            ),
            ("{stream}/{tenant}/{date}_{H}{part}{ext}", "{H}", "{part}"),
            (
                "{tenant}-{stream}/{date}/{HH}/{part}{ext}",
                "{tenant}",
                "{stream}",
            ),
            (
                "{stream}_{tenant}/{date}/{HH}/{part}{ext}",
                "{stream}",
                "{tenant}",
            ),
            ("{stream}/{tenant}/{date}/{H}{part5}{ext}", "{H}", "{part5}"),
            (
                "{stream}/{tenant}_{date}_{stream}/{HH}/{part}",
                "{tenant}",
                "{stream}",
            ),
            ("{tenant}_{H}{stream}/{date}/{part}", "{tenant}", "{stream}"),
            (
                "{stream}{tenant}/{date}/{HH}/{part}",
                "{stream}",
                "{tenant}",
            ),
        ] {
            let error = KeyLayout::parse(template, false, false)
                .expect_err(template)
                .0;
            assert!(
                error.starts_with(&format!(
                    "key layout `{template}`: `{first}` and `{second}` are not separated"
                )),
                "{template}: {error}"
            );
        }
        let error = KeyLayout::parse("{tenant}{part}", true, true)
            .unwrap_err()
            .0;
        assert!(error.contains("`{tenant}{part}` lacks"), "{error}");
    }

    #[test]
    fn a_template_read_through_its_extension_is_refused_when_the_extension_is_empty() {
        let template = "{stream}/{tenant}/{date}/{HH}/{part}{ext}{H}";
        let layout = KeyLayout::parse(template, false, false).unwrap();
        assert!(layout.clone().with_extension(".zst").is_ok());
        let error = layout.with_extension("").unwrap_err().0;
        assert!(error.contains("`{part}` and `{H}`"), "{error}");
        assert!(error.contains("renders nothing"), "{error}");
        let dot =
            KeyLayout::parse("{stream}/{tenant}/{date}/{HH}/{part}/.{ext}", false, false).unwrap();
        assert!(dot.with_extension("").unwrap_err().0.contains("`.`"));
    }

    #[test]
    fn keys_the_layout_cannot_have_rendered_read_as_nothing() {
        let amplitude = KeyLayout::parse("amplitude", false, false).unwrap();
        let key = amplitude.render("", &partition(), 3);
        assert_eq!(
            amplitude.read_key(&key),
            Some(KeyFields {
                stream: Some("airkit-app-events".into()),
                tenant: Some(TenantKey::encode("187520")),
                hour: partition().hour,
                part: 3,
            })
        );
        for key in [
            "",
            "airkit-app-events/2020-01-25/187520_2020-01-25_17#3.json",
            "airkit-app-events/2020-01-25/187520_2020-01-26_17#3.json.gz",
            "airkit-app-events/2020-01-25/187520_2020-01-25_07#3.json.gz",
            "airkit-app-events/2020-01-25/187520_2020-01-25_24#3.json.gz",
            "airkit-app-events/2020-01-25/187520_2020-01-25_17#03.json.gz",
            "airkit-app-events/2020-01-25/187520_2020-01-25_17#.json.gz",
            "airkit-app-events/2020-01-25/_2020-01-25_17#3.json.gz",
            "airkit-app-events/2020-01-25/a#b_2020-01-25_17#3.json.gz",
            "Airkit/2020-01-25/187520_2020-01-25_17#3.json.gz",
            "airkit-app-events/2020-01-25/187520_2020-01-25_17#3.json.gz/x",
            "airkit-app-events/2020-01-25/é_2020-01-25_17#3.json.gz",
        ] {
            assert_eq!(amplitude.read_key(key), None, "{key}");
        }
    }

    /// A small deterministic generator (xorshift64*), so the random
    /// templates are the same on every run.
    struct Generator(u64);

    impl Generator {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        }
    }

    /// Random templates of the tokens and the texts `/ _ - # . x`: every
    /// one the rule accepts reads back every adversarial key, and no two
    /// adversarial inputs share a key. This is what shows the rule sound;
    /// the counts show it refuses some and accepts many.
    #[test]
    fn every_accepted_random_template_reads_back_every_adversarial_key() {
        let mut random = Generator(0x5eed_1a70_u64);
        let tenants: Vec<TenantKey> = [
            "acme", "acme1", "1", "11", "a_1", "a-1", "x.1", "_._", "%41", "~abc",
        ]
        .iter()
        .map(|id| TenantKey::encode(id))
        .chain([TenantKey::encode(&"t".repeat(300))])
        .collect();
        let streams = ["a", "a1", "1", "11", "a_1", "a-1"];
        let hours: Vec<Hour> = [0, 1, 10, 11, 23, 24 + 1]
            .iter()
            .map(|h| Hour::containing(DAY + h * 3_600_000))
            .collect();
        let texts = ["/", "_", "-", "#", ".", "x"];
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..1000 {
            let single_stream = random.below(6) == 0;
            let single_tenant = random.below(6) == 0;
            let mut tokens: Vec<&str> = Vec::new();
            if !single_stream {
                tokens.push("{stream}");
            }
            if !single_tenant {
                tokens.push("{tenant}");
            }
            if random.below(3) == 0 {
                tokens.extend(["{yyyy}", "{MM}", "{dd}"]);
            } else {
                tokens.push("{date}");
            }
            tokens.push(["{H}", "{HH}"][random.below(2)]);
            tokens.push(["{part}", "{part5}"][random.below(2)]);
            if random.below(2) == 0 {
                tokens.push("{ext}");
            }
            if random.below(5) == 0 {
                let again = tokens[random.below(tokens.len())];
                tokens.push(again);
            }
            for n in (1..tokens.len()).rev() {
                tokens.swap(n, random.below(n + 1));
            }
            let mut template = String::new();
            for token in tokens {
                for _ in 0..[0, 0, 1, 1, 2][random.below(5)] {
                    template.push_str(texts[random.below(texts.len())]);
                }
                template.push_str(token);
            }
            if random.below(2) == 0 {
                template.push_str(texts[random.below(texts.len())]);
            }
            let extension = [".gz", ".zst", ""][random.below(3)];
            let Ok(layout) = KeyLayout::parse(&template, single_stream, single_tenant)
                .and_then(|layout| layout.with_extension(extension))
            else {
                refused += 1;
                continue;
            };
            accepted += 1;
            let streams: &[&str] = if single_stream {
                &streams[..1]
            } else {
                &streams
            };
            let tenants = if single_tenant {
                &tenants[..1]
            } else {
                &tenants[..]
            };
            check_round_trip(&layout, streams, tenants, &hours, &ADVERSARIAL_PARTS)
                .unwrap_or_else(|error| panic!("{template} ({extension:?}): {error}"));
        }
        assert!(
            accepted > 200 && refused > 200,
            "accepted {accepted}, refused {refused}"
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(KeyLayout::parse("{stream}/{nope}/{date}/{HH}/{part}", false, false).is_err());
        assert!(KeyLayout::parse("{stream}/{tenant}/{date}/{HH}/{part", false, false).is_err());
        assert!(KeyLayout::parse("../{stream}/{tenant}/{date}/{HH}/{part}", false, false).is_err());
    }
}
