//! Tests of the template engine as a whole.
//!
//! `testdata/go_cases.json` holds templates, data and the output Go produced for them
//! (Go 1.19's `text/template` with sprig v3.2.3 and its v1.5.1 `cast`, the versions
//! KubeBlocks pins; cases marked with a `note` carry the wording of the Go release
//! KubeBlocks builds with, 1.25, where 1.19 differs). `go_output` is what a Go program
//! printed: the output, or `PARSE-ERROR: <err>` / `<partial output>\nEXEC-ERROR: <err>`.

use proptest::prelude::*;

use super::provider::RenderContext;
use super::*;

#[derive(serde::Deserialize)]
struct Case {
    template: String,
    data: serde_json::Value,
    kubeblocks: bool,
    go_output: String,
}

/// Run a case the way the Go program did, printing in its format.
fn run_case(c: &Case) -> String {
    let mut t = Template::new("t").funcs(sprig::txt_func_map());
    if let Err(e) = t.parse(&c.template) {
        // Go's parse errors carry no column.
        let (name, line, msg) = match &e {
            Error::Parse {
                name,
                line,
                message,
                ..
            } => (name.clone(), *line, message.clone()),
            other => panic!("{other}"),
        };
        return format!("PARSE-ERROR: template: {name}:{line}: {msg}");
    }
    let data = if c.kubeblocks {
        let parameters = c
            .data
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        RenderContext {
            parameters,
            csi_driver_secret_name: "sec".into(),
            csi_driver_secret_namespace: "ns".into(),
            generated_storage_class_name: "sc".into(),
        }
        .to_value()
    } else {
        Value::from_json(&c.data)
    };
    match t.execute(&data) {
        Ok(out) => out,
        Err(e) => format!("\nEXEC-ERROR: {e}"),
    }
}

#[test]
fn outputs_match_go() {
    let cases: Vec<Case> = serde_json::from_str(include_str!("testdata/go_cases.json")).unwrap();
    let mut failures = Vec::new();
    for c in &cases {
        let got = run_case(c);
        // Go prints the output produced before an execution error; ours returns none.
        let want = match c.go_output.find("\nEXEC-ERROR: ") {
            Some(i) => &c.go_output[i..],
            None => &c.go_output,
        };
        if got != want {
            failures.push(format!(
                "template: {}\n  want: {want:?}\n  got:  {got:?}",
                c.template
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from Go:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn render(text: &str, data: serde_json::Value) -> Result<String, Error> {
    let mut t = Template::new("t").funcs(sprig::txt_func_map());
    t.parse(text)?;
    t.execute(&Value::from_json(&data))
}

#[test]
fn unknown_function_is_a_parse_error_naming_it() {
    let e = render("line one\n{{ .a | required \"x\" }}", serde_json::json!({})).unwrap_err();
    assert_eq!(
        e,
        Error::Parse {
            name: "t".into(),
            line: 2,
            col: 8,
            message: "function \"required\" not defined".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "template: t:2:8: function \"required\" not defined"
    );
}

#[test]
fn unimplemented_sprig_function_fails_only_when_called() {
    assert_eq!(
        render("{{ if false }}{{ now }}{{ end }}ok", serde_json::json!({})).unwrap(),
        "ok"
    );
    let e = render("{{ now }}", serde_json::json!({})).unwrap_err();
    assert!(
        e.to_string()
            .contains("error calling now: the sprig function \"now\" is not implemented"),
        "{e}"
    );
}

#[test]
fn output_is_capped() {
    let mut t = Template::new("t")
        .funcs(sprig::txt_func_map())
        .limits(Limits::default().with_max_output_bytes(100));
    t.parse("{{ range until 50 }}abc{{ end }}").unwrap();
    let e = t.execute(&Value::Invalid).unwrap_err();
    assert!(
        e.to_string()
            .contains("output exceeds the limit of 100 bytes"),
        "{e}"
    );
}

#[test]
fn steps_are_capped_for_exponential_recursion() {
    // Each call makes two more: 2^40 calls within the depth limit. (Go's column for a
    // field chain is that of its last field, hence 1:5 and 2:7 in the tests nearby.)
    let text = r#"{{ define "a" }}{{ if . }}{{ template "a" (slice . 1) }}{{ template "a" (slice . 1) }}{{ end }}{{ end }}{{ template "a" .l }}"#;
    let l: Vec<u32> = (0..40).collect();
    let e = render(text, serde_json::json!({ "l": l })).unwrap_err();
    assert!(
        e.to_string().contains("execution exceeded 1000000 steps"),
        "{e}"
    );
}

#[test]
fn unbounded_recursion_stops_at_the_depth_limit() {
    let e = render(
        r#"{{ define "a" }}{{ template "a" . }}{{ end }}{{ template "a" }}"#,
        serde_json::json!({}),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("exceeded maximum template depth (150)"),
        "{e}"
    );
}

#[test]
fn deepest_accepted_nesting_runs_on_a_small_stack() {
    // The controller renders on tokio worker threads (2 MiB stacks); the deepest
    // template the parser and executor accept must fit in well under that.
    let depth = parse::MAX_NESTING - 6;
    // The recursive call sits inside the innermost `if`, so depth accumulates until
    // the executor's limit stops it.
    let text = format!(
        "{}{}x{}{}{}",
        r#"{{ define "d" }}"#,
        "{{ if (not (not (not (not 1)))) }}".repeat(depth),
        r#"{{ if . }}{{ template "d" (slice . 1) }}{{ end }}"#,
        "{{ end }}".repeat(depth),
        r#"{{ end }}{{ template "d" .l }}"#
    );
    let h = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || render(&text, serde_json::json!({"l": [1, 2, 3]})))
        .unwrap();
    let r = h.join().expect("no stack overflow");
    let e = r.expect_err("depth limit");
    assert!(
        e.to_string()
            .contains("exceeded maximum template depth (150)"),
        "{e}"
    );
}

#[test]
fn huge_repeat_and_until_are_refused() {
    for text in [
        "{{ repeat 1000000000 \"ab\" }}",
        "{{ until 1000000000 }}",
        "{{ printf \"%*d\" 999999 1 | repeat 9999 }}",
        "{{ indent 100000000 \"a\" }}",
    ] {
        let e = render(text, serde_json::json!({})).unwrap_err();
        assert!(e.to_string().contains("exceeds the limit"), "{text}: {e}");
    }
}

#[test]
fn a_map_holding_itself_neither_hangs_nor_leaks() {
    // set makes $d hold itself; printing stops at the nesting limit, and the heap
    // clears the map when execution ends.
    let out = render(
        r#"{{ $d := dict }}{{ $_ := set $d "self" $d }}{{ len $d }}"#,
        serde_json::json!({}),
    )
    .unwrap();
    assert_eq!(out, "1");
    let e = render(
        r#"{{ $d := dict }}{{ $_ := set $d "self" $d }}{{ $d }}"#,
        serde_json::json!({}),
    );
    assert!(e.is_ok() || e.unwrap_err().to_string().contains("exceeds"));
    let e = render(
        r#"{{ $d := dict }}{{ $_ := set $d "self" $d }}{{ toJson $d }}"#,
        serde_json::json!({}),
    )
    .unwrap();
    assert_eq!(e, "");
}

#[test]
fn execution_does_not_change_the_callers_data() {
    let data = Value::from_json(&serde_json::json!({"m": {"a": 1}}));
    let mut t = Template::new("t").funcs(sprig::txt_func_map());
    t.parse(r#"{{ $_ := set .m "b" 2 }}{{ len .m }}"#).unwrap();
    assert_eq!(t.execute(&data).unwrap(), "2");
    assert_eq!(t.execute(&data).unwrap(), "2");
}

#[test]
fn later_parse_replaces_definitions_but_empty_does_not() {
    let mut t = Template::new("t");
    t.parse(r#"{{ define "a" }}one{{ end }}{{ template "a" }}"#)
        .unwrap();
    t.parse(r#"{{ define "a" }}two{{ end }}{{ template "a" }}"#)
        .unwrap();
    assert_eq!(t.execute(&Value::Invalid).unwrap(), "two");
    t.parse_named("a", "  ").unwrap();
    assert_eq!(t.execute(&Value::Invalid).unwrap(), "two");
}

#[test]
fn missingkey_options() {
    let data = Value::from_json(&serde_json::json!({"m": {}}));
    let run = |mk| {
        let mut t = Template::new("t").missing_key(mk);
        t.parse("{{ .m.x }}").unwrap();
        t.execute(&data)
    };
    assert_eq!(run(MissingKey::Default).unwrap(), "<no value>");
    assert_eq!(run(MissingKey::Zero).unwrap(), "<no value>");
    assert_eq!(
        run(MissingKey::Error).unwrap_err().to_string(),
        "template: t:1:5: executing \"t\" at <.m.x>: map has no entry for key \"x\""
    );
}

#[test]
fn errors_in_defined_templates_name_them() {
    let e = render(
        "{{ define \"inner\" }}\n  {{ .a.b }}{{ end }}{{ template \"inner\" . }}",
        serde_json::json!({"a": 1}),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "template: t:2:7: executing \"inner\" at <.a.b>: can't evaluate field b in type interface {}"
    );
}

/// Characters that make up template syntax, to build texts that exercise the lexer
/// and parser rather than just text nodes.
fn template_text() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "{{",
        "}}",
        "{{-",
        "-}}",
        " ",
        "\n",
        ".",
        ".a",
        ".b.c",
        "$",
        "$x",
        ":=",
        "=",
        "|",
        "(",
        ")",
        "\"s\"",
        "`r`",
        "'c'",
        "1",
        "-2",
        "3.5",
        "0x1f",
        "nil",
        "true",
        "if",
        "else",
        "end",
        "range",
        "with",
        "define",
        "template",
        "block",
        "break",
        "continue",
        "\"t\"",
        "index",
        "printf",
        "\"%d %s %v\"",
        "len",
        "eq",
        "and",
        "or",
        "not",
        "default",
        "toJson",
        "dict",
        "list",
        "set",
        "until",
        "repeat",
        "slice",
        "split",
        "/*",
        "*/",
        "x",
        "é",
    ]);
    prop::collection::vec(pieces, 0..40).prop_map(|v| v.concat())
}

fn json_data() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i32>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "[a-z%{}.]{0,8}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[abc]", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Any text over any data gives Ok or Err with bounded output, never a panic.
    #[test]
    fn random_templates_never_panic(text in template_text(), data in json_data()) {
        let mut t = Template::new("t")
            .funcs(sprig::txt_func_map())
            .limits(Limits::default().with_max_output_bytes(4096).with_max_steps(20_000));
        if t.parse(&text).is_ok() {
            if let Ok(out) = t.execute(&Value::from_json(&data)) {
                prop_assert!(out.len() <= 4096);
            }
        }
    }

    /// Random printf formats and arguments never panic.
    #[test]
    fn random_printf_never_panics(format in "[%a-z0-9.*#+ \\-\\[\\]]{0,20}", n in any::<i64>(), f in any::<f64>(), s in ".{0,8}") {
        let mut p = super::fmt::Printer::new(1 << 16);
        super::fmt::sprintf(&mut p, &format, &[Value::Int(n), Value::Float(f), Value::str(&s), Value::Nil]);
    }
}
