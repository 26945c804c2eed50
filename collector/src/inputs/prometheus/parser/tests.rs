//! Tests of the exposition parsers.

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
    ParsedSample { name: name.into(), labels: labels(pairs), value, timestamp_ms }
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
            name: name.into(),
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
