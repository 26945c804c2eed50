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

use crate::sample::Labels;

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
    pub name: String,
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
        let mut labels = Labels::default();
        if dialect == Dialect::Text {
            self.skip_blanks();
        }
        if self.peek() == Some(b'{') {
            self.pos += 1;
            self.label_set(dialect, Some(&mut labels))?;
        }
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
        self.samples.push(ParsedSample { name: name.to_owned(), labels, value: canonical_nan(value), timestamp_ms });
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
        self.label_set(Dialect::OpenMetrics, None)?;
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

    /// A label set after its `{`, up to and including its `}`. With `out` absent (exemplars)
    /// the labels are only validated.
    fn label_set(&mut self, dialect: Dialect, mut out: Option<&mut Labels>) -> Result<(), ParseError> {
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
            if let Some(labels) = out.as_deref_mut() {
                if name == "__name__" || labels.get(name).is_some() {
                    return Err(ParseError::DuplicateLabel { line, name: name.to_owned() });
                }
                let value = match (self.family, name) {
                    (FamilyKind::Histogram, "le") | (FamilyKind::Summary, "quantile") => normalize_float_label(value),
                    _ => value.into_owned(),
                };
                labels.set(name.to_owned(), value);
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

    /// A quoted label value at the cursor, unescaped. Borrows from the body unless it holds an
    /// escape, so the common case costs one copy when it is stored.
    fn label_value(&mut self, name: &str, allow_newline: bool) -> Result<Cow<'a, str>, ParseError> {
        let start_line = self.line;
        let start = self.pos + 1;
        let mut owned: Option<String> = None;
        let mut segment_start = start;
        let mut i = start;
        loop {
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
mod tests {
    use super::*;
    use crate::sample::STALE_NAN_BITS;
    use proptest::prelude::*;

    fn text(body: &str) -> Vec<ParsedSample> {
        parse(body, ExpositionFormat::PrometheusText).expect("valid text body")
    }

    fn om(body: &str) -> Vec<ParsedSample> {
        parse(body, ExpositionFormat::OpenMetrics).expect("valid OpenMetrics body")
    }

    fn text_err(body: &str) -> ParseError {
        parse(body, ExpositionFormat::PrometheusText).expect_err("invalid text body")
    }

    fn om_err(body: &str) -> ParseError {
        parse(body, ExpositionFormat::OpenMetrics).expect_err("invalid OpenMetrics body")
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    fn sample(name: &str, pairs: &[(&str, &str)], value: f64, timestamp_ms: Option<i64>) -> ParsedSample {
        ParsedSample { name: name.to_owned(), labels: labels(pairs), value, timestamp_ms }
    }

    // ---- content negotiation ----

    #[test]
    fn content_type_selects_the_parser() {
        use ExpositionFormat::{OpenMetrics, PrometheusText};
        assert_eq!(format_from_content_type(None), PrometheusText);
        assert_eq!(format_from_content_type(Some("text/plain; version=0.0.4; charset=utf-8")), PrometheusText);
        assert_eq!(
            format_from_content_type(Some("application/openmetrics-text; version=1.0.0; charset=utf-8")),
            OpenMetrics
        );
        assert_eq!(format_from_content_type(Some(" Application/OpenMetrics-Text ")), OpenMetrics);
        assert_eq!(format_from_content_type(Some("application/json")), PrometheusText);
        assert_eq!(format_from_content_type(Some("")), PrometheusText);
    }

    #[test]
    fn accept_header_prefers_openmetrics_then_text() {
        let openmetrics = ACCEPT_HEADER.find("application/openmetrics-text;version=1.0.0").expect("om offered");
        let text = ACCEPT_HEADER.find("text/plain;version=0.0.4").expect("text offered");
        assert!(openmetrics < text);
        assert!(ACCEPT_HEADER.ends_with("*/*;q=0.4"));
    }

    // ---- text format: accepted input ----

    #[test]
    fn text_parses_samples_and_skips_metadata() {
        let body = "# HELP http_requests_total The total number of HTTP requests.\n\
                    # TYPE http_requests_total counter\n\
                    http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n\
                    http_requests_total{method=\"post\",code=\"400\"}    3 1395066363000\n\
                    \n\
                    metric_without_timestamp_and_labels 12.47\n";
        assert_eq!(
            text(body),
            vec![
                sample("http_requests_total", &[("method", "post"), ("code", "200")], 1027.0, Some(1_395_066_363_000)),
                sample("http_requests_total", &[("method", "post"), ("code", "400")], 3.0, Some(1_395_066_363_000)),
                sample("metric_without_timestamp_and_labels", &[], 12.47, None),
            ]
        );
    }

    #[test]
    fn text_metric_names_allow_colons_and_underscores() {
        let samples = text("job:rate_5m:sum 1\n_private 2\n:colon_first 3\n");
        let names: Vec<&str> = samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["job:rate_5m:sum", "_private", ":colon_first"]);
    }

    #[test]
    fn text_label_value_escapes() {
        let samples = text(
            r#"msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9"#,
        );
        assert_eq!(
            samples[0].labels,
            labels(&[("path", r"C:\DIR\FILE.TXT"), ("error", "Cannot find file:\n\"FILE.TXT\"")])
        );
        assert_eq!(samples[0].value, 1.458_255_915e9);
    }

    #[test]
    fn text_unknown_escape_is_kept_as_prometheus_does() {
        assert_eq!(text(r#"a{b="x\qy\\"} 1"#)[0].labels.get("b"), Some(r"x\qy\"));
    }

    #[test]
    fn text_label_sets_allow_blanks_trailing_and_missing_commas() {
        let expected = labels(&[("a", "1"), ("b", "2")]);
        for body in [
            "m{a=\"1\",b=\"2\",} 1\n",
            "m { a = \"1\" , b = \"2\" } 1\n",
            "m{a=\"1\" b=\"2\"} 1\n",
            "\t m{a=\"1\",b=\"2\"}\t1\t\n",
        ] {
            assert_eq!(text(body)[0].labels, expected, "{body:?}");
        }
        assert!(text("m{} 1\n")[0].labels.is_empty());
    }

    #[test]
    fn text_values_parse_like_go() {
        let cases = [
            ("1", 1.0),
            ("-1.5E-3", -0.0015),
            ("1e3", 1000.0),
            ("+3", 3.0),
            (".5", 0.5),
            ("5.", 5.0),
            ("1e-400", 0.0),
            ("+Inf", f64::INFINITY),
            ("Inf", f64::INFINITY),
            ("-Inf", f64::NEG_INFINITY),
            ("infinity", f64::INFINITY),
            ("-INFINITY", f64::NEG_INFINITY),
        ];
        for (literal, expected) in cases {
            assert_eq!(text(&format!("m {literal}\n"))[0].value, expected, "{literal}");
        }
        for literal in ["NaN", "nan", "NAN"] {
            let value = text(&format!("m {literal}\n"))[0].value;
            assert_eq!(value.to_bits(), NORMAL_NAN_BITS, "{literal}");
            assert_ne!(value.to_bits(), STALE_NAN_BITS);
        }
    }

    #[test]
    fn text_values_rejected_like_prometheus() {
        for literal in
            ["0x1p3", "0x10", "1_000", "+NaN", "-nan", "1e400", "-1e400", "abc", "1.2.3", "1e", ".", "infinit", "1,5"]
        {
            let err = text_err(&format!("m {literal}\n"));
            assert!(
                matches!(&err, ParseError::InvalidValue { line: 1, value } if value == literal),
                "{literal}: {err}"
            );
        }
    }

    #[test]
    fn text_timestamps_are_integer_milliseconds() {
        assert_eq!(text("m 1 1700000000123\n")[0].timestamp_ms, Some(1_700_000_000_123));
        assert_eq!(text("m 1 0  \n")[0].timestamp_ms, Some(0));
        assert_eq!(text("m 1 9223372036854775807")[0].timestamp_ms, Some(i64::MAX));
        for timestamp in ["-5", "1.5", "9223372036854775808", "12ab", "+5", "{"] {
            let err = text_err(&format!("m 1 {timestamp}\n"));
            assert!(
                matches!(&err, ParseError::InvalidTimestamp { line: 1, timestamp: t } if t == timestamp),
                "{timestamp}: {err}"
            );
        }
    }

    #[test]
    fn text_blank_lines_whitespace_lines_crlf_and_missing_final_newline() {
        let body = "\n   \n\t\r\n# TYPE a gauge\r\na{x=\"1\"} 1 5\r\n\r\nb 2\r\nc 3";
        assert_eq!(
            text(body),
            vec![sample("a", &[("x", "1")], 1.0, Some(5)), sample("b", &[], 2.0, None), sample("c", &[], 3.0, None)]
        );
        assert!(text("").is_empty());
        assert!(text("\n\n# just a comment").is_empty());
    }

    #[test]
    fn text_comments_are_skipped_and_metadata_validated_loosely() {
        let body = "# a free comment\n\
                    #no blank after the hash, still a comment\n\
                    # HELPless words\n\
                    # HELP m\n\
                    # HELP m help with \\n escapes and \"quotes\"\n\
                    #  TYPE \t m\tcounter\n\
                    # TYPE m untyped\n\
                    # TYPE m summary\n\
                    # TYPE m histogram\n\
                    # TYPE m gauge\n\
                    m 1\n";
        assert_eq!(text(body).len(), 1);
    }

    #[test]
    fn text_raw_newline_in_label_value_is_accepted_and_lines_keep_counting() {
        let samples = text("a{x=\"one\ntwo\"} 1\nb 2\n");
        assert_eq!(samples[0].labels.get("x"), Some("one\ntwo"));
        let err = text_err("a{x=\"one\ntwo\"} 1\nb 2\n$ 3\n");
        assert_eq!(err.line(), 4, "{err}");
    }

    #[test]
    fn histogram_le_and_summary_quantile_are_normalized_like_prometheus_3() {
        let body = "# TYPE h histogram\n\
                    h_bucket{le=\"1\"} 1\n\
                    h_bucket{le=\"0.25\"} 1\n\
                    h_bucket{le=\"1e6\"} 1\n\
                    h_bucket{le=\"+Inf\"} 1\n\
                    h_bucket{le=\"not-a-number\"} 1\n\
                    # TYPE s summary\n\
                    s{quantile=\"1\"} 1\n\
                    s{le=\"1\"} 1\n\
                    # TYPE g gauge\n\
                    g{le=\"1\"} 1\n";
        let values: Vec<String> =
            text(body).iter().map(|s| s.labels.iter().map(|l| l.value.clone()).collect::<Vec<_>>().join(",")).collect();
        assert_eq!(values, ["1.0", "0.25", "1e+06", "+Inf", "not-a-number", "1.0", "1", "1"]);
    }

    #[test]
    fn openmetrics_float_format_matches_go() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (100_000.0, "100000.0"),
            (1e6, "1e+06"),
            (1_234_567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.25, "0.25"),
            (-2.5, "-2.5"),
            (1e100, "1e+100"),
            (5e-324, "5e-324"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (value, expected) in cases {
            assert_eq!(format_openmetrics_float(value), expected, "{value}");
        }
    }

    // ---- text format: malformed input, each with its line and reason ----

    #[test]
    fn text_malformed_inputs_report_line_and_reason() {
        let prefix = "ok 1\n# HELP ok fine\n";
        let cases: &[(&str, &str)] = &[
            ("{a=\"b\"} 1", "metric_name"),
            ("1abc 1", "metric_name"),
            ("m{1a=\"b\"} 1", "label_syntax"),
            ("m{a=\"b\",,c=\"d\"} 1", "label_syntax"),
            ("m{,} 1", "label_syntax"),
            ("m{a} 1", "label_syntax"),
            ("m{a=b} 1", "label_value"),
            ("m{a=\"b} 1", "label_value"),
            ("m{a=\"b\\", "label_value"),
            ("m{a=\"b\",a=\"c\"} 1", "duplicate_label"),
            ("m{__name__=\"x\"} 1", "duplicate_label"),
            ("m", "value"),
            ("m{a=\"b\"}", "value"),
            ("m{a=\"b\"} ", "value"),
            ("m one", "value"),
            ("m 1 2 3", "trailing_data"),
            ("m 1 2 x", "trailing_data"),
            ("m 1 x", "timestamp"),
            ("# HELP 1bad text", "metadata"),
            ("# TYPE m", "metadata"),
            ("# TYPE m bogus", "metadata"),
            ("# TYPE m  counter", "metadata"),
            ("# TYPE m gaugehistogram", "metadata"),
        ];
        for (line, category) in cases {
            let err = text_err(&format!("{prefix}{line}\nafter 1\n"));
            assert_eq!((err.line(), err.category()), (3, *category), "{line:?}: {err}");
        }
    }

    #[test]
    fn text_error_messages_say_what_is_wrong() {
        assert_eq!(text_err("a 1\nb 1\nm{a=\"b\",a=\"c\"} 1\n").to_string(), "line 3: duplicate label name \"a\"");
        assert_eq!(text_err("m{a=\"b\"} x1").to_string(), "line 1: invalid sample value \"x1\"");
        assert_eq!(
            text_err("\n\nm{a=b} 1").to_string(),
            "line 3: expected a quoted value for label \"a\", found \"b}\""
        );
        assert_eq!(
            text_err("m{a=\"b\\\n\"} 1").to_string(),
            "line 1: invalid label value escape at the end of the line in label \"a\""
        );
        assert_eq!(text_err("# TYPE m bogus").to_string(), "line 1: invalid metric type \"bogus\"");
    }

    #[test]
    fn long_excerpts_in_errors_are_cut() {
        let long = "x".repeat(10_000);
        let message = text_err(&format!("m {long}")).to_string();
        assert!(message.len() < 100, "{message}");
    }

    // ---- OpenMetrics ----

    #[test]
    fn openmetrics_parses_samples_metadata_exemplars_and_eof() {
        let body = "# HELP foo Counter with an exemplar.\n\
                    # TYPE foo counter\n\
                    # UNIT foo_seconds seconds\n\
                    foo_total 17.0 1520879607.789 # {id=\"counter-test\"} 5\n\
                    foo_created 1520872607.123\n\
                    # TYPE bar histogram\n\
                    bar_bucket{le=\"0.01\"} 0 # {} 1 1520879607.1\n\
                    bar_bucket{le=\"+Inf\",} 17 # {trace_id=\"KOO5S4vxi0o\",id=\"x\"} 0.67\n\
                    # TYPE info_thing info\n\
                    info_thing_info{version=\"1\"} 1\n\
                    # EOF\n";
        let samples = om(body);
        assert_eq!(samples.len(), 5);
        assert_eq!(samples[0], sample("foo_total", &[], 17.0, Some(seconds_to_ms(1_520_879_607.789))));
        assert_eq!(samples[1].timestamp_ms, None);
        assert_eq!(samples[2].labels, labels(&[("le", "0.01")]));
        assert_eq!(samples[3].labels, labels(&[("le", "+Inf")]));
        assert_eq!(samples[4].name, "info_thing_info");
    }

    #[test]
    fn openmetrics_timestamps_are_float_seconds() {
        assert_eq!(om("m 1 1.5\n# EOF\n")[0].timestamp_ms, Some(1500));
        assert_eq!(om("m 1 -1.25\n# EOF")[0].timestamp_ms, Some(-1250));
        assert_eq!(om("m 1 1e3\n# EOF")[0].timestamp_ms, Some(1_000_000));
        for timestamp in ["NaN", "+Inf", "x", "1_0"] {
            let err = om_err(&format!("m 1 {timestamp}\n# EOF\n"));
            assert_eq!((err.line(), err.category()), (1, "timestamp"), "{timestamp}: {err}");
        }
    }

    #[test]
    fn openmetrics_eof_rules() {
        assert!(om("# EOF").is_empty());
        assert!(om("# EOF\r\n").is_empty());
        assert_eq!(om_err(""), ParseError::MissingEof { line: 1 });
        assert_eq!(om_err("a 1\nb 2\n"), ParseError::MissingEof { line: 3 });
        assert_eq!(om_err("a 1\nb 2"), ParseError::MissingEof { line: 2 });
        assert_eq!(om_err("a 1\n# EOF\nb 2\n"), ParseError::DataAfterEof { line: 2 });
        assert_eq!(om_err("# EOF\n\n"), ParseError::DataAfterEof { line: 1 });
        assert_eq!(om_err("# EOF trailing"), ParseError::DataAfterEof { line: 1 });
    }

    #[test]
    fn openmetrics_crlf_is_tolerated() {
        assert_eq!(
            om("# TYPE a gauge\r\na{x=\"1\"} 1 2\r\n# EOF\r\n"),
            vec![sample("a", &[("x", "1")], 1.0, Some(2000))]
        );
    }

    #[test]
    fn openmetrics_malformed_inputs_report_line_and_reason() {
        let prefix = "# TYPE ok gauge\nok 1\n";
        let cases: &[(&str, &str)] = &[
            ("", "line_syntax"),
            ("# free comment", "line_syntax"),
            ("#HELP m x", "line_syntax"),
            ("# HELP m", "metadata"),
            ("# HELP  m x", "metadata"),
            ("# TYPE m untyped", "metadata"),
            ("# UNIT m_seconds bytes", "metadata"),
            ("# UNIT seconds seconds", "metadata"),
            (" m 1", "metric_name"),
            ("m  1", "value"),
            ("m\t1", "value"),
            ("m", "value"),
            ("m{a=\"1\"}  1", "value"),
            ("m{ a=\"1\"} 1", "label_syntax"),
            ("m{a=\"1\" } 1", "label_syntax"),
            ("m{a=\"1\"b=\"2\"} 1", "label_syntax"),
            ("m{a =\"1\"} 1", "label_syntax"),
            ("m{a= \"1\"} 1", "label_value"),
            ("m{a=\"1\",a=\"2\"} 1", "duplicate_label"),
            ("m 1 2 3", "trailing_data"),
            ("m 1 ", "timestamp"),
            ("m 1 # {a=\"b\"}", "exemplar"),
            ("m 1 # {a=\"b\"} x", "exemplar"),
            ("m 1 # {a=\"b\"} 1 NaN", "exemplar"),
            ("m 1 # {a=\"b\"} 1 2 3", "trailing_data"),
            ("m 1 # {a=b} 1", "label_value"),
            ("m 1 #", "timestamp"),
        ];
        for (line, category) in cases {
            let err = om_err(&format!("{prefix}{line}\n# EOF\n"));
            assert_eq!((err.line(), err.category()), (3, *category), "{line:?}: {err}");
        }
    }

    #[test]
    fn openmetrics_label_value_may_not_hold_a_raw_newline() {
        let err = om_err("m{a=\"x\ny\"} 1\n# EOF\n");
        assert_eq!(err, ParseError::UnterminatedLabelValue { line: 1, name: "a".to_owned() });
    }

    #[test]
    fn openmetrics_counters_keep_total_and_units_may_be_empty() {
        let samples = om("# TYPE c counter\n# UNIT c \n# HELP c \nc_total 1\n# EOF\n");
        assert_eq!(samples[0].name, "c_total");
    }

    // ---- properties ----

    /// A label value drawn from characters that exercise the escapes.
    fn label_value_strategy() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-zA-Z0-9 _\\\\\"\n{}=,#.é☃]{0,12}").expect("valid regex")
    }

    fn sample_strategy() -> impl Strategy<Value = ParsedSample> {
        (
            "[a-zA-Z_:][a-zA-Z0-9_:]{0,15}",
            proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,8}", label_value_strategy(), 0..6),
            prop_oneof![
                any::<f64>().prop_filter("finite", |v| v.is_finite()),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY)
            ],
            proptest::option::of(0i64..4_000_000_000_000),
        )
            .prop_map(|(name, pairs, value, timestamp_ms)| ParsedSample {
                name,
                labels: Labels::from_pairs(pairs.into_iter().filter(|(n, _)| n != "__name__")),
                value,
                timestamp_ms,
            })
    }

    fn render(samples: &[ParsedSample], format: ExpositionFormat) -> String {
        let mut body = String::new();
        for sample in samples {
            body.push_str(&sample.name);
            body.push('{');
            for label in &sample.labels {
                body.push_str(&label.name);
                body.push_str("=\"");
                crate::sample::write_escaped_label_value(&mut body, &label.value).expect("string write");
                body.push_str("\",");
            }
            body.push_str("} ");
            body.push_str(&format!("{:?}", sample.value).replace("inf", "Inf"));
            match (sample.timestamp_ms, format) {
                (Some(ms), ExpositionFormat::PrometheusText) => body.push_str(&format!(" {ms}")),
                (Some(ms), ExpositionFormat::OpenMetrics) => {
                    body.push_str(&format!(" {}.{:03}", ms / 1000, ms % 1000));
                }
                (None, _) => {}
            }
            body.push('\n');
        }
        if format == ExpositionFormat::OpenMetrics {
            body.push_str("# EOF\n");
        }
        body
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(body in any::<String>()) {
            let _ = parse(&body, ExpositionFormat::PrometheusText);
            let _ = parse(&body, ExpositionFormat::OpenMetrics);
        }

        #[test]
        fn exposition_like_strings_never_panic(body in "[a-z_:{}=\",# \t\r\n\\\\0-9.eE+\\-é]{0,200}") {
            for format in [ExpositionFormat::PrometheusText, ExpositionFormat::OpenMetrics] {
                if let Err(err) = parse(&body, format) {
                    // The reported line exists in the body (or is the one after its last newline).
                    prop_assert!(err.line() >= 1 && err.line() <= body.matches('\n').count() + 1);
                }
            }
        }

        #[test]
        fn rendered_samples_round_trip(samples in proptest::collection::vec(sample_strategy(), 0..8)) {
            for format in [ExpositionFormat::PrometheusText, ExpositionFormat::OpenMetrics] {
                let body = render(&samples, format);
                let parsed = parse(&body, format).map_err(|e| TestCaseError::fail(format!("{e}\n{body}")))?;
                let mut expected = samples.clone();
                if format == ExpositionFormat::OpenMetrics {
                    // Seconds become milliseconds by truncation, exactly as Prometheus does
                    // (`int64(ts * 1000)`), so `x.218` may come back as `x217`.
                    for sample in &mut expected {
                        sample.timestamp_ms = sample.timestamp_ms.map(|ms| {
                            let seconds: f64 = format!("{}.{:03}", ms / 1000, ms % 1000).parse().expect("float");
                            seconds_to_ms(seconds)
                        });
                    }
                }
                prop_assert_eq!(&parsed, &expected);
            }
        }

        #[test]
        fn mutated_valid_bodies_never_panic(
            samples in proptest::collection::vec(sample_strategy(), 1..6),
            mutations in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, prop::sample::select(vec!['"', '\\', '{', '}', ',', '=', ' ', '\n', '\r', '#', 'e', '.', '-', 'é', '\0'])), 1..6),
        ) {
            for format in [ExpositionFormat::PrometheusText, ExpositionFormat::OpenMetrics] {
                let mut chars: Vec<char> = render(&samples, format).chars().collect();
                for (index, op, ch) in &mutations {
                    let at = index.index(chars.len() + 1);
                    match op {
                        0 => chars.insert(at, *ch),
                        1 if at < chars.len() => { chars.remove(at); }
                        _ if at < chars.len() => chars[at] = *ch,
                        _ => chars.push(*ch),
                    }
                }
                let body: String = chars.into_iter().collect();
                if let Ok(parsed) = parse(&body, format) {
                    prop_assert!(parsed.len() <= body.matches('\n').count() + 1);
                }
            }
        }

        #[test]
        fn a_bad_line_is_reported_at_its_line(
            samples in proptest::collection::vec(sample_strategy(), 0..6),
            at in any::<prop::sample::Index>(),
            bad in prop::sample::select(vec!["9bad 1", "m{a=\"1\",a=\"2\"} 1", "m{a=1} 1", "m 1 2 3", "m NaNa"]),
        ) {
            for format in [ExpositionFormat::PrometheusText, ExpositionFormat::OpenMetrics] {
                let body = render(&samples, format);
                let mut lines: Vec<&str> = body.lines().collect();
                let at = at.index(samples.len() + 1);
                lines.insert(at, bad);
                let body = lines.join("\n");
                let err = parse(&body, format).err();
                prop_assert_eq!(err.map(|e| e.line()), Some(at + 1));
            }
        }

        #[test]
        fn openmetrics_float_format_round_trips(value in any::<f64>()) {
            let formatted = format_openmetrics_float(value);
            let parsed = parse_go_float(&formatted).or_else(|| (formatted == "+Inf").then_some(f64::INFINITY));
            match parsed {
                Some(back) if value.is_nan() => prop_assert!(back.is_nan()),
                Some(back) => prop_assert_eq!(back.to_bits(), value.to_bits(), "{}", formatted),
                None => prop_assert!(false, "unparsable {}", formatted),
            }
        }
    }
}
