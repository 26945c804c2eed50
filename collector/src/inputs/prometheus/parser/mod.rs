//! Parsers of the Prometheus text exposition format 0.0.4 and the OpenMetrics 1.0 text format.
//!
//! Both run as one pass over the body's bytes with no regex and no look-back. They follow
//! Prometheus' own parsers (`model/textparse`) closely, including the leniencies a target may
//! rely on, because a body Prometheus accepts must not fail here (and vice versa):
//!
//! - Text format: blanks (` `, `\t`) may surround every token, commas between labels are optional
//!   and a trailing comma is allowed, comments other than `# HELP`/`# TYPE` are skipped, raw
//!   newlines inside a quoted label value are accepted, and unknown escapes in label values
//!   (`\q`) are kept as written. Timestamps are integer milliseconds.
//! - OpenMetrics: exactly one space separates tokens, no blank lines or free comments, a comma
//!   or `}` must follow every label value, the body must end with `# EOF`, timestamps are float
//!   seconds, and exemplars (` # {..} value [ts]`) are validated and dropped.
//! - Both: values parse like Go's `strconv.ParseFloat` without hex floats and `_` (what
//!   Prometheus accepts), every NaN becomes Prometheus' "normal" NaN so it can never be taken
//!   for a stale marker, and — as Prometheus 3 does — `le` of histograms and `quantile` of
//!   summaries are rewritten to the OpenMetrics float form (`le="1"` becomes `le="1.0"`), so
//!   both spellings name the same series. CRLF line ends are tolerated.
//!
//! Not supported (yet): quoted UTF-8 metric and label names (`{"my.metric"}`), which Prometheus
//! 3 accepts when asked for them through the Accept header; this scraper does not ask.

use std::borrow::Cow;

use crate::sample::{Label, Labels, Text};

/// The exposition format of a scraped body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpositionFormat {
    /// The Prometheus text format, version 0.0.4 (`text/plain; version=0.0.4`).
    PrometheusText,
    /// The OpenMetrics 1.0 text format (`application/openmetrics-text; version=1.0.0`).
    OpenMetrics,
}

/// The Accept header a scraper sends (prefer OpenMetrics 1.0, then text 0.0.4), as Prometheus does.
///
/// The weights are the ones Prometheus computes for `scrape_protocols: [OpenMetricsText1.0.0,
/// PrometheusText0.0.4]`, so exporters that negotiate see the same request as from Prometheus.
pub const ACCEPT_HEADER: &str =
    "application/openmetrics-text;version=1.0.0;q=0.6,text/plain;version=0.0.4;q=0.5,*/*;q=0.4";

/// Picks the parser from a response Content-Type (missing/unknown -> PrometheusText).
pub fn format_from_content_type(content_type: Option<&str>) -> ExpositionFormat {
    let media_type = content_type.and_then(|value| value.split(';').next()).map(str::trim).unwrap_or_default();
    if media_type.eq_ignore_ascii_case("application/openmetrics-text") {
        ExpositionFormat::OpenMetrics
    } else {
        ExpositionFormat::PrometheusText
    }
}

/// One sample as exposed by a target, before target labels and relabeling are applied.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedSample {
    /// Metric name as exposed (OpenMetrics counters keep their `_total`).
    pub name: Text,
    /// The sample's labels; the metric name is not among them.
    pub labels: Labels,
    /// The value; any exposed NaN is Prometheus' normal NaN, never the stale marker.
    pub value: f64,
    /// The exposed timestamp in milliseconds since the Unix epoch, if the sample had one.
    pub timestamp_ms: Option<i64>,
}

/// Why a body could not be parsed. Every variant names the 1-based line it was found on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A sample line does not start with a valid metric name.
    #[error("line {line}: expected a metric name, found {found}")]
    InvalidMetricName {
        /// 1-based line number.
        line: usize,
        /// What was found instead.
        found: String,
    },
    /// A label set holds something that is not a label name.
    #[error("line {line}: expected a label name or '}}', found {found}")]
    InvalidLabelName {
        /// 1-based line number.
        line: usize,
        /// What was found instead.
        found: String,
    },
    /// A label name is not followed by `=`.
    #[error("line {line}: expected '=' after label name {name:?}, found {found}")]
    MissingEquals {
        /// 1-based line number.
        line: usize,
        /// The label name.
        name: String,
        /// What was found instead.
        found: String,
    },
    /// A label's `=` is not followed by a quoted value.
    #[error("line {line}: expected a quoted value for label {name:?}, found {found}")]
    MissingLabelValue {
        /// 1-based line number.
        line: usize,
        /// The label name.
        name: String,
        /// What was found instead.
        found: String,
    },
    /// A label value's closing quote is missing.
    #[error("line {line}: unterminated value of label {name:?}")]
    UnterminatedLabelValue {
        /// 1-based line number where the value starts.
        line: usize,
        /// The label name.
        name: String,
    },
    /// A backslash ends a label value's line or the body, so it escapes nothing.
    #[error("line {line}: invalid label value escape at the end of the line in label {name:?}")]
    InvalidLabelValueEscape {
        /// 1-based line number.
        line: usize,
        /// The label name.
        name: String,
    },
    /// OpenMetrics only: a label value is followed by something other than `,` or `}`.
    #[error("line {line}: expected ',' or '}}' after the value of label {name:?}, found {found}")]
    MissingLabelSeparator {
        /// 1-based line number.
        line: usize,
        /// The label name.
        name: String,
        /// What was found instead.
        found: String,
    },
    /// A label name appears twice in one sample (`__name__` counts as the metric name).
    #[error("line {line}: duplicate label name {name:?}")]
    DuplicateLabel {
        /// 1-based line number.
        line: usize,
        /// The repeated label name.
        name: String,
    },
    /// A sample has no value.
    #[error("line {line}: expected a sample value, found {found}")]
    MissingValue {
        /// 1-based line number.
        line: usize,
        /// What was found instead.
        found: String,
    },
    /// A sample value is not a float (or is out of the f64 range).
    #[error("line {line}: invalid sample value {value:?}")]
    InvalidValue {
        /// 1-based line number.
        line: usize,
        /// The offending value text.
        value: String,
    },
    /// A timestamp is not an integer of milliseconds (text) or finite float seconds (OpenMetrics).
    #[error("line {line}: invalid timestamp {timestamp:?}")]
    InvalidTimestamp {
        /// 1-based line number.
        line: usize,
        /// The offending timestamp text.
        timestamp: String,
    },
    /// Something follows a complete sample on its line.
    #[error("line {line}: unexpected {found} after the sample")]
    TrailingData {
        /// 1-based line number.
        line: usize,
        /// What was found.
        found: String,
    },
    /// A `# HELP`, `# TYPE` or `# UNIT` line lacks a valid metric name.
    #[error("line {line}: expected a metric name after # {keyword}, found {found}")]
    InvalidMetadataName {
        /// 1-based line number.
        line: usize,
        /// `HELP`, `TYPE` or `UNIT`.
        keyword: &'static str,
        /// What was found instead.
        found: String,
    },
    /// OpenMetrics only: a `# HELP`, `# TYPE` or `# UNIT` line has no ` text` after the name.
    #[error("line {line}: expected a space and text after the metric name in # {keyword}, found {found}")]
    MissingMetadataText {
        /// 1-based line number.
        line: usize,
        /// `HELP`, `TYPE` or `UNIT`.
        keyword: &'static str,
        /// What was found instead.
        found: String,
    },
    /// A `# TYPE` line names an unknown type.
    #[error("line {line}: invalid metric type {found:?}")]
    InvalidMetricType {
        /// 1-based line number.
        line: usize,
        /// The type text.
        found: String,
    },
    /// OpenMetrics only: a `# UNIT` is not a `_`-separated suffix of its metric name.
    #[error("line {line}: unit {unit:?} is not a suffix of metric {metric:?}")]
    InvalidUnit {
        /// 1-based line number.
        line: usize,
        /// The unit.
        unit: String,
        /// The metric name.
        metric: String,
    },
    /// OpenMetrics only: a `#` line that is not `# HELP`, `# TYPE`, `# UNIT` or `# EOF`.
    #[error("line {line}: invalid comment {found}: OpenMetrics allows only # HELP, # TYPE, # UNIT and # EOF")]
    InvalidComment {
        /// 1-based line number.
        line: usize,
        /// The start of the line.
        found: String,
    },
    /// OpenMetrics only: an empty line.
    #[error("line {line}: blank lines are not allowed in OpenMetrics")]
    BlankLine {
        /// 1-based line number.
        line: usize,
    },
    /// OpenMetrics only: the body ends without `# EOF`.
    #[error("line {line}: data does not end with # EOF")]
    MissingEof {
        /// 1-based line number of the end of the body.
        line: usize,
    },
    /// OpenMetrics only: something follows `# EOF`.
    #[error("line {line}: unexpected data after # EOF")]
    DataAfterEof {
        /// 1-based line number of the `# EOF`.
        line: usize,
    },
    /// OpenMetrics only: an exemplar's value is missing or not a float.
    #[error("line {line}: invalid exemplar value {value:?}")]
    InvalidExemplarValue {
        /// 1-based line number.
        line: usize,
        /// The offending value text.
        value: String,
    },
    /// OpenMetrics only: an exemplar's timestamp is not finite float seconds.
    #[error("line {line}: invalid exemplar timestamp {timestamp:?}")]
    InvalidExemplarTimestamp {
        /// 1-based line number.
        line: usize,
        /// The offending timestamp text.
        timestamp: String,
    },
}

impl ParseError {
    /// A short static name of the error's kind, for metric labels (bounded cardinality).
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidMetricName { .. } => "metric_name",
            Self::InvalidLabelName { .. } | Self::MissingEquals { .. } | Self::MissingLabelSeparator { .. } => {
                "label_syntax"
            }
            Self::MissingLabelValue { .. }
            | Self::UnterminatedLabelValue { .. }
            | Self::InvalidLabelValueEscape { .. } => "label_value",
            Self::DuplicateLabel { .. } => "duplicate_label",
            Self::MissingValue { .. } | Self::InvalidValue { .. } => "value",
            Self::InvalidTimestamp { .. } => "timestamp",
            Self::TrailingData { .. } => "trailing_data",
            Self::InvalidMetadataName { .. }
            | Self::MissingMetadataText { .. }
            | Self::InvalidMetricType { .. }
            | Self::InvalidUnit { .. } => "metadata",
            Self::InvalidComment { .. } | Self::BlankLine { .. } => "line_syntax",
            Self::MissingEof { .. } | Self::DataAfterEof { .. } => "eof",
            Self::InvalidExemplarValue { .. } | Self::InvalidExemplarTimestamp { .. } => "exemplar",
        }
    }

    /// The 1-based line number the error was found on.
    pub fn line(&self) -> usize {
        match self {
            Self::InvalidMetricName { line, .. }
            | Self::InvalidLabelName { line, .. }
            | Self::MissingEquals { line, .. }
            | Self::MissingLabelValue { line, .. }
            | Self::UnterminatedLabelValue { line, .. }
            | Self::InvalidLabelValueEscape { line, .. }
            | Self::MissingLabelSeparator { line, .. }
            | Self::DuplicateLabel { line, .. }
            | Self::MissingValue { line, .. }
            | Self::InvalidValue { line, .. }
            | Self::InvalidTimestamp { line, .. }
            | Self::TrailingData { line, .. }
            | Self::InvalidMetadataName { line, .. }
            | Self::MissingMetadataText { line, .. }
            | Self::InvalidMetricType { line, .. }
            | Self::InvalidUnit { line, .. }
            | Self::InvalidComment { line, .. }
            | Self::BlankLine { line }
            | Self::MissingEof { line }
            | Self::DataAfterEof { line }
            | Self::InvalidExemplarValue { line, .. }
            | Self::InvalidExemplarTimestamp { line, .. } => *line,
        }
    }
}

/// Parses a whole scraped body into samples; the first error fails the whole body, as in Prometheus.
pub fn parse(body: &str, format: ExpositionFormat) -> Result<Vec<ParsedSample>, ParseError> {
    let mut parser = Parser::new(body);
    match format {
        ExpositionFormat::PrometheusText => parser.parse_text()?,
        ExpositionFormat::OpenMetrics => parser.parse_openmetrics()?,
    }
    Ok(parser.samples)
}

/// Prometheus' `value.NormalNaN`: the NaN every exposed NaN is stored as, distinct from the
/// stale marker ([`crate::sample::STALE_NAN_BITS`]).
const NORMAL_NAN_BITS: u64 = 0x7ff8_0000_0000_0001;

/// Longest excerpt of the body quoted in an error message, so errors stay small.
const MAX_EXCERPT_CHARS: usize = 32;

/// The grammar differences between the two formats that the shared sample code cares about.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Text,
    OpenMetrics,
}

/// The part of the last `# TYPE` that matters to parsing: which label holds a float to normalize.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FamilyKind {
    Histogram,
    Summary,
    Other,
}

const NAME_START: u8 = 1;
const NAME_CONTINUE: u8 = 2;
const LABEL_START: u8 = 4;
const LABEL_CONTINUE: u8 = 8;

/// Byte classes for metric names (`[a-zA-Z_:][a-zA-Z0-9_:]*`) and label names
/// (`[a-zA-Z_][a-zA-Z0-9_]*`), one table lookup per byte.
const BYTE_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0usize;
    while byte < 256 {
        let b = byte as u8;
        let alpha = b.is_ascii_alphabetic() || b == b'_';
        let mut class = 0;
        if alpha || b == b':' {
            class |= NAME_START | NAME_CONTINUE;
        }
        if b.is_ascii_digit() {
            class |= NAME_CONTINUE | LABEL_CONTINUE;
        }
        if alpha {
            class |= LABEL_START | LABEL_CONTINUE;
        }
        table[byte] = class;
        byte += 1;
    }
    table
};

struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    line: usize,
    family: FamilyKind,
    samples: Vec<ParsedSample>,
    /// The current sample's labels as read, reused from sample to sample so that a sample's
    /// label set is allocated once, at its final size, instead of grown pair by pair.
    scratch: Vec<ScratchLabel<'a>>,
}

/// A label of the sample being parsed, borrowing from the body where it can.
struct ScratchLabel<'a> {
    name: &'a str,
    value: Cow<'a, str>,
    /// Line the value started on, for the duplicate-label error.
    line: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Self {
            src,
            bytes: src.as_bytes(),
            pos: 0,
            line: 1,
            family: FamilyKind::Other,
            // A sample line is rarely shorter than ~30 bytes; the estimate stays proportional
            // to the body, so a hostile body cannot make this allocate more than it weighs.
            samples: Vec::with_capacity(src.len() / 64),
            scratch: Vec::new(),
        }
    }

    // ---- byte-level helpers -------------------------------------------------------------

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<u8> {
        self.bytes.get(self.pos + offset).copied()
    }

    /// A slice of the body. Every index the parser produces sits next to an ASCII byte or at an
    /// end of the body, so it is a char boundary; `get` keeps that an invariant, not a panic.
    fn slice(&self, start: usize, end: usize) -> &'a str {
        self.src.get(start..end).unwrap_or_default()
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// End of body, `\n`, or `\r\n` (CRLF is tolerated everywhere a line may end).
    fn at_line_end(&self) -> bool {
        match self.peek() {
            None | Some(b'\n') => true,
            Some(b'\r') => self.peek_at(1) == Some(b'\n'),
            Some(_) => false,
        }
    }

    /// Consumes a line end found by [`Self::at_line_end`].
    fn consume_line_end(&mut self) {
        if self.peek() == Some(b'\r') {
            self.pos += 1;
        }
        if self.peek() == Some(b'\n') {
            self.pos += 1;
            self.line += 1;
        }
    }

    /// Returns the rest of the current line without its line end, and moves past the line end.
    fn rest_of_line(&mut self) -> &'a str {
        let start = self.pos;
        let end =
            self.bytes[start..].iter().position(|&b| b == b'\n').map_or(self.bytes.len(), |offset| start + offset);
        self.pos = end;
        let text_end = if end > start && self.bytes[end - 1] == b'\r' { end - 1 } else { end };
        self.consume_line_end();
        self.slice(start, text_end)
    }

    /// Moves past bytes of one class and returns them.
    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if !keep(b) {
                break;
            }
            self.pos += 1;
        }
        self.slice(start, self.pos)
    }

    fn read_metric_name(&mut self) -> Option<&'a str> {
        let first = self.peek()?;
        if BYTE_CLASS[usize::from(first)] & NAME_START == 0 {
            return None;
        }
        Some(self.take_while(|b| BYTE_CLASS[usize::from(b)] & NAME_CONTINUE != 0))
    }

    fn read_label_name(&mut self) -> Option<&'a str> {
        let first = self.peek()?;
        if BYTE_CLASS[usize::from(first)] & LABEL_START == 0 {
            return None;
        }
        Some(self.take_while(|b| BYTE_CLASS[usize::from(b)] & LABEL_CONTINUE != 0))
    }

    /// Describes what sits at the cursor, for error messages: a short quoted excerpt.
    fn found(&self) -> String {
        match self.peek() {
            None => "end of input".to_owned(),
            Some(b'\n' | b'\r') => "end of line".to_owned(),
            Some(_) => {
                let rest = self.src.get(self.pos..).unwrap_or_default();
                let token_len = rest
                    .char_indices()
                    .take(MAX_EXCERPT_CHARS)
                    .find(|(_, c)| matches!(c, ' ' | '\t' | '\r' | '\n'))
                    .map_or_else(
                        || rest.char_indices().nth(MAX_EXCERPT_CHARS).map_or(rest.len(), |(i, _)| i),
                        |(i, _)| i.max(1),
                    );
                format!("{:?}", rest.get(..token_len).unwrap_or_default())
            }
        }
    }

    // ---- Prometheus text format ---------------------------------------------------------

    fn parse_text(&mut self) -> Result<(), ParseError> {
        loop {
            // Prometheus' lexer skips blanks before any token, including at a line's start.
            self.skip_blanks();
            match self.peek() {
                None => return Ok(()),
                Some(b'#') => self.text_comment()?,
                Some(_) if self.at_line_end() => self.consume_line_end(),
                Some(_) => self.sample(Dialect::Text)?,
            }
        }
    }

    /// A `#` line: `# HELP name text` and `# TYPE name type` are validated as Prometheus does,
    /// anything else (including `#HELP` without a blank) is a free comment.
    fn text_comment(&mut self) -> Result<(), ParseError> {
        self.pos += 1;
        let blanks_start = self.pos;
        self.skip_blanks();
        let keyword = match (self.pos > blanks_start, self.bytes.get(self.pos..self.pos + 4)) {
            (true, Some(b"HELP")) => "HELP",
            (true, Some(b"TYPE")) => "TYPE",
            _ => {
                self.rest_of_line();
                return Ok(());
            }
        };
        if !matches!(self.peek_at(4), Some(b' ' | b'\t')) {
            self.rest_of_line();
            return Ok(());
        }
        self.pos += 4;
        self.skip_blanks();
        if self.read_metric_name().is_none() {
            return Err(ParseError::InvalidMetadataName { line: self.line, keyword, found: self.found() });
        }
        let line = self.line;
        // Prometheus takes the rest of the line and drops its first character (the separator).
        let rest = self.rest_of_line();
        let text = rest.char_indices().nth(1).map_or("", |(i, _)| rest.get(i..).unwrap_or_default());
        if keyword == "TYPE" {
            self.family = match text {
                "histogram" => FamilyKind::Histogram,
                "summary" => FamilyKind::Summary,
                "counter" | "gauge" | "untyped" => FamilyKind::Other,
                other => return Err(ParseError::InvalidMetricType { line, found: excerpt(other) }),
            };
        }
        Ok(())
    }

    // ---- OpenMetrics --------------------------------------------------------------------

    fn parse_openmetrics(&mut self) -> Result<(), ParseError> {
        loop {
            match self.peek() {
                None => return Err(ParseError::MissingEof { line: self.line }),
                Some(b'#') => {
                    if self.openmetrics_comment()? {
                        return Ok(());
                    }
                }
                Some(_) if self.at_line_end() => return Err(ParseError::BlankLine { line: self.line }),
                Some(_) => self.sample(Dialect::OpenMetrics)?,
            }
        }
    }

    /// A `#` line of OpenMetrics; returns true at `# EOF`.
    fn openmetrics_comment(&mut self) -> Result<bool, ParseError> {
        let line = self.line;
        let invalid = |parser: &Self| ParseError::InvalidComment { line, found: parser.found() };
        if self.peek_at(1) != Some(b' ') {
            return Err(invalid(self));
        }
        let word = self.bytes.get(self.pos + 2..self.pos + 6);
        if word.is_some_and(|w| w.starts_with(b"EOF")) || self.bytes.get(self.pos + 2..) == Some(b"EOF") {
            self.pos += 5;
            if self.at_line_end() {
                self.consume_line_end();
            }
            if self.pos != self.bytes.len() {
                return Err(ParseError::DataAfterEof { line });
            }
            return Ok(true);
        }
        let keyword = match word {
            Some(b"HELP") => "HELP",
            Some(b"TYPE") => "TYPE",
            Some(b"UNIT") => "UNIT",
            _ => return Err(invalid(self)),
        };
        if self.peek_at(6) != Some(b' ') {
            return Err(invalid(self));
        }
        self.pos += 7;
        let Some(metric) = self.read_metric_name() else {
            return Err(ParseError::InvalidMetadataName { line, keyword, found: self.found() });
        };
        if self.peek() != Some(b' ') {
            return Err(ParseError::MissingMetadataText { line, keyword, found: self.found() });
        }
        self.pos += 1;
        let text = self.rest_of_line();
        match keyword {
            "TYPE" => {
                self.family = match text {
                    "histogram" => FamilyKind::Histogram,
                    "summary" => FamilyKind::Summary,
                    "counter" | "gauge" | "gaugehistogram" | "info" | "stateset" | "unknown" => FamilyKind::Other,
                    other => return Err(ParseError::InvalidMetricType { line, found: excerpt(other) }),
                };
            }
            "UNIT" if !text.is_empty() => {
                let is_suffix = metric.len() > text.len()
                    && metric.ends_with(text)
                    && metric.as_bytes().get(metric.len() - text.len() - 1) == Some(&b'_');
                if !is_suffix {
                    return Err(ParseError::InvalidUnit { line, unit: excerpt(text), metric: metric.to_owned() });
                }
            }
            _ => {}
        }
        Ok(false)
    }

    // ---- samples (both formats) ---------------------------------------------------------

    fn sample(&mut self, dialect: Dialect) -> Result<(), ParseError> {
        let Some(name) = self.read_metric_name() else {
            return Err(ParseError::InvalidMetricName { line: self.line, found: self.found() });
        };
        if dialect == Dialect::Text {
            self.skip_blanks();
        }
        let labels = if self.peek() == Some(b'{') {
            self.pos += 1;
            self.label_set(dialect, true)?;
            self.take_scratch_labels()?
        } else {
            Labels::default()
        };
        match dialect {
            Dialect::Text => self.skip_blanks(),
            Dialect::OpenMetrics => {
                if self.peek() != Some(b' ') {
                    return Err(ParseError::MissingValue { line: self.line, found: self.found() });
                }
                self.pos += 1;
            }
        }
        let token = self.token(dialect);
        if token.is_empty() {
            return Err(ParseError::MissingValue { line: self.line, found: self.found() });
        }
        let value =
            parse_go_float(token).ok_or_else(|| ParseError::InvalidValue { line: self.line, value: excerpt(token) })?;
        let timestamp_ms = match dialect {
            Dialect::Text => self.text_timestamp()?,
            Dialect::OpenMetrics => self.openmetrics_suffix()?,
        };
        self.samples.push(ParsedSample { name: name.into(), labels, value: canonical_nan(value), timestamp_ms });
        Ok(())
    }

    /// A value or timestamp token: text format `[^{ \t\n]+`, OpenMetrics `[^ \n]+` (plus `\r`).
    fn token(&mut self, dialect: Dialect) -> &'a str {
        match dialect {
            Dialect::Text => self.take_while(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'{')),
            Dialect::OpenMetrics => self.take_while(|b| !matches!(b, b' ' | b'\n' | b'\r')),
        }
    }

    /// The text format's optional integer millisecond timestamp and the line end.
    fn text_timestamp(&mut self) -> Result<Option<i64>, ParseError> {
        self.skip_blanks();
        if self.at_line_end() {
            self.consume_line_end();
            return Ok(None);
        }
        let token = self.take_while(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
        // Prometheus lexes the timestamp as `[0-9]+`: no sign, no fraction.
        let timestamp = (!token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()))
            .then(|| token.parse::<i64>().ok())
            .flatten()
            .ok_or_else(|| ParseError::InvalidTimestamp { line: self.line, timestamp: excerpt(token) })?;
        self.skip_blanks();
        if !self.at_line_end() {
            return Err(ParseError::TrailingData { line: self.line, found: self.found() });
        }
        self.consume_line_end();
        Ok(Some(timestamp))
    }

    /// OpenMetrics' optional float-seconds timestamp, optional exemplar, and the line end.
    fn openmetrics_suffix(&mut self) -> Result<Option<i64>, ParseError> {
        let mut timestamp_ms = None;
        if !self.at_line_end() && !self.at_exemplar() {
            if self.peek() != Some(b' ') {
                return Err(ParseError::TrailingData { line: self.line, found: self.found() });
            }
            self.pos += 1;
            let token = self.token(Dialect::OpenMetrics);
            let seconds = parse_go_float(token)
                .filter(|s| s.is_finite())
                .ok_or_else(|| ParseError::InvalidTimestamp { line: self.line, timestamp: excerpt(token) })?;
            timestamp_ms = Some(seconds_to_ms(seconds));
        }
        if self.at_exemplar() {
            self.exemplar()?;
        }
        if !self.at_line_end() {
            return Err(ParseError::TrailingData { line: self.line, found: self.found() });
        }
        self.consume_line_end();
        Ok(timestamp_ms)
    }

    fn at_exemplar(&self) -> bool {
        self.bytes.get(self.pos..self.pos + 4) == Some(b" # {")
    }

    /// ` # {labels} value [timestamp]`: validated like Prometheus does, then dropped.
    fn exemplar(&mut self) -> Result<(), ParseError> {
        self.pos += 4;
        self.label_set(Dialect::OpenMetrics, false)?;
        let token = if self.peek() == Some(b' ') {
            self.pos += 1;
            self.token(Dialect::OpenMetrics)
        } else {
            ""
        };
        if parse_go_float(token).is_none() {
            return Err(ParseError::InvalidExemplarValue { line: self.line, value: excerpt(token) });
        }
        if self.peek() == Some(b' ') {
            self.pos += 1;
            let token = self.token(Dialect::OpenMetrics);
            if !parse_go_float(token).is_some_and(f64::is_finite) {
                return Err(ParseError::InvalidExemplarTimestamp { line: self.line, timestamp: excerpt(token) });
            }
        }
        Ok(())
    }

    /// A label set after its `{`, up to and including its `}`. With `keep` the labels are
    /// collected in `scratch`; without (exemplars) they are only validated.
    fn label_set(&mut self, dialect: Dialect, keep: bool) -> Result<(), ParseError> {
        self.scratch.clear();
        let lenient = dialect == Dialect::Text;
        loop {
            if lenient {
                self.skip_blanks();
            }
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(());
            }
            let Some(name) = self.read_label_name() else {
                return Err(ParseError::InvalidLabelName { line: self.line, found: self.found() });
            };
            if lenient {
                self.skip_blanks();
            }
            if self.peek() != Some(b'=') {
                return Err(ParseError::MissingEquals { line: self.line, name: name.to_owned(), found: self.found() });
            }
            self.pos += 1;
            if lenient {
                self.skip_blanks();
            }
            if self.peek() != Some(b'"') {
                return Err(ParseError::MissingLabelValue {
                    line: self.line,
                    name: name.to_owned(),
                    found: self.found(),
                });
            }
            let line = self.line;
            let value = self.label_value(name, lenient)?;
            if keep {
                if name == "__name__" {
                    return Err(ParseError::DuplicateLabel { line, name: name.to_owned() });
                }
                let value = match (self.family, name) {
                    (FamilyKind::Histogram, "le") | (FamilyKind::Summary, "quantile") => {
                        Cow::Owned(normalize_float_label(value))
                    }
                    _ => value,
                };
                self.scratch.push(ScratchLabel { name, value, line });
            }
            if lenient {
                // Prometheus accepts a trailing comma and, quirkily, no comma at all between
                // pairs; a second comma in a row fails as "expected a label name".
                self.skip_blanks();
                if self.peek() == Some(b',') {
                    self.pos += 1;
                }
            } else {
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b'}') => {}
                    _ => {
                        return Err(ParseError::MissingLabelSeparator {
                            line: self.line,
                            name: name.to_owned(),
                            found: self.found(),
                        });
                    }
                }
            }
        }
    }

    /// Turns the labels collected in `scratch` into a sorted label set. Targets almost always
    /// expose labels already sorted, which the check makes a single pass; a repeated name is
    /// an error, as in Prometheus.
    fn take_scratch_labels(&mut self) -> Result<Labels, ParseError> {
        // One comparison per pair in the common case: strictly ascending is sorted and unique.
        if !self.scratch.is_sorted_by(|a, b| a.name < b.name) {
            // Stable, so the first of two equal names is reported where Prometheus reports it.
            self.scratch.sort_by(|a, b| a.name.cmp(b.name));
            if let Some(pair) = self.scratch.windows(2).find(|pair| pair[0].name == pair[1].name) {
                return Err(ParseError::DuplicateLabel { line: pair[1].line, name: pair[1].name.to_owned() });
            }
        }
        Ok(Labels::from_sorted_unique(
            self.scratch.drain(..).map(|label| Label { name: label.name.into(), value: label.value.into() }),
        ))
    }

    /// A quoted label value at the cursor, unescaped. Borrows from the body unless it holds an
    /// escape, so the common case costs one copy when it is stored.
    fn label_value(&mut self, name: &str, allow_newline: bool) -> Result<Cow<'a, str>, ParseError> {
        let start_line = self.line;
        let start = self.pos + 1;
        let mut owned: Option<String> = None;
        let mut segment_start = start;
        let mut i = start;
        loop {
            // Jump to the next byte that matters: most values hold none of them until the quote.
            i = memchr::memchr3(b'"', b'\\', b'\n', self.bytes.get(i..).unwrap_or_default()).map_or(self.bytes.len(), |at| i + at);
            match self.bytes.get(i) {
                None => {
                    return Err(ParseError::UnterminatedLabelValue { line: start_line, name: name.to_owned() });
                }
                Some(b'"') => {
                    self.pos = i + 1;
                    let tail = self.slice(segment_start, i);
                    return Ok(match owned {
                        Some(mut value) => {
                            value.push_str(tail);
                            Cow::Owned(value)
                        }
                        None => Cow::Borrowed(tail),
                    });
                }
                Some(b'\\') => {
                    let unescaped = match self.bytes.get(i + 1) {
                        None | Some(b'\n') => {
                            return Err(ParseError::InvalidLabelValueEscape { line: self.line, name: name.to_owned() });
                        }
                        Some(b'\\') => Some('\\'),
                        Some(b'"') => Some('"'),
                        Some(b'n') => Some('\n'),
                        // Prometheus keeps unknown escapes as written (`\q` stays `\q`).
                        Some(_) => None,
                    };
                    match unescaped {
                        Some(ch) => {
                            let value = owned.get_or_insert_with(String::new);
                            value.push_str(self.slice(segment_start, i));
                            value.push(ch);
                            i += 2;
                            segment_start = i;
                        }
                        None => i += 1,
                    }
                }
                Some(b'\n') => {
                    if !allow_newline {
                        return Err(ParseError::UnterminatedLabelValue { line: start_line, name: name.to_owned() });
                    }
                    self.line += 1;
                    i += 1;
                }
                // memchr3 stops only at the three bytes above; stepping on keeps the scan sound.
                Some(_) => i += 1,
            }
        }
    }
}

/// Quotes a piece of the body for an error message, cut to [`MAX_EXCERPT_CHARS`].
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(MAX_EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", text.get(..cut).unwrap_or_default()),
        None => text.to_owned(),
    }
}

fn canonical_nan(value: f64) -> f64 {
    if value.is_nan() { f64::from_bits(NORMAL_NAN_BITS) } else { value }
}

/// Converts OpenMetrics float seconds to milliseconds, truncating toward zero like Go's
/// `int64(ts * 1000)` (Rust's `as` also saturates where Go's result is undefined).
fn seconds_to_ms(seconds: f64) -> i64 {
    (seconds * 1000.0) as i64
}

/// Parses a float as Prometheus does: Go's `strconv.ParseFloat` minus hex floats and `_`.
///
/// Accepted: decimal and exponent forms with an optional sign, `Inf`/`Infinity` with an
/// optional sign and `NaN` without one, all case-insensitive. Values beyond the f64 range are
/// errors (Go's `ErrRange`); values that underflow become zero, as in Go.
pub(crate) fn parse_go_float(text: &str) -> Option<f64> {
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'+' => (false, text.get(1..)?),
        b'-' => (true, text.get(1..)?),
        _ => (false, text),
    };
    if unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity") {
        return Some(if negative { f64::NEG_INFINITY } else { f64::INFINITY });
    }
    if text.eq_ignore_ascii_case("nan") {
        return Some(f64::NAN);
    }
    // Rust's decimal grammar equals Go's once the special words and other characters are out.
    if !unsigned.bytes().all(|b| matches!(b, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')) {
        return None;
    }
    text.parse::<f64>().ok().filter(|value| value.is_finite())
}

/// Rewrites a float label value in the OpenMetrics canonical form, as Prometheus 3 does for `le`
/// and `quantile`; a value that is not a float is kept as it is.
fn normalize_float_label(value: Cow<'_, str>) -> String {
    match parse_go_float(&value) {
        Some(float) => format_openmetrics_float(float),
        None => value.into_owned(),
    }
}

/// Formats like Prometheus' `formatOpenMetricsFloat`: Go's `%g` with the shortest precise
/// digits, plus `.0` when that has neither a `.` nor an exponent; `NaN`, `+Inf`, `-Inf`.
pub(crate) fn format_openmetrics_float(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    // `{:e}` yields the shortest round-trip digits as `d.ddde±x`; re-lay them out like Go.
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((scientific.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::with_capacity(digits.len() + 8);
    out.push_str(sign);
    // Go's shortest `%g` uses the exponent form for exponents below -4 or from 6 on (`1e+06`).
    if !(-4..6).contains(&exponent) {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if exponent < 0 { '-' } else { '+' });
        let magnitude = exponent.unsigned_abs();
        if magnitude < 10 {
            out.push('0');
        }
        out.push_str(&magnitude.to_string());
        return out;
    }
    let point = exponent + 1; // digits before the decimal point
    let digit_count = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    if point <= 0 {
        out.push_str("0.");
        for _ in 0..-point {
            out.push('0');
        }
        out.push_str(&digits);
    } else if point >= digit_count {
        out.push_str(&digits);
        for _ in 0..(point - digit_count) {
            out.push('0');
        }
        out.push_str(".0");
    } else {
        let (int_part, frac_part) = digits.split_at(usize::try_from(point).unwrap_or(0));
        out.push_str(int_part);
        out.push('.');
        out.push_str(frac_part);
    }
    out
}

#[cfg(test)]
mod tests;
