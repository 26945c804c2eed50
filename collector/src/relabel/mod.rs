//! Relabeling with Prometheus' `relabel_config` semantics, pure and synchronous.
//!
//! A user must be able to paste a relabel block from a Prometheus configuration (snake_case keys)
//! or a Prometheus Operator resource (`sourceLabels`, `targetLabel`) and get the same series.
//! What follows Prometheus (`model/relabel`) exactly:
//!
//! - Defaults: `separator: ";"`, `regex: "(.*)"`, `replacement: "$1"`, `action: replace`; the
//!   action name is case-insensitive. Regexes are fully anchored (`^(?:regex)$`).
//! - A missing label reads as the empty string, and setting a label to the empty string deletes it.
//! - `replace` does nothing when the regex does not match or the expanded target is not a valid
//!   label name; an empty result deletes the target. With an empty source value, the default
//!   regex and no `$` in `target_label` or `replacement`, the replacement is written as is.
//! - `$1`, `${1}`, `$name`, `${name}` and `$$` expand as Go's `regexp.Expand` does (a `$` that
//!   starts no valid reference stays a literal `$`; `$1x` names the group `1x`).
//! - `hashmod`: MD5 of the joined source values, its last 8 bytes as a big-endian u64, modulo
//!   `modulus`.
//! - `validate` rejects what Prometheus rejects when it loads a configuration.
//!
//! Deliberate differences: label names are checked with the classic rule `[a-zA-Z_][a-zA-Z0-9_]*`
//! (metricshard does not carry UTF-8 label names), and `labelmap` skips results that are not a
//! valid label name instead of writing them. Regexes use Rust's `regex` crate, whose syntax is
//! RE2's like Go's; `\d`, `\w`, `\s` and their negations are rewritten to Go's ASCII meaning.
//!
//! Samples: a sample's metric name takes part in relabeling as the label `__name__`, as in
//! Prometheus' `metric_relabel_configs`. Either put it there yourself before calling
//! [`relabel`] and take it out afterwards, or call [`relabel_sample`], which does both.

use std::sync::LazyLock;

use md5::{Digest, Md5};
use regex::{Captures, Regex};
use serde::Deserialize;

use crate::sample::{Labels, Sample, Text};

/// The label that holds a sample's metric name while it is relabeled.
pub const METRIC_NAME_LABEL: &str = "__name__";

const DEFAULT_SEPARATOR: &str = ";";
const DEFAULT_REGEX: &str = "(.*)";
const DEFAULT_REPLACEMENT: &str = "$1";

/// The compiled default regex, shared by every config that does not set one (a `Regex` clone
/// shares its program).
#[allow(clippy::expect_used)] // A constant pattern: it compiles or every test fails.
static DEFAULT_COMPILED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&anchored(DEFAULT_REGEX)).expect("the default relabel regex compiles"));

/// Why a relabel configuration is invalid.
#[derive(Debug, thiserror::Error)]
pub enum RelabelError {
    /// The regex does not compile.
    #[error("invalid relabel regex {pattern:?}: {source}")]
    InvalidRegex {
        /// The regex as configured (without the anchors).
        pattern: String,
        /// The compiler's complaint.
        #[source]
        source: Box<regex::Error>,
    },
    /// The action name is not one Prometheus knows.
    #[error("unknown relabel action {0:?}")]
    UnknownAction(String),
    /// `hashmod` without a non-zero `modulus`.
    #[error("relabel configuration for hashmod requires non-zero modulus")]
    MissingModulus,
    /// An action that writes a label has no `target_label`.
    #[error("relabel configuration for {action} action requires 'target_label' value")]
    MissingTargetLabel {
        /// The action.
        action: RelabelAction,
    },
    /// `target_label` is not a label name (or, for `replace`, a template of one).
    #[error("{target:?} is invalid 'target_label' for {action} action")]
    InvalidTargetLabel {
        /// The action.
        action: RelabelAction,
        /// The offending target label.
        target: String,
    },
    /// `labelmap`'s replacement is not a template of a label name.
    #[error("{replacement:?} is invalid 'replacement' for {action} action")]
    InvalidReplacement {
        /// The action.
        action: RelabelAction,
        /// The offending replacement.
        replacement: String,
    },
    /// `replacement` was set for an action that ignores it.
    #[error("'replacement' can not be set for {action} action")]
    ReplacementNotAllowed {
        /// The action.
        action: RelabelAction,
    },
    /// An action that takes only some fields got others as well.
    #[error("{action} action requires only {allowed}, and no other fields")]
    ExtraFields {
        /// The action.
        action: RelabelAction,
        /// The fields the action takes.
        allowed: &'static str,
    },
    /// A source label is not a valid label name.
    #[error("{0:?} is not a valid label name in 'source_labels'")]
    InvalidSourceLabel(String),
}

impl RelabelError {
    /// A short static name of the error's kind, for metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidRegex { .. } => "regex",
            Self::UnknownAction(_) => "action",
            Self::MissingModulus => "modulus",
            Self::MissingTargetLabel { .. } | Self::InvalidTargetLabel { .. } => "target_label",
            Self::InvalidReplacement { .. } | Self::ReplacementNotAllowed { .. } => "replacement",
            Self::ExtraFields { .. } => "extra_fields",
            Self::InvalidSourceLabel(_) => "source_labels",
        }
    }
}

/// What a relabel step does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RelabelAction {
    /// Writes the expanded `replacement` to the expanded `target_label` when the regex matches.
    #[default]
    Replace,
    /// Drops the label set unless the regex matches the joined source values.
    Keep,
    /// Drops the label set when the regex matches the joined source values.
    Drop,
    /// Drops the label set unless the joined source values equal `target_label`'s value.
    KeepEqual,
    /// Drops the label set when the joined source values equal `target_label`'s value.
    DropEqual,
    /// Writes the MD5 hash of the joined source values modulo `modulus` to `target_label`.
    HashMod,
    /// Copies every label whose name matches the regex to the name `replacement` expands to.
    LabelMap,
    /// Removes every label whose name matches the regex.
    LabelDrop,
    /// Removes every label whose name does not match the regex.
    LabelKeep,
    /// Writes the joined source values in lower case to `target_label`.
    Lowercase,
    /// Writes the joined source values in upper case to `target_label`.
    Uppercase,
}

impl RelabelAction {
    /// The action's name as written in configurations.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Replace => "replace",
            Self::Keep => "keep",
            Self::Drop => "drop",
            Self::KeepEqual => "keepequal",
            Self::DropEqual => "dropequal",
            Self::HashMod => "hashmod",
            Self::LabelMap => "labelmap",
            Self::LabelDrop => "labeldrop",
            Self::LabelKeep => "labelkeep",
            Self::Lowercase => "lowercase",
            Self::Uppercase => "uppercase",
        }
    }

    /// Parses an action name, case-insensitively as Prometheus does (`LabelMap` = `labelmap`).
    pub fn parse(name: &str) -> Result<Self, RelabelError> {
        let action = match name.to_ascii_lowercase().as_str() {
            "replace" => Self::Replace,
            "keep" => Self::Keep,
            "drop" => Self::Drop,
            "keepequal" => Self::KeepEqual,
            "dropequal" => Self::DropEqual,
            "hashmod" => Self::HashMod,
            "labelmap" => Self::LabelMap,
            "labeldrop" => Self::LabelDrop,
            "labelkeep" => Self::LabelKeep,
            "lowercase" => Self::Lowercase,
            "uppercase" => Self::Uppercase,
            _ => return Err(RelabelError::UnknownAction(name.to_owned())),
        };
        Ok(action)
    }
}

impl std::fmt::Display for RelabelAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RelabelAction {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// A relabel regex: the pattern as configured, compiled fully anchored (`^(?:pattern)$`).
#[derive(Clone, Debug)]
pub struct RelabelRegex {
    pattern: String,
    compiled: Regex,
}

impl RelabelRegex {
    /// Compiles a pattern with Prometheus' anchoring and Go's ASCII `\d`, `\w`, `\s`.
    pub fn new(pattern: &str) -> Result<Self, RelabelError> {
        let compiled = Regex::new(&anchored(&go_ascii_classes(pattern)))
            .map_err(|source| RelabelError::InvalidRegex { pattern: pattern.to_owned(), source: Box::new(source) })?;
        Ok(Self { pattern: pattern.to_owned(), compiled })
    }

    /// The pattern as configured, without the anchors.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// True when the whole text matches.
    pub fn is_match(&self, text: &str) -> bool {
        self.compiled.is_match(text)
    }

    fn is_default(&self) -> bool {
        self.pattern == DEFAULT_REGEX
    }
}

impl Default for RelabelRegex {
    fn default() -> Self {
        Self { pattern: DEFAULT_REGEX.to_owned(), compiled: DEFAULT_COMPILED.clone() }
    }
}

impl PartialEq for RelabelRegex {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl<'de> Deserialize<'de> for RelabelRegex {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pattern = String::deserialize(deserializer)?;
        Self::new(&pattern).map_err(serde::de::Error::custom)
    }
}

/// One relabel step, as Prometheus' `relabel_config`.
///
/// Deserializing validates (like Prometheus loading its configuration); a config built in code
/// should be checked with [`RelabelConfig::validate`].
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawRelabelConfig")]
pub struct RelabelConfig {
    /// Labels whose values are joined with `separator` to form the input of the step.
    pub source_labels: Vec<String>,
    /// Placed between the joined source values (default `;`).
    pub separator: String,
    /// The label the step writes to (a template with `$1` etc. for `replace`).
    pub target_label: Option<String>,
    /// Matched against the joined source values, or label names for the `label*` actions
    /// (default `(.*)`, always fully anchored).
    pub regex: RelabelRegex,
    /// The divisor of `hashmod`.
    pub modulus: Option<u64>,
    /// What `replace` writes and `labelmap` names, with `$1`-style references (default `$1`).
    pub replacement: String,
    /// What the step does (default `replace`).
    pub action: RelabelAction,
}

impl Default for RelabelConfig {
    fn default() -> Self {
        Self {
            source_labels: Vec::new(),
            separator: DEFAULT_SEPARATOR.to_owned(),
            target_label: None,
            regex: RelabelRegex::default(),
            modulus: None,
            replacement: DEFAULT_REPLACEMENT.to_owned(),
            action: RelabelAction::Replace,
        }
    }
}

/// The configuration as written, before defaults and validation. Accepts Prometheus' keys and
/// the Prometheus Operator's camelCase ones.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelabelConfig {
    #[serde(default, alias = "sourceLabels")]
    source_labels: Vec<String>,
    #[serde(default)]
    separator: Option<String>,
    #[serde(default, alias = "targetLabel")]
    target_label: Option<String>,
    #[serde(default)]
    regex: Option<RelabelRegex>,
    #[serde(default)]
    modulus: Option<u64>,
    #[serde(default)]
    replacement: Option<String>,
    #[serde(default)]
    action: Option<RelabelAction>,
}

impl TryFrom<RawRelabelConfig> for RelabelConfig {
    type Error = RelabelError;

    fn try_from(raw: RawRelabelConfig) -> Result<Self, Self::Error> {
        let defaults = Self::default();
        let config = Self {
            source_labels: raw.source_labels,
            separator: raw.separator.unwrap_or(defaults.separator),
            target_label: raw.target_label.filter(|target| !target.is_empty()),
            regex: raw.regex.unwrap_or(defaults.regex),
            modulus: raw.modulus.filter(|modulus| *modulus != 0),
            replacement: raw.replacement.unwrap_or(defaults.replacement),
            action: raw.action.unwrap_or(defaults.action),
        };
        config.validate()?;
        Ok(config)
    }
}

impl RelabelConfig {
    /// Checks the step as Prometheus does when it loads a configuration.
    pub fn validate(&self) -> Result<(), RelabelError> {
        use RelabelAction::{
            Drop, DropEqual, HashMod, Keep, KeepEqual, LabelDrop, LabelKeep, LabelMap, Lowercase, Replace, Uppercase,
        };
        let action = self.action;
        if let Some(name) = self.source_labels.iter().find(|name| !is_label_name(name)) {
            return Err(RelabelError::InvalidSourceLabel(name.clone()));
        }
        if action == HashMod && self.modulus.unwrap_or(0) == 0 {
            return Err(RelabelError::MissingModulus);
        }
        let target = self.target_label.as_deref().unwrap_or_default();
        let needs_target = matches!(action, Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual);
        if needs_target && target.is_empty() {
            return Err(RelabelError::MissingTargetLabel { action });
        }
        let target_ok = match action {
            Replace if target.contains('$') => is_label_name_template(target),
            Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual => is_label_name(target),
            Keep | Drop | LabelMap | LabelDrop | LabelKeep => true,
        };
        if !target_ok {
            return Err(RelabelError::InvalidTargetLabel { action, target: target.to_owned() });
        }
        let default_replacement = self.replacement == DEFAULT_REPLACEMENT;
        if matches!(action, Lowercase | Uppercase | KeepEqual | DropEqual) && !default_replacement {
            return Err(RelabelError::ReplacementNotAllowed { action });
        }
        if action == LabelMap && !is_label_name_template(&self.replacement) {
            return Err(RelabelError::InvalidReplacement { action, replacement: self.replacement.clone() });
        }
        let default_separator = self.separator == DEFAULT_SEPARATOR;
        let no_modulus = self.modulus.unwrap_or(0) == 0;
        if matches!(action, KeepEqual | DropEqual) && !(self.regex.is_default() && no_modulus && default_separator) {
            return Err(RelabelError::ExtraFields { action, allowed: "'source_labels' and 'target_label'" });
        }
        if matches!(action, LabelDrop | LabelKeep)
            && !(self.source_labels.is_empty()
                && self.target_label.is_none()
                && no_modulus
                && default_separator
                && default_replacement)
        {
            return Err(RelabelError::ExtraFields { action, allowed: "'regex'" });
        }
        Ok(())
    }

    /// Applies this step to `labels`; false means the label set is dropped.
    fn apply(&self, labels: &mut Labels) -> bool {
        match self.action {
            RelabelAction::Keep => return self.regex.is_match(&self.source_value(labels)),
            RelabelAction::Drop => return !self.regex.is_match(&self.source_value(labels)),
            RelabelAction::KeepEqual => return self.target_value(labels) == self.source_value(labels),
            RelabelAction::DropEqual => return self.target_value(labels) != self.source_value(labels),
            RelabelAction::Replace => self.replace(labels),
            RelabelAction::Lowercase => {
                let value = self.source_value(labels).to_lowercase();
                set_or_delete(labels, self.target(), value);
            }
            RelabelAction::Uppercase => {
                let value = self.source_value(labels).to_uppercase();
                set_or_delete(labels, self.target(), value);
            }
            RelabelAction::HashMod => {
                let value = hash_mod(&self.source_value(labels), self.modulus.unwrap_or(0));
                set_or_delete(labels, self.target(), value.to_string());
            }
            RelabelAction::LabelMap => {
                // Iterate over a snapshot so labels written by this step are not mapped again.
                let snapshot = labels.clone();
                for label in &snapshot {
                    if let Some(captures) = self.regex.compiled.captures(&label.name) {
                        let name = expand(&self.replacement, &captures, &self.regex.compiled);
                        if is_label_name(&name) {
                            set_or_delete(labels, &name, label.value.clone());
                        }
                    }
                }
            }
            RelabelAction::LabelDrop | RelabelAction::LabelKeep => {
                let keep_matching = self.action == RelabelAction::LabelKeep;
                labels.retain(|label| self.regex.is_match(&label.name) == keep_matching);
            }
        }
        true
    }

    fn replace(&self, labels: &mut Labels) {
        let value = self.source_value(labels);
        let target = self.target();
        // Prometheus' fast path: writes the replacement verbatim, even where the regex would
        // not have matched an empty value.
        if value.is_empty() && self.regex.is_default() && !target.contains('$') && !self.replacement.contains('$') {
            set_or_delete(labels, target, self.replacement.clone());
            return;
        }
        let Some(captures) = self.regex.compiled.captures(&value) else {
            return;
        };
        let target = expand(target, &captures, &self.regex.compiled);
        if !is_label_name(&target) {
            return;
        }
        let result = expand(&self.replacement, &captures, &self.regex.compiled);
        set_or_delete(labels, &target, result);
    }

    /// The source labels' values joined with the separator; a missing label counts as empty.
    fn source_value(&self, labels: &Labels) -> String {
        let mut value = String::new();
        for (index, name) in self.source_labels.iter().enumerate() {
            if index > 0 {
                value.push_str(&self.separator);
            }
            value.push_str(labels.get(name).unwrap_or_default());
        }
        value
    }

    fn target(&self) -> &str {
        self.target_label.as_deref().unwrap_or_default()
    }

    fn target_value<'l>(&self, labels: &'l Labels) -> &'l str {
        labels.get(self.target()).unwrap_or_default()
    }
}

/// Applies the steps in order. `None` means a step dropped the label set.
///
/// To relabel a sample, include its metric name as the label [`METRIC_NAME_LABEL`] (or use
/// [`relabel_sample`]).
pub fn relabel(labels: &Labels, configs: &[RelabelConfig]) -> Option<Labels> {
    let mut labels = labels.clone();
    configs.iter().all(|config| config.apply(&mut labels)).then_some(labels)
}

/// Checks the API's relabel rules (`spec...relabelConfigs` of a resource) and turns them into
/// configs; an error names the index of the rule and what is wrong with it.
pub fn configs_from_rules(rules: &[metricshard_crds::RelabelRule]) -> Result<Vec<RelabelConfig>, (usize, String)> {
    rules
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            // The collector's RelabelConfig reads the API's camelCase fields and validates them.
            let value = serde_json::to_value(rule).map_err(|e| (index, e.to_string()))?;
            serde_json::from_value::<RelabelConfig>(value).map_err(|e| (index, e.to_string()))
        })
        .collect()
}

/// Relabels a sample with its metric name as `__name__`, as Prometheus' `metric_relabel_configs`
/// do. `None` when a step drops it or the steps leave it without a name (which Prometheus
/// rejects as "missing metric name").
pub fn relabel_sample(sample: Sample, configs: &[RelabelConfig]) -> Option<Sample> {
    if configs.is_empty() {
        return Some(sample);
    }
    let Sample { name, mut labels, value, timestamp_ms } = sample;
    labels.set(METRIC_NAME_LABEL, name);
    if !configs.iter().all(|config| config.apply(&mut labels)) {
        return None;
    }
    let name = labels.remove(METRIC_NAME_LABEL).filter(|name| !name.is_empty())?;
    Some(Sample { name, labels, value, timestamp_ms })
}

/// Prometheus' hashmod: the last 8 bytes of the MD5 sum, big-endian, modulo `modulus`.
fn hash_mod(value: &str, modulus: u64) -> u64 {
    let sum = Md5::digest(value.as_bytes());
    let mut tail = [0u8; 8];
    tail.copy_from_slice(&sum[8..16]);
    u64::from_be_bytes(tail).checked_rem(modulus).unwrap_or(0)
}

/// Labels::set with Prometheus' rule that an empty value deletes the label.
fn set_or_delete(labels: &mut Labels, name: &str, value: impl Into<Text>) {
    let value = value.into();
    if value.is_empty() {
        labels.remove(name);
    } else {
        labels.set(name, value);
    }
}

fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

/// Rewrites `\d`, `\w`, `\s` and their negations to Go's ASCII classes; the `regex` crate
/// would otherwise match Unicode digits, letters and spaces. Nested classes make the
/// replacement valid inside `[...]` too.
fn go_ascii_classes(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(ch) = chars.next() {
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str("[0-9]"),
            Some('D') => out.push_str("[^0-9]"),
            Some('w') => out.push_str("[0-9A-Za-z_]"),
            Some('W') => out.push_str("[^0-9A-Za-z_]"),
            Some('s') => out.push_str(r"[\t\n\f\r\x20]"),
            Some('S') => out.push_str(r"[^\t\n\f\r\x20]"),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// The classic label name rule `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Prometheus' check of templated label names, `^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$`:
/// word characters and `$name`/`${name}` references, starting with a letter, `_` or a reference.
fn is_label_name_template(template: &str) -> bool {
    let bytes = template.as_bytes();
    let mut i = 0;
    let mut first = true;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'$' {
            let braced = bytes.get(i + 1) == Some(&b'{');
            let start = i + 1 + usize::from(braced);
            let end = start + bytes[start.min(bytes.len())..].iter().take_while(|&&b| is_word_byte(b)).count();
            if end == start {
                return false;
            }
            i = end;
            if braced {
                if bytes.get(i) != Some(&b'}') {
                    return false;
                }
                i += 1;
            }
        } else if (first && (b.is_ascii_alphabetic() || b == b'_')) || (!first && is_word_byte(b)) {
            i += 1;
        } else {
            return false;
        }
        first = false;
    }
    !first
}

/// Go's `regexp.Expand`: `$$` is `$`; `$name`/`${name}` is a group by number or name (empty
/// when absent or not matched); a `$` that starts no valid reference stays literal.
fn expand(template: &str, captures: &Captures<'_>, regex: &Regex) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        rest = &rest[dollar + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let Some((name, after)) = reference_name(rest) else {
            out.push('$');
            continue;
        };
        rest = after;
        let group = match group_number(name) {
            Some(number) => captures.get(number),
            // Only a name the regex defines is looked up (the crate has no duplicate names).
            None => regex.capture_names().flatten().any(|n| n == name).then(|| captures.name(name)).flatten(),
        };
        if let Some(group) = group {
            out.push_str(group.as_str());
        }
    }
    out.push_str(rest);
    out
}

/// Splits a reference name (`name` or `{name}`, letters, digits and `_`) off the text after `$`.
fn reference_name(text: &str) -> Option<(&str, &str)> {
    let (braced, body) = match text.strip_prefix('{') {
        Some(body) => (true, body),
        None => (false, text),
    };
    let end = body.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(body.len());
    if end == 0 {
        return None;
    }
    let (name, after) = body.split_at(end);
    if braced {
        let after = after.strip_prefix('}')?;
        return Some((name, after));
    }
    Some((name, after))
}

/// A group number as Go reads one: ASCII digits, no leading zero, below 10^8.
fn group_number(name: &str) -> Option<usize> {
    if (name.len() > 1 && name.starts_with('0')) || name.len() > 8 {
        return None;
    }
    if !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

#[cfg(test)]
mod tests;
