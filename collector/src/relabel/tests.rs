//! Tests of relabeling, with cases from Prometheus' documented behaviour.

use super::*;
use proptest::prelude::*;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

fn regex(pattern: &str) -> RelabelRegex {
    RelabelRegex::new(pattern).expect("test regex compiles")
}

fn sources(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

fn step(action: RelabelAction) -> RelabelConfig {
    RelabelConfig { action, ..RelabelConfig::default() }
}

fn replace(source: &[&str], pattern: &str, target: &str, replacement: &str) -> RelabelConfig {
    RelabelConfig {
        source_labels: sources(source),
        regex: regex(pattern),
        target_label: Some(target.to_owned()),
        replacement: replacement.to_owned(),
        ..RelabelConfig::default()
    }
}

fn run(input: &[(&str, &str)], configs: &[RelabelConfig]) -> Option<Labels> {
    for config in configs {
        config.validate().expect("test config is valid");
    }
    relabel(&labels(input), configs)
}

fn yaml(text: &str) -> Result<Vec<RelabelConfig>, serde_yaml::Error> {
    serde_yaml::from_str(text)
}

// ---- replace ----

#[test]
fn replace_expands_braced_groups() {
    let out = run(&[("a", "foo"), ("b", "bar")], &[replace(&["a"], "f(.*)", "d", "ch${1}-ch${1}")]);
    assert_eq!(out, Some(labels(&[("a", "foo"), ("b", "bar"), ("d", "choo-choo")])));
}

#[test]
fn replace_joins_sources_and_chains_steps() {
    let out = run(
        &[("a", "foo"), ("b", "bar"), ("c", "baz")],
        &[
            replace(&["a", "b"], "f(.*);(.*)r", "a", "b${1}${2}m"),
            replace(&["c", "a"], "(b).*b(.*)ba(.*)", "d", "$1$2$2$3"),
        ],
    );
    assert_eq!(out, Some(labels(&[("a", "boobam"), ("b", "bar"), ("c", "baz"), ("d", "boooom")])));
}

#[test]
fn regex_is_fully_anchored() {
    // `.*(b).*` must cover the whole value; `f` alone matches nothing in "boo".
    assert_eq!(
        run(&[("a", "abc")], &[replace(&["a"], ".*(b).*", "d", "$1")]),
        Some(labels(&[("a", "abc"), ("d", "b")]))
    );
    assert_eq!(run(&[("a", "boo")], &[replace(&["a"], "f", "b", "bar")]), Some(labels(&[("a", "boo")])));
    assert_eq!(run(&[("a", "foo")], &[replace(&["a"], "f|o", "b", "x")]), Some(labels(&[("a", "foo")])));
}

#[test]
fn replace_with_templated_target() {
    let pattern = "some-([^-]+)-([^,]+)";
    assert_eq!(
        run(&[("a", "some-name-value")], &[replace(&["a"], pattern, "${1}", "${2}")]),
        Some(labels(&[("a", "some-name-value"), ("name", "value")]))
    );
    // A replacement naming a missing group is empty, which deletes (here: writes nothing).
    assert_eq!(
        run(&[("a", "some-name-value")], &[replace(&["a"], pattern, "${1}", "${3}")]),
        Some(labels(&[("a", "some-name-value")]))
    );
    // A target that expands to an invalid label name ("" or "0") is skipped.
    assert_eq!(
        run(
            &[("a", "some-name-0")],
            &[replace(&["a"], pattern, "${3}", "${1}"), replace(&["a"], "some-([^-]+)(-[^,]+)", "${3}", "${1}")]
        ),
        Some(labels(&[("a", "some-name-0")]))
    );
}

#[test]
fn replace_real_life_service_discovery_tags() {
    let tags = "path:/secret,job:some-job,label:foo=bar";
    let out = run(
        &[("__meta_sd_tags", tags)],
        &[
            replace(&["__meta_sd_tags"], "(?:.+,|^)path:(/[^,]+).*", "__metrics_path__", "${1}"),
            replace(&["__meta_sd_tags"], "(?:.+,|^)job:([^,]+).*", "job", "${1}"),
            replace(&["__meta_sd_tags"], "(?:.+,|^)label:([^=]+)=([^,]+).*", "${1}", "${2}"),
        ],
    );
    assert_eq!(
        out,
        Some(labels(&[
            ("__meta_sd_tags", tags),
            ("__metrics_path__", "/secret"),
            ("job", "some-job"),
            ("foo", "bar")
        ]))
    );
}

#[test]
fn replace_defaults_copy_and_delete() {
    // Defaults: regex (.*), replacement $1: copies a value, and an absent source deletes.
    let copy = RelabelConfig {
        source_labels: sources(&["a"]),
        target_label: Some("b".into()),
        ..RelabelConfig::default()
    };
    assert_eq!(run(&[("a", "x")], std::slice::from_ref(&copy)), Some(labels(&[("a", "x"), ("b", "x")])));
    assert_eq!(run(&[("b", "old")], std::slice::from_ref(&copy)), Some(Labels::default()));
    // The fast path writes a literal replacement for an empty source value.
    let literal =
        RelabelConfig { target_label: Some("env".into()), replacement: "prod".into(), ..RelabelConfig::default() };
    assert_eq!(run(&[("a", "x")], &[literal]), Some(labels(&[("a", "x"), ("env", "prod")])));
    // `.` does not match a newline, so a multi-line value is not copied.
    assert_eq!(run(&[("a", "x\ny")], &[copy]), Some(labels(&[("a", "x\ny")])));
}

#[test]
fn issue_12283_labeldrop_then_recreate_then_keep() {
    let out = run(
        &[
            ("__meta_kubernetes_pod_container_port_name", "foo"),
            ("__meta_kubernetes_pod_annotation_XXX_metrics_port", "9091"),
        ],
        &[
            RelabelConfig {
                regex: regex("^__meta_kubernetes_pod_container_port_name$"),
                ..step(RelabelAction::LabelDrop)
            },
            replace(
                &["__meta_kubernetes_pod_annotation_XXX_metrics_port"],
                "(.+)",
                "__meta_kubernetes_pod_container_port_name",
                "metrics",
            ),
            RelabelConfig {
                source_labels: sources(&["__meta_kubernetes_pod_container_port_name"]),
                regex: regex("^metrics$"),
                ..step(RelabelAction::Keep)
            },
        ],
    );
    assert_eq!(
        out,
        Some(labels(&[
            ("__meta_kubernetes_pod_annotation_XXX_metrics_port", "9091"),
            ("__meta_kubernetes_pod_container_port_name", "metrics"),
        ]))
    );
}

// ---- keep / drop / keepequal / dropequal ----

#[test]
fn keep_and_drop() {
    let drop = |pattern: &str| RelabelConfig {
        source_labels: sources(&["a"]),
        regex: regex(pattern),
        ..step(RelabelAction::Drop)
    };
    let keep = |pattern: &str| RelabelConfig {
        source_labels: sources(&["a"]),
        regex: regex(pattern),
        ..step(RelabelAction::Keep)
    };
    assert_eq!(run(&[("a", "foo"), ("b", "bar")], &[drop(".*o.*")]), None);
    assert_eq!(run(&[("a", "foo")], &[drop(".*o.*"), replace(&["a"], "f(.*)", "d", "ch$1-ch$1")]), None);
    assert_eq!(run(&[("a", "foo")], &[drop("no-match")]), Some(labels(&[("a", "foo")])));
    assert_eq!(run(&[("a", "foo")], &[keep("no-match")]), None);
    assert_eq!(run(&[("a", "foo")], &[keep("f.*")]), Some(labels(&[("a", "foo")])));
    // A missing source label is the empty string.
    assert_eq!(run(&[("b", "x")], &[keep("")]), Some(labels(&[("b", "x")])));
}

#[test]
fn keepequal_and_dropequal() {
    let input = [("__tmp_port", "1234"), ("__port1", "1234"), ("__port2", "5678")];
    let equal = |action, target: &str| RelabelConfig {
        source_labels: sources(&["__tmp_port"]),
        target_label: Some(target.to_owned()),
        ..step(action)
    };
    assert_eq!(run(&input, &[equal(RelabelAction::KeepEqual, "__port1")]), Some(labels(&input)));
    assert_eq!(run(&input, &[equal(RelabelAction::KeepEqual, "__port2")]), None);
    assert_eq!(run(&input, &[equal(RelabelAction::DropEqual, "__port1")]), None);
    assert_eq!(run(&input, &[equal(RelabelAction::DropEqual, "__port2")]), Some(labels(&input)));
}

// ---- hashmod ----

#[test]
fn hashmod_matches_prometheus() {
    let hashmod = |source: &str, target: &str| RelabelConfig {
        source_labels: sources(&[source]),
        target_label: Some(target.to_owned()),
        modulus: Some(1000),
        ..step(RelabelAction::HashMod)
    };
    // Values from Prometheus' own tests.
    assert_eq!(
        run(&[("a", "foo"), ("b", "bar"), ("c", "baz")], &[hashmod("c", "d")]),
        Some(labels(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "976")]))
    );
    assert_eq!(run(&[("a", "foo\nbar")], &[hashmod("a", "b")]), Some(labels(&[("a", "foo\nbar"), ("b", "734")])));
}

// ---- labelmap / labeldrop / labelkeep ----

#[test]
fn labelmap_copies_matching_names() {
    let map = |pattern: &str, replacement: &str| RelabelConfig {
        regex: regex(pattern),
        replacement: replacement.to_owned(),
        ..step(RelabelAction::LabelMap)
    };
    assert_eq!(
        run(&[("a", "foo"), ("b1", "bar"), ("b2", "baz")], &[map("(b.*)", "bar_${1}")]),
        Some(labels(&[("a", "foo"), ("b1", "bar"), ("b2", "baz"), ("bar_b1", "bar"), ("bar_b2", "baz")]))
    );
    let meta = [("a", "foo"), ("__meta_my_bar", "aaa"), ("__meta_my_baz", "bbb"), ("__meta_other", "ccc")];
    let mut expected = meta.to_vec();
    expected.extend([("my_bar", "aaa"), ("my_baz", "bbb")]);
    assert_eq!(run(&meta, &[map("__meta_(my.*)", "${1}")]), Some(labels(&expected)));
}

#[test]
fn labelkeep_and_labeldrop() {
    let input = [("a", "foo"), ("b1", "bar"), ("b2", "baz")];
    let keep = RelabelConfig { regex: regex("(b.*)"), ..step(RelabelAction::LabelKeep) };
    let drop = RelabelConfig { regex: regex("(b.*)"), ..step(RelabelAction::LabelDrop) };
    assert_eq!(run(&input, &[keep]), Some(labels(&[("b1", "bar"), ("b2", "baz")])));
    assert_eq!(run(&input, &[drop]), Some(labels(&[("a", "foo")])));
}

// ---- lowercase / uppercase ----

#[test]
fn lowercase_and_uppercase() {
    let case = |action, target: &str| RelabelConfig {
        source_labels: sources(&["foo"]),
        target_label: Some(target.to_owned()),
        ..step(action)
    };
    assert_eq!(
        run(
            &[("foo", "bAr123Foo")],
            &[case(RelabelAction::Uppercase, "foo_uppercase"), case(RelabelAction::Lowercase, "foo_lowercase")]
        ),
        Some(labels(&[("foo", "bAr123Foo"), ("foo_lowercase", "bar123foo"), ("foo_uppercase", "BAR123FOO")]))
    );
}

// ---- regex dialect and expansion ----

#[test]
fn perl_classes_are_ascii_like_go() {
    let digits = regex(r"\d+");
    assert!(digits.is_match("123"));
    assert!(!digits.is_match("١٢٣"), "Arabic-Indic digits are not \\d in Go");
    assert!(!regex(r"\w+").is_match("é"));
    assert!(regex(r"[\w-]+").is_match("a-b_c"));
    assert!(regex(r"[^\W]+").is_match("abc"));
    assert!(regex(r"\s").is_match("\t"));
    assert!(regex(r"\\d").is_match(r"\d"), "an escaped backslash stays literal");
    assert_eq!(regex(r"\d+").as_str(), r"\d+");
}

#[test]
fn expansion_follows_go_regexp_expand() {
    let re = regex("(?P<host>[^:]+):(?P<port>[0-9]+)");
    let expand_with = |template: &str| {
        let captures = re.compiled.captures("example:9100").expect("matches");
        expand(template, &captures, &re.compiled)
    };
    assert_eq!(expand_with("$1"), "example");
    assert_eq!(expand_with("${2}"), "9100");
    assert_eq!(expand_with("$host-$port"), "example-9100");
    assert_eq!(expand_with("${host}_x"), "example_x");
    assert_eq!(expand_with("$host_x"), "", "a name runs as far as word characters go");
    assert_eq!(expand_with("$1x"), "", "`1x` is a group name, not group 1 and `x`");
    assert_eq!(expand_with("$$1"), "$1");
    assert_eq!(expand_with("cost: $"), "cost: $");
    assert_eq!(expand_with("${host"), "${host");
    assert_eq!(expand_with("${}"), "${}");
    assert_eq!(expand_with("$01"), "", "leading zeros make a name");
    assert_eq!(expand_with("$9"), "");
    assert_eq!(expand_with("$missing"), "");
}

// ---- validation ----

#[test]
fn validation_rejects_what_prometheus_rejects() {
    let target = |t: &str| Some(t.to_owned());
    let cases: Vec<(RelabelConfig, &str)> = vec![
        (step(RelabelAction::Replace), "requires 'target_label' value"),
        (step(RelabelAction::Lowercase), "requires 'target_label' value"),
        (
            RelabelConfig { target_label: target("${3}"), ..step(RelabelAction::Lowercase) },
            "\"${3}\" is invalid 'target_label'",
        ),
        (
            RelabelConfig { target_label: target("0${3}"), ..step(RelabelAction::Replace) },
            "\"0${3}\" is invalid 'target_label'",
        ),
        (
            RelabelConfig { target_label: target("-${3}"), ..step(RelabelAction::Replace) },
            "\"-${3}\" is invalid 'target_label' for replace action",
        ),
        (
            RelabelConfig { target_label: target("a-b"), ..step(RelabelAction::Replace) },
            "is invalid 'target_label'",
        ),
        (RelabelConfig { target_label: target("h"), ..step(RelabelAction::HashMod) }, "requires non-zero modulus"),
        (
            RelabelConfig { target_label: target("h"), modulus: Some(0), ..step(RelabelAction::HashMod) },
            "requires non-zero modulus",
        ),
        (
            RelabelConfig { target_label: target("x"), replacement: "y".into(), ..step(RelabelAction::Uppercase) },
            "'replacement' can not be set for uppercase action",
        ),
        (
            RelabelConfig { target_label: target("x"), separator: ",".into(), ..step(RelabelAction::KeepEqual) },
            "keepequal action requires only 'source_labels' and 'target_label', and no other fields",
        ),
        (
            RelabelConfig { target_label: target("x"), regex: regex("a"), ..step(RelabelAction::DropEqual) },
            "no other fields",
        ),
        (
            RelabelConfig { source_labels: sources(&["a"]), ..step(RelabelAction::LabelDrop) },
            "labeldrop action requires only 'regex', and no other fields",
        ),
        (RelabelConfig { target_label: target("x"), ..step(RelabelAction::LabelKeep) }, "no other fields"),
        (RelabelConfig { replacement: "-bad".into(), ..step(RelabelAction::LabelMap) }, "is invalid 'replacement'"),
        (
            RelabelConfig { source_labels: sources(&["not-a-name"]), ..step(RelabelAction::Keep) },
            "not a valid label name",
        ),
    ];
    for (config, expected) in cases {
        let message = config.validate().expect_err(expected).to_string();
        assert!(message.contains(expected), "{message:?} should contain {expected:?}");
    }
    let valid = [
        RelabelConfig {
            target_label: Some("${3}".into()),
            source_labels: sources(&["a"]),
            ..step(RelabelAction::Replace)
        },
        RelabelConfig { target_label: Some("h".into()), modulus: Some(8), ..step(RelabelAction::HashMod) },
        RelabelConfig { regex: regex("tmp_.*"), ..step(RelabelAction::LabelDrop) },
        step(RelabelAction::Keep),
        step(RelabelAction::LabelMap),
    ];
    for config in valid {
        assert!(config.validate().is_ok(), "{config:?}");
    }
}

#[test]
fn target_label_templates_are_checked_like_prometheus() {
    let cases = [
        ("-label", false),
        ("label", true),
        ("label${1}", true),
        ("${1}label", true),
        ("${1}", true),
        ("${", false),
        ("$", false),
        ("${}", false),
        ("foo${", false),
        ("$1", true),
        ("asd$2asd", true),
        ("-foo${1}bar-", false),
        ("_${1}_", true),
        ("foo${bar}foo", true),
        ("", false),
        ("1abc", false),
        ("a$1$2", true),
    ];
    for (template, valid) in cases {
        assert_eq!(is_label_name_template(template), valid, "{template:?}");
    }
}

// ---- serde ----

#[test]
fn deserializes_prometheus_yaml_with_defaults() {
    let configs = yaml(
        "- source_labels: [job, __meta_dns_name]\n  regex: \"(.*)some-[regex]\"\n  target_label: job\n  replacement: foo-${1}\n\
         - action: labeldrop\n  regex: tmp_.*\n\
         - source_labels: [__address__]\n  modulus: 8\n  target_label: __tmp_hash\n  action: HashMod\n",
    )
    .expect("valid yaml");
    assert_eq!(configs[0].action, RelabelAction::Replace);
    assert_eq!(configs[0].separator, ";");
    assert_eq!(configs[0].regex.as_str(), "(.*)some-[regex]");
    assert_eq!(configs[1], RelabelConfig { regex: regex("tmp_.*"), ..step(RelabelAction::LabelDrop) });
    assert_eq!(configs[1].replacement, "$1");
    assert_eq!(configs[2].action, RelabelAction::HashMod);
    assert_eq!(configs[2].modulus, Some(8));
}

#[test]
fn deserializes_prometheus_operator_camel_case() {
    let configs = yaml(
        "- sourceLabels: [__meta_kubernetes_pod_label_app]\n  targetLabel: app\n\
         - action: LabelMap\n  regex: __meta_kubernetes_pod_label_(.+)\n",
    )
    .expect("valid yaml");
    assert_eq!(configs[0].source_labels, ["__meta_kubernetes_pod_label_app"]);
    assert_eq!(configs[0].target_label.as_deref(), Some("app"));
    assert_eq!(configs[1].action, RelabelAction::LabelMap);
}

#[test]
fn deserialization_validates() {
    for (text, expected) in [
        ("- action: replace\n", "requires 'target_label'"),
        ("- action: explode\n  target_label: x\n", "unknown relabel action \"explode\""),
        ("- regex: \"(\"\n  target_label: x\n", "invalid relabel regex"),
        ("- target_label: x\n  unknown_key: 1\n", "unknown field"),
        ("- action: hashmod\n  target_label: x\n", "non-zero modulus"),
    ] {
        let message = yaml(text).expect_err(text).to_string();
        assert!(message.contains(expected), "{message:?} should contain {expected:?}");
    }
}

// ---- samples ----

#[test]
fn relabel_sample_uses_name_label() {
    let sample = Sample::new("go_gc_duration_seconds", labels(&[("job", "node")]), 1.0, 5);
    let drop_go =
        RelabelConfig { source_labels: sources(&["__name__"]), regex: regex("go_.*"), ..step(RelabelAction::Drop) };
    assert_eq!(relabel_sample(sample.clone(), &[drop_go]), None);

    let rename = replace(&["__name__", "job"], "go_(.*);(.*)", "__name__", "${2}_${1}");
    let renamed = relabel_sample(sample.clone(), &[rename]).expect("kept");
    assert_eq!(renamed.name, "node_gc_duration_seconds");
    assert_eq!(renamed.labels, labels(&[("job", "node")]));
    assert_eq!((renamed.value, renamed.timestamp_ms), (1.0, 5));

    let unname = RelabelConfig { regex: regex("__name__"), ..step(RelabelAction::LabelDrop) };
    assert_eq!(relabel_sample(sample.clone(), &[unname]), None, "a sample without a name is dropped");
    assert_eq!(relabel_sample(sample.clone(), &[]), Some(sample));
}

// ---- properties ----

fn label_set() -> impl Strategy<Value = Labels> {
    proptest::collection::vec(("[a-d]{1,2}", "[a-c0-9]{0,3}"), 0..6).prop_map(Labels::from_pairs)
}

proptest! {
    #[test]
    fn keep_and_drop_are_complementary(
        input in label_set(),
        source in proptest::collection::vec("[a-d]{1,2}", 0..3),
        pattern in prop::sample::select(vec!["(.*)", "a.*", "[0-9]+", "", "b|c", ".*;.*", "x"]),
    ) {
        let config = |action| RelabelConfig { source_labels: source.clone(), regex: regex(pattern), ..step(action) };
        let kept = relabel(&input, &[config(RelabelAction::Keep)]);
        let dropped = relabel(&input, &[config(RelabelAction::Drop)]);
        prop_assert!(kept.is_some() != dropped.is_some());
        // Neither action changes the labels it lets through.
        prop_assert!(kept.iter().chain(dropped.iter()).all(|out| *out == input));
    }

    #[test]
    fn labelkeep_and_labeldrop_partition_the_labels(
        input in label_set(),
        pattern in prop::sample::select(vec!["(.*)", "a.*", "b", "[cd]+", "x"]),
    ) {
        let config = |action| RelabelConfig { regex: regex(pattern), ..step(action) };
        let kept = relabel(&input, &[config(RelabelAction::LabelKeep)]).unwrap_or_default();
        let dropped = relabel(&input, &[config(RelabelAction::LabelDrop)]).unwrap_or_default();
        prop_assert_eq!(kept.len() + dropped.len(), input.len());
        prop_assert!(kept.iter().all(|l| input.get(&l.name) == Some(l.value.as_str()) && dropped.get(&l.name).is_none()));
    }

    #[test]
    fn hashmod_is_below_modulus_and_stable(value in ".*", modulus in 1u64..=u64::MAX) {
        let config = RelabelConfig {
            source_labels: sources(&["a"]),
            target_label: Some("h".into()),
            modulus: Some(modulus),
            ..step(RelabelAction::HashMod)
        };
        let input = Labels::from_pairs([("a", value.as_str())]);
        let first = relabel(&input, std::slice::from_ref(&config)).expect("hashmod keeps");
        let hash: u64 = first.get("h").expect("hash written").parse().expect("decimal");
        prop_assert!(hash < modulus);
        prop_assert_eq!(relabel(&input, &[config]), Some(first));
    }

    #[test]
    fn default_replace_copies_single_line_values(value in "[^\n]{1,20}") {
        let copy = RelabelConfig { source_labels: sources(&["a"]), target_label: Some("b".into()), ..RelabelConfig::default() };
        let out = relabel(&Labels::from_pairs([("a", value.as_str())]), &[copy]).expect("kept");
        prop_assert_eq!(out.get("b"), Some(value.as_str()));
    }

    #[test]
    fn arbitrary_templates_never_panic(template in ".{0,20}", value in ".{0,20}") {
        let re = regex("(?P<x>.)?(.*)");
        if let Some(captures) = re.compiled.captures(&value) {
            let _ = expand(&template, &captures, &re.compiled);
        }
        let _ = is_label_name_template(&template);
        let _ = RelabelRegex::new(&template);
    }
}
