//! Open-Falcon agent JSON (what its transfer accepts on `/api/push`) → samples.
//!
//! ```json
//! [{"endpoint":"host01","metric":"cpu.idle","timestamp":1700000000,"step":60,
//!   "value":97.5,"counterType":"GAUGE","tags":"core=0,mode=idle"}]
//! ```
//!
//! As the transfer validates: `endpoint` and `metric` are non-empty, `counterType` is `GAUGE`,
//! `COUNTER` or `DERIVE`, `step` is a positive integer, `value` is a number or a string holding
//! one (finite), `tags` is empty or `k=v` pairs separated by commas. A `timestamp` of 0 or less
//! means "now", as the transfer reads it; otherwise it is in seconds.
//!
//! Mapping: name = `metric` (kept as sent, dots included); labels = the tags plus
//! `endpoint=<endpoint>`, which wins over a tag of that name. `step` and `counterType` are
//! checked but not carried: a sample has no type, and a `COUNTER` is delivered as the raw value
//! (compute rates downstream, as with Prometheus counters).
//!
//! Unlike the transfer, which skips invalid items and counts them, a body is accepted whole or
//! refused whole, with the first invalid item's index and reason.

use serde::Deserialize;

use crate::sample::{Labels, Sample};

/// The label the `endpoint` of an item becomes.
pub const ENDPOINT_LABEL: &str = "endpoint";

/// Why a Falcon push body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FalconParseError {
    /// Not a JSON array of objects with the expected fields.
    #[error("body is not a JSON array of Open-Falcon metric items: {0}")]
    NotJson(String),
    /// One item is invalid; nothing was accepted.
    #[error("item {index}: {reason}")]
    InvalidItem {
        /// Index of the item in the array.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetricItem {
    endpoint: String,
    metric: String,
    #[serde(default)]
    timestamp: i64,
    step: i64,
    value: serde_json::Value,
    counter_type: String,
    #[serde(default)]
    tags: String,
}

/// Parses a push body; items with a timestamp of 0 or less get `now_ms`.
pub fn parse_falcon(body: &[u8], now_ms: i64) -> Result<Vec<Sample>, FalconParseError> {
    let items: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|e| FalconParseError::NotJson(e.to_string()))?;
    items
        .iter()
        .enumerate()
        .map(|(index, item)| to_sample(item, now_ms).map_err(|reason| FalconParseError::InvalidItem { index, reason }))
        .collect()
}

fn to_sample(item: &serde_json::Value, now_ms: i64) -> Result<Sample, String> {
    let item = MetricItem::deserialize(item).map_err(|e| e.to_string())?;
    if item.endpoint.is_empty() {
        return Err("endpoint is empty".to_owned());
    }
    if item.metric.is_empty() {
        return Err("metric is empty".to_owned());
    }
    if !matches!(item.counter_type.as_str(), "GAUGE" | "COUNTER" | "DERIVE") {
        return Err(format!("counterType {:?} is not GAUGE, COUNTER or DERIVE", item.counter_type));
    }
    if item.step <= 0 {
        return Err(format!("step {} is not positive", item.step));
    }
    let value = match &item.value {
        serde_json::Value::Number(number) => number.as_f64(),
        serde_json::Value::String(text) => {
            let numeric = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
            numeric.then(|| text.parse::<f64>().ok()).flatten()
        }
        _ => None,
    }
    .filter(|value| value.is_finite())
    .ok_or_else(|| format!("value {} is not a finite number", item.value))?;
    let timestamp_ms = if item.timestamp <= 0 {
        now_ms
    } else {
        item.timestamp.checked_mul(1_000).ok_or_else(|| format!("timestamp {} out of range", item.timestamp))?
    };
    let mut labels = parse_tags(&item.tags)?;
    labels.set(ENDPOINT_LABEL, item.endpoint);
    Ok(Sample::new(item.metric, labels, value, timestamp_ms))
}

/// Parses `k=v,k2=v2` (empty: no tags).
pub fn parse_tags(tags: &str) -> Result<Labels, String> {
    let mut labels = Labels::default();
    if tags.trim().is_empty() {
        return Ok(labels);
    }
    for pair in tags.split(',') {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("tag {pair:?} is not k=v"));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || value.is_empty() {
            return Err(format!("tag {pair:?} has an empty key or value"));
        }
        if labels.get(key).is_some() {
            return Err(format!("duplicate tag {key:?}"));
        }
        labels.set(key, value);
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_700_000_123_000;

    #[test]
    fn reads_agent_items() {
        let body = br#"[{"endpoint":"host01","metric":"cpu.idle","timestamp":1700000000,"step":60,"value":97.5,"counterType":"GAUGE","tags":"core=0, mode=idle"},
                        {"endpoint":"host02","metric":"net.if.in.bytes","timestamp":0,"step":60,"value":"12","counterType":"COUNTER","tags":"endpoint=spoof"}]"#;
        assert_eq!(
            parse_falcon(body, NOW).unwrap(),
            vec![
                Sample::new("cpu.idle", Labels::from_pairs([("core", "0"), ("mode", "idle"), ("endpoint", "host01")]), 97.5, 1_700_000_000_000),
                Sample::new("net.if.in.bytes", Labels::from_pairs([("endpoint", "host02")]), 12.0, NOW),
            ]
        );
    }

    #[test]
    fn invalid_items_are_named_by_index_and_reason() {
        let item = |patch: &str| {
            let mut value: serde_json::Value = serde_json::from_str(
                r#"{"endpoint":"h","metric":"m","timestamp":1,"step":60,"value":1,"counterType":"GAUGE","tags":""}"#,
            )
            .unwrap();
            let patch: serde_json::Value = serde_json::from_str(patch).unwrap();
            for (key, field) in patch.as_object().unwrap() {
                value[key] = field.clone();
            }
            format!("[{value},{value}]").into_bytes()
        };
        let reason = |patch: &str| parse_falcon(&item(patch), NOW).unwrap_err().to_string();
        assert_eq!(reason(r#"{"endpoint":""}"#), "item 0: endpoint is empty");
        assert_eq!(reason(r#"{"counterType":"RATE"}"#), "item 0: counterType \"RATE\" is not GAUGE, COUNTER or DERIVE");
        assert_eq!(reason(r#"{"step":0}"#), "item 0: step 0 is not positive");
        assert_eq!(reason(r#"{"value":"abc"}"#), "item 0: value \"abc\" is not a finite number");
        assert_eq!(reason(r#"{"tags":"a=1,b"}"#), "item 0: tag \"b\" is not k=v");
        assert!(reason(r#"{"metric":5}"#).starts_with("item 0: invalid type: integer `5`, expected a string"));
        assert!(matches!(parse_falcon(b"{}", NOW), Err(FalconParseError::NotJson(_))));
        assert_eq!(parse_falcon(&item("{}"), NOW).unwrap().len(), 2);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_falcon(&body, NOW);
        }

        #[test]
        fn items_built_from_samples_parse_back(
            items in proptest::collection::vec(
                ("[a-z0-9.-]{1,8}", "[a-z.]{1,8}", proptest::collection::btree_map("[a-z]{1,4}", "[a-z0-9]{1,4}", 0..4), -1e9..1e9f64, 1i64..4_000_000_000),
                0..10,
            ),
        ) {
            let body: Vec<serde_json::Value> = items
                .iter()
                .map(|(endpoint, metric, tags, value, ts)| {
                    let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    serde_json::json!({"endpoint": endpoint, "metric": metric, "timestamp": ts, "step": 60, "value": value, "counterType": "GAUGE", "tags": tags.join(",")})
                })
                .collect();
            let parsed = parse_falcon(&serde_json::to_vec(&body).unwrap(), NOW).unwrap();
            let expected: Vec<Sample> = items
                .into_iter()
                .map(|(endpoint, metric, tags, value, ts)| {
                    let mut labels = Labels::from_pairs(tags);
                    labels.set(ENDPOINT_LABEL, endpoint);
                    Sample::new(metric, labels, value, ts * 1000)
                })
                .collect();
            prop_assert_eq!(parsed, expected);
        }
    }
}
