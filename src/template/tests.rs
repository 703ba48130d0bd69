use serde_json::json;

use super::*;

fn vars(pairs: &[(&str, &str)]) -> Variables {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn sample() -> Variables {
    vars(&[
        ("uid", "acme"),
        ("planId", ""),
        ("region", "eu-west"),
        ("replicas", "3"),
        ("hostOrUrl", "https://acme.example.com:8443/app"),
        ("config", r#"{"tier":"gold","limits":{"cpu":2},"tags":["a","b"]}"#),
        ("hubId", "my-saas-hub"),
        ("templateRef", "web-app"),
    ])
}

fn go(src: &str) -> String {
    Engine::new().render_str(src, Syntax::Go, &sample()).unwrap_or_else(|e| panic!("{src:?}: {e}"))
}

fn go_err(src: &str) -> TemplateError {
    match Engine::new().render_str(src, Syntax::Go, &sample()) {
        Ok(out) => panic!("{src:?} rendered {out:?}, expected an error"),
        Err(e) => e,
    }
}

fn jinja(src: &str) -> String {
    Engine::new().render_str(src, Syntax::Jinja, &sample()).unwrap_or_else(|e| panic!("{src:?}: {e}"))
}

fn assert_go(cases: &[(&str, &str)]) {
    for (src, expected) in cases {
        assert_eq!(go(src), *expected, "template {src:?}");
    }
}

// ------------------------------------------------------------------------------------------------
// Seed templates

#[test]
fn seed_templates_render() {
    assert_go(&[
        ("{{ .uid }}-app", "acme-app"),
        ("{{ .uid }}", "acme"),
        ("{{ .planId | default \"basic\" }}", "basic"),
        ("{{ .deployImage | default \"nginx:latest\" }}", "nginx:latest"),
        ("{{ .uid }}-svc", "acme-svc"),
        ("{{ .uid }}-init", "acme-init"),
        ("{{ .uid }}-creds", "acme-creds"),
        ("{{ .uid }}-data", "acme-data"),
        ("{{ .uid | trunc63 }}", "acme"),
        ("{{ .hubId }}/{{ .templateRef }}", "my-saas-hub/web-app"),
    ]);
}

#[test]
fn plain_strings_bypass_the_engine() {
    let engine = Engine::new();
    let out = engine.render_str("no template {here} %}", Syntax::Go, &sample()).unwrap();
    assert_eq!(out, "no template {here} %}");
    let out = engine.render_str("plain {% text", Syntax::Go, &sample()).unwrap();
    assert_eq!(out, "plain {% text");
    assert_eq!(engine.compilations(), 0);
}

// ------------------------------------------------------------------------------------------------
// Go syntax: expressions and control structures

#[test]
fn fields_variables_and_literals() {
    assert_go(&[
        ("{{ $.uid }}", "acme"),
        ("{{ $c := fromJson .config }}{{ $c.tier }}/{{ $c.limits.cpu }}", "gold/2"),
        ("{{ (fromJson .config).limits.cpu }}", "2"),
        ("{{ \"a\\tb\\n\" }}", "a\tb\n"),
        ("{{ `raw \\n {{` }}", "raw \\n {{"),
        ("{{ 'a' }}", "97"),
        ("{{ 0x1F }} {{ 1_000 }} {{ -3 }} {{ 1.5 }} {{ 2.0 }}", "31 1000 -3 1.5 2"),
        ("{{ true }} {{ false }}", "true false"),
        ("{{ printf \"%v\" nil }}", "<nil>"),
        ("{{ list 1 \"a\" (list 2) }}", "[1 a [2]]"),
        ("{{ dict \"b\" 2 \"a\" 1 }}", "map[a:1 b:2]"),
        ("text { with braces } {% and %} {# this #}", "text { with braces } {% and %} {# this #}"),
        ("{{ .uid }}{", "acme{"),
    ]);
}

#[test]
fn pipelines_put_the_piped_value_last() {
    assert_go(&[
        ("{{ .uid | printf \"%s-%s\" .region }}", "eu-west-acme"),
        ("{{ .uid | upper | printf \"<%s>\" }}", "<ACME>"),
        ("{{ \"x\" | replace \"x\" \"y\" }}", "y"),
        ("{{ .uid | trimPrefix \"ac\" }}", "me"),
        ("{{ printf \"%s-%s\" .uid .region }}", "acme-eu-west"),
        ("{{ (printf \"%s\" .uid) | upper }}", "ACME"),
    ]);
}

#[test]
fn if_else_chains() {
    let src = "{{ if eq .region \"us\" }}US{{ else if eq .region \"eu-west\" }}EU{{ else }}OTHER{{ end }}";
    assert_eq!(go(src), "EU");
    assert_eq!(go("{{ if .planId }}paid{{ else }}free{{ end }}"), "free");
    assert_eq!(go("{{ if .missing }}set{{ else }}unset{{ end }}"), "unset");
    assert_eq!(go("{{ if $x := .uid }}{{ $x }}!{{ end }}"), "acme!");
    assert_eq!(go("{{ if and .uid .region }}both{{ end }}"), "both");
    assert_eq!(go("{{ if or .planId .missing }}x{{ else }}none{{ end }}"), "none");
    assert_eq!(go("{{ if not .planId }}empty{{ end }}"), "empty");
}

#[test]
fn and_or_return_the_deciding_operand() {
    assert_go(&[
        ("{{ and .uid .region }}", "eu-west"),
        ("{{ and .planId .region }}", ""),
        ("{{ or .planId .region }}", "eu-west"),
        ("{{ or .missing \"fallback\" }}", "fallback"),
        ("{{ or .uid .missing }}", "acme"),
        ("{{ $zero := 0 }}{{ and 1 $zero 2 }}", "0"),
        ("{{ or 0 \"\" 3 }}", "3"),
        ("{{ not 0 }} {{ not \"x\" }}", "true false"),
    ]);
}

#[test]
fn comparisons_follow_go() {
    assert_go(&[
        ("{{ eq 1 1 }} {{ eq \"a\" \"b\" \"a\" }} {{ ne 1 2 }}", "true true true"),
        ("{{ lt 1 2 }} {{ le 2 2 }} {{ gt \"b\" \"a\" }} {{ ge 1 2 }}", "true true true false"),
        ("{{ eq 1.0 1 }}", "true"),
    ]);
    let err = go_err("{{ eq .replicas 3 }}");
    assert!(err.to_string().contains("incompatible types"), "{err}");
}

#[test]
fn range_over_lists_maps_and_ints() {
    assert_go(&[
        ("{{ range list \"a\" \"b\" }}[{{ . }}]{{ end }}", "[a][b]"),
        ("{{ range $i, $v := list \"a\" \"b\" }}{{ $i }}={{ $v }};{{ end }}", "0=a;1=b;"),
        ("{{ range $v := list \"a\" \"b\" }}{{ $v }}{{ end }}", "ab"),
        ("{{ range $k, $v := dict \"z\" 1 \"a\" 2 }}{{ $k }}:{{ $v }} {{ end }}", "a:2 z:1 "),
        ("{{ range $v := dict \"z\" 1 \"a\" 2 }}{{ $v }}{{ end }}", "21"),
        ("{{ range list }}x{{ else }}empty{{ end }}", "empty"),
        ("{{ range 3 }}{{ . }}{{ end }}", "012"),
        ("{{ range (fromJson .config).tags }}{{ . }}-{{ $.uid }} {{ end }}", "a-acme b-acme "),
        ("{{ range $i, $t := (fromJson .config).tags }}{{ if $i }},{{ end }}{{ $t }}{{ end }}", "a,b"),
    ]);
}

#[test]
fn with_rebinds_dot() {
    assert_go(&[
        ("{{ with .uid }}<{{ . }}>{{ end }}", "<acme>"),
        ("{{ with .planId }}<{{ . }}>{{ else }}none{{ end }}", "none"),
        ("{{ with .missing }}x{{ else }}missing{{ end }}", "missing"),
        ("{{ with $c := fromJson .config }}{{ $c.tier }}{{ .tier }}{{ end }}", "goldgold"),
        ("{{ with .planId }}a{{ else with .region }}{{ . }}{{ end }}", "eu-west"),
        ("{{ with .region }}{{ $.uid }}@{{ . }}{{ end }}", "acme@eu-west"),
    ]);
}

#[test]
fn variables_declare_assign_and_scope() {
    assert_go(&[
        ("{{ $x := 1 }}{{ $x = 2 }}{{ $x }}", "2"),
        ("{{ $x := 0 }}{{ range list 1 2 3 }}{{ $x = . }}{{ end }}{{ $x }}", "3"),
        ("{{ $x := \"outer\" }}{{ if true }}{{ $x := \"inner\" }}{{ $x }}{{ end }}-{{ $x }}", "inner-outer"),
        ("{{ $d := dict \"a\" 1 }}{{ $_ := set $d \"b\" 2 }}{{ $d }}", "map[a:1 b:2]"),
    ]);
    let err = go_err("{{ $y }}");
    assert!(matches!(err, TemplateError::Syntax { .. }), "{err}");
    assert!(err.to_string().contains("undefined variable \"$y\""), "{err}");
}

#[test]
fn comments_and_whitespace_trimming() {
    assert_go(&[
        ("a {{- \"b\" }} c", "ab c"),
        ("a {{ \"b\" -}} c", "a bc"),
        ("a\n\t {{- \"b\" -}} \n\tc", "abc"),
        ("x{{/* a comment */}}y", "xy"),
        ("x {{- /* trimmed comment */ -}} y", "xy"),
        ("{{ 3 }}{{-3}}", "3-3"),
        ("line1\n{{- if true }}\nline2\n{{- end }}\n", "line1\nline2\n"),
    ]);
}

#[test]
fn unsupported_constructs_fail_with_position() {
    for (src, construct, line, column) in [
        ("{{ define \"x\" }}y{{ end }}", "{{define}}", 1, 1),
        ("ab\n  {{ template \"x\" }}", "{{template}}", 2, 3),
        ("{{ block \"x\" . }}{{ end }}", "{{block}}", 1, 1),
        ("{{ range .x }}{{ break }}{{ end }}", "{{break}}", 1, 15),
        ("{{ range .x }}{{ continue }}{{ end }}", "{{continue}}", 1, 15),
    ] {
        match Engine::new().check(src, Syntax::Go) {
            Err(TemplateError::Unsupported { construct: c, position }) => {
                assert_eq!(c, construct, "{src:?}");
                assert_eq!((position.line, position.column), (line, column), "{src:?}");
            }
            other => panic!("{src:?}: expected Unsupported, got {other:?}"),
        }
    }
}

#[test]
fn syntax_errors_have_positions() {
    for (src, fragment, line, column) in [
        ("{{ .uid ", "unclosed action", 1, 1),
        ("{{ if .uid }}x", "missing {{end}}", 1, 1),
        ("x\n{{ end }}", "unexpected {{end}}", 2, 1),
        ("{{ nosuchfn .uid }}", "function \"nosuchfn\" not defined", 1, 4),
        ("{{ \"unterminated }}", "unterminated quoted string", 1, 4),
        ("{{ .uid | }}", "missing value for command", 1, 9),
        ("{{ .uid .region }}", "can't give argument to non-function", 1, 4),
        ("{{ not 1 2 }}", "wrong number of args for not", 1, 4),
        ("{{/* x */ y }}", "comment ends before closing delimiter", 1, 1),
    ] {
        match Engine::new().check(src, Syntax::Go) {
            Err(TemplateError::Syntax { position, message }) => {
                assert!(message.contains(fragment), "{src:?}: {message}");
                assert_eq!((position.line, position.column), (line, column), "{src:?}: {message}");
            }
            other => panic!("{src:?}: expected Syntax, got {other:?}"),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Missing variables and forbidden functions

#[test]
fn printing_a_missing_variable_names_it() {
    let err = go_err("{{ .uid }}-{{ .tier }}");
    assert_eq!(err.to_string(), "template render error: undefined variable \"tier\"");
    let err = go_err("{{ upper .tier }}");
    assert!(err.to_string().contains("\"tier\""), "{err}");
    let err = Engine::new().render_str("{{ tier }}", Syntax::Jinja, &sample()).unwrap_err();
    assert!(err.to_string().contains("undefined variable \"tier\""), "{err}");
}

#[test]
fn missing_variables_are_handled_by_defaulting_functions() {
    assert_go(&[
        ("{{ .tier | default \"std\" }}", "std"),
        ("{{ empty .tier }}", "true"),
        ("{{ coalesce .tier .planId \"c\" }}", "c"),
        ("{{ hasKey . \"tier\" }} {{ hasKey . \"uid\" }}", "false true"),
        ("{{ index . \"tier\" | default \"i\" }}", "i"),
        ("{{ if .tier }}x{{ else }}y{{ end }}", "y"),
    ]);
}

#[test]
fn forbidden_functions_are_refused_in_both_syntaxes() {
    for name in ["env", "expandenv", "now", "randAlphaNum", "uuidv4", "genPrivateKey", "date"] {
        let go_src = format!("{{{{ {name} \"x\" }}}}");
        let err = Engine::new().render_str(&go_src, Syntax::Go, &sample()).unwrap_err();
        assert_eq!(err, TemplateError::Forbidden { function: name.to_owned() });
        assert!(err.to_string().contains("not allowed"), "{err}");
        let jinja_src = format!("{{{{ {name}(\"x\") }}}}");
        let err = Engine::new().render_str(&jinja_src, Syntax::Jinja, &sample()).unwrap_err();
        assert_eq!(err, TemplateError::Forbidden { function: name.to_owned() }, "{jinja_src}");
    }
    let err = Engine::new().render_str("{{ 'HOME' | env }}", Syntax::Jinja, &sample()).unwrap_err();
    assert_eq!(err, TemplateError::Forbidden { function: "env".to_owned() });
    assert!(TemplateError::Forbidden { function: "env".to_owned() }.to_string().contains("secrets"));
    assert!(TemplateError::Forbidden { function: "now".to_owned() }.to_string().contains("current time"));
}

// ------------------------------------------------------------------------------------------------
// Functions

#[test]
fn lynq_functions() {
    assert_go(&[
        ("{{ toHost .hostOrUrl }}", "acme.example.com"),
        ("{{ toHost \"http://example.com\" }}", "example.com"),
        ("{{ toHost \"example.com:8080\" }}", "example.com"),
        ("{{ toHost \"example.com\" }}", "example.com"),
        ("{{ toHost \"10.0.0.1:80\" }}", "10.0.0.1"),
        ("{{ toHost \"https://user:pw@host.io:443/x?y#z\" }}", "host.io"),
        ("{{ toHost \"http://[::1]:8080/\" }}", "::1"),
        ("{{ sha1sum \"abc\" }}", "a9993e364706816aba3e25717850c26c9cd0d89d"),
        ("{{ (fromJson .config).tier }}", "gold"),
        ("{{ fromJson \"not json\" }}", "map[]"),
        ("{{ len (fromJson \"{bad\") }}", "0"),
    ]);
    let long = "é".repeat(70);
    let out = Engine::new().render_str("{{ .s | trunc63 }}", Syntax::Go, &vars(&[("s", long.as_str())])).unwrap();
    assert_eq!(out.chars().count(), 63);
    assert_eq!(out, "é".repeat(63));
    assert_eq!(to_host("https://a.b.c"), "a.b.c");
}

#[test]
fn typed_functions_produce_markers() {
    let engine = Engine::new();
    let raw = |src: &str| engine.render_raw(src, Syntax::Go, &sample()).unwrap();
    assert_eq!(raw("{{ .replicas | int }}"), "__LYNQ_TYPE_INT__3");
    assert_eq!(raw("{{ int \"3.9\" }}"), "__LYNQ_TYPE_INT__3");
    assert_eq!(raw("{{ int \"abc\" }}"), "__LYNQ_TYPE_INT__0");
    assert_eq!(raw("{{ int true }}"), "__LYNQ_TYPE_INT__1");
    assert_eq!(raw("{{ int 2.7 }}"), "__LYNQ_TYPE_INT__2");
    assert_eq!(raw("{{ float \"1.5\" }}"), "__LYNQ_TYPE_FLOAT__1.5");
    assert_eq!(raw("{{ float \"x\" }}"), "__LYNQ_TYPE_FLOAT__0");
    assert_eq!(raw("{{ float 3 }}"), "__LYNQ_TYPE_FLOAT__3");
    assert_eq!(
        raw("{{ bool \"YES\" }} {{ bool \"on\" }} {{ bool \"0\" }} {{ bool 2 }}"),
        "__LYNQ_TYPE_BOOL__true __LYNQ_TYPE_BOOL__true __LYNQ_TYPE_BOOL__false __LYNQ_TYPE_BOOL__true"
    );
    // render_str never leaks marker text.
    assert_eq!(engine.render_str("n={{ int .replicas }}", Syntax::Go, &sample()).unwrap(), "n=3");
}

#[test]
fn sprig_defaults_and_flow() {
    assert_go(&[
        (
            "{{ default \"d\" \"\" }} {{ default \"d\" 0 }} {{ default \"d\" false }} {{ default \"d\" \"v\" }}",
            "d d d v",
        ),
        ("{{ default \"d\" (list) }} {{ default \"d\" (dict) }} {{ default \"d\" nil }}", "d d d"),
        ("{{ empty \"\" }} {{ empty \"a\" }} {{ empty 0 }} {{ empty (list 1) }}", "true false true false"),
        ("{{ coalesce \"\" 0 \"x\" }}", "x"),
        ("{{ ternary \"y\" \"n\" true }} {{ ternary \"y\" \"n\" false }}", "y n"),
    ]);
}

#[test]
fn sprig_strings() {
    assert_go(&[
        ("{{ quote \"a\" \"b\\\"\" }} {{ squote \"a\" }}", "\"a\" \"b\\\"\" 'a'"),
        (
            "{{ upper \"ab\" }} {{ lower \"AB\" }} {{ title \"hello wide-world\" }} {{ untitle \"Hello World\" }}",
            "AB ab Hello Wide-World hello world",
        ),
        (
            "[{{ trim \"  a \" }}] {{ trimAll \"$\" \"$$5$\" }} {{ trimPrefix \"a-\" \"a-b\" }} {{ trimSuffix \"-b\" \"a-b\" }}",
            "[a] 5 b a",
        ),
        ("{{ trunc 3 \"abcdef\" }} {{ trunc -2 \"abcdef\" }} {{ trunc 10 \"ab\" }}", "abc ef ab"),
        ("{{ replace \" \" \"-\" \"a b c\" }}", "a-b-c"),
        (
            "{{ contains \"b\" \"abc\" }} {{ hasPrefix \"a\" \"abc\" }} {{ hasSuffix \"c\" \"abc\" }} {{ hasPrefix \"c\" \"abc\" }}",
            "true true true false",
        ),
        (
            "{{ (split \"-\" \"a-b\")._1 }} {{ splitList \"-\" \"a-b-c\" }} {{ join \",\" (list \"a\" 1 nil) }}",
            "b [a b c] a,1",
        ),
        (
            "{{ repeat 3 \"ab\" }} {{ substr 1 3 \"hello\" }} {{ substr 2 -1 \"hello\" }} {{ abbrev 5 \"hello world\" }}",
            "ababab el llo he...",
        ),
        ("{{ nospace \" a b\\tc \" }} {{ plural \"one\" \"many\" 1 }} {{ plural \"one\" \"many\" 2 }}", "abc one many"),
        ("{{ indent 2 \"a\\nb\" }}|{{ nindent 2 \"a\" }}", "  a\n  b|\n  a"),
        ("{{ wrap 5 \"aaa bbb ccc\" }}", "aaa\nbbb\nccc"),
        (
            "{{ kebabcase \"FirstName\" }} {{ snakecase \"FirstName\" }} {{ camelcase \"first_name\" }}",
            "first-name first_name FirstName",
        ),
        ("{{ cat \"a\" 1 nil \"b\" }}", "a 1 b"),
        ("{{ print \"a\" 1 2 \"b\" }}|{{ println 1 \"a\" }}", "a1 2b|1 a\n"),
    ]);
}

#[test]
fn printf_verbs() {
    assert_go(&[
        ("{{ printf \"%s|%d|%v|%q\" \"s\" 42 (list 1 2) \"q\\\"\" }}", "s|42|[1 2]|\"q\\\"\""),
        (
            "{{ printf \"%5s|%-5s|%.2s|%05d|%+d|%x|%X|%o|%b\" \"ab\" \"ab\" \"abc\" 42 42 255 255 8 5 }}",
            "   ab|ab   |ab|00042|+42|ff|FF|10|101",
        ),
        (
            "{{ printf \"%f|%.2f|%e|%g|%8.3f\" 1.5 3.14159 1234.5678 0.00001 2.5 }}",
            "1.500000|3.14|1.234568e+03|1e-05|   2.500",
        ),
        (
            "{{ printf \"%x\" \"hi\" }} {{ printf \"%t\" true }} {{ printf \"%c\" 65 }} {{ printf \"%%\" }}",
            "6869 true A %",
        ),
        ("{{ printf \"%d\" \"x\" }} {{ printf \"%s\" 5 }}", "%!d(string=x) %!s(int=5)"),
        ("{{ printf \"%s %s\" \"a\" }} {{ printf \"%s\" \"a\" \"b\" }}", "a %!s(MISSING) a%!(EXTRA string=b)"),
        ("{{ printf \"%v %v\" 1000000.0 0.5 }}", "1e+06 0.5"),
    ]);
}

#[test]
fn sprig_encodings_and_hashes() {
    assert_go(&[
        ("{{ toJson (dict \"b\" (list 1 \"<x>\") \"a\" true) }}", r#"{"a":true,"b":[1,"\u003cx\u003e"]}"#),
        ("{{ toPrettyJson (dict \"a\" 1) }}", "{\n  \"a\": 1\n}"),
        ("{{ toYaml (dict \"a\" 1 \"b\" (list \"x\")) }}", "a: 1\nb:\n- x"),
        ("{{ b64enc \"hello\" }} {{ b64dec \"aGVsbG8=\" }}", "aGVsbG8= hello"),
        ("{{ sha256sum \"abc\" }}", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("{{ adler32sum \"Wikipedia\" }}", "300286872"),
        ("{{ toJson (fromJson .config) }}", r#"{"limits":{"cpu":2},"tags":["a","b"],"tier":"gold"}"#),
    ]);
    assert!(go_err("{{ b64dec \"%%%\" }}").to_string().contains("b64dec"));
}

#[test]
fn sprig_math() {
    assert_go(&[
        (
            "{{ add 1 2 3 }} {{ add1 .replicas }} {{ sub 5 7 }} {{ mul 2 3 4 }} {{ div 7 2 }} {{ mod 7 3 }}",
            "6 4 -2 24 3 1",
        ),
        ("{{ max 1 5 3 }} {{ min 4 2 9 }} {{ add \"2\" 1.9 }}", "5 2 3"),
        (
            "{{ atoi \"42\" }} {{ atoi \"x\" }} {{ int64 \"0x10\" }} {{ int64 \"3.00\" }} {{ float64 \"2.5\" }}",
            "42 0 16 3 2.5",
        ),
        ("{{ toString 5 }} {{ toStrings (list 1 \"a\") }}", "5 [1 a]"),
    ]);
    assert!(go_err("{{ div 1 0 }}").to_string().contains("divide by zero"));
}

#[test]
fn sprig_lists_and_dicts() {
    assert_go(&[
        ("{{ get (dict \"a\" 1) \"a\" }}|{{ get (dict \"a\" 1) \"zz\" }}", "1|"),
        ("{{ hasKey (dict \"a\" 1) \"a\" }} {{ hasKey (dict \"a\" 1) \"b\" }}", "true false"),
        ("{{ keys (dict \"b\" 1 \"a\" 2) }} {{ values (dict \"b\" 1 \"a\" 2) }}", "[a b] [2 1]"),
        (
            "{{ index (list 1 2 3) 1 }} {{ index (fromJson .config) \"limits\" \"cpu\" }} {{ index . \"uid\" }}",
            "2 2 acme",
        ),
        ("{{ len (list 1 2) }} {{ len \"héllo\" }} {{ len (dict \"a\" 1) }}", "2 5 1"),
        (
            "{{ first (list 1 2) }} {{ last (list 1 2) }} {{ append (list 1) 2 }} {{ uniq (list 1 1 2) }}",
            "1 2 [1 2] [1 2]",
        ),
        ("{{ has 2 (list 1 2) }} {{ has 5 (list 1 2) }} {{ sortAlpha (list \"b\" \"a\") }}", "true false [a b]"),
        ("{{ $c := fromJson .config }}{{ $_ := set $c \"tier\" \"x\" }}{{ $c.tier }}", "x"),
    ]);
    assert!(go_err("{{ index (list 1) 5 }}").to_string().contains("out of range"));
}

#[test]
fn sprig_regex() {
    assert_go(&[
        ("{{ regexMatch \"^[a-z]+$\" \"abc\" }} {{ regexMatch \"^[a-z]+$\" \"a1\" }}", "true false"),
        ("{{ regexFind \"[0-9]+\" \"ab12cd34\" }}", "12"),
        ("{{ regexReplaceAll \"a(x*)b\" \"-ab-axxb-\" \"${1}W\" }}", "-W-xxW-"),
        ("{{ regexSplit \"-+\" \"a--b-c\" -1 }} {{ regexSplit \"-\" \"a-b-c\" 2 }}", "[a b c] [a b-c]"),
    ]);
    assert!(go_err("{{ regexMatch \"(\" \"x\" }}").to_string().contains("invalid regular expression"));
}

#[test]
fn supported_functions_lists_everything() {
    let names = supported_functions();
    for name in ["toHost", "trunc63", "default", "printf", "regexSplit", "and", "index", "int", "toYaml"] {
        assert!(names.contains(&name), "{name}");
    }
    assert!(!names.contains(&"env"));
    assert!(names.windows(2).all(|w| w[0] <= w[1]));
}

// ------------------------------------------------------------------------------------------------
// Jinja syntax and Go ≡ Jinja equivalence

#[test]
fn jinja_syntax_has_the_library_as_functions_and_filters() {
    assert_eq!(jinja("{{ uid | trunc63 }}"), "acme");
    assert_eq!(jinja("{{ planId | default(\"basic\") }}"), "basic");
    assert_eq!(jinja("{{ tier | default(\"std\") }}"), "std");
    assert_eq!(jinja("{{ toHost(hostOrUrl) }}"), "acme.example.com");
    assert_eq!(jinja("{% for t in (config | fromJson).tags %}{{ t }}{% endfor %}"), "ab");
    assert_eq!(jinja("{{ [1, 2] | length }} {{ [3, 1] | max }}"), "2 3");
    assert_eq!(jinja("line\n"), "line\n");
    assert_eq!(jinja("{{ planId | default(\"basic\", true) }}|{{ uid | default(\"x\", true) }}"), "basic|acme");
    assert_eq!(jinja("{{ dict(a=1, b=uid) | toJson }}"), r#"{"a":1,"b":"acme"}"#);
}

#[test]
fn go_templates_render_like_their_jinja_equivalents() {
    let table = [
        ("{{ .uid }}-app", "{{ uid }}-app"),
        ("{{ .planId | default \"basic\" }}", "{{ planId | default(\"basic\") }}"),
        ("{{ .deployImage | default \"nginx:latest\" }}", "{{ deployImage | default(\"nginx:latest\") }}"),
        ("{{ .uid | trunc63 }}", "{{ uid | trunc63 }}"),
        ("{{ .uid | printf \"%s-%s\" .region }}", "{{ uid | printf(\"%s-%s\", region) }}"),
        ("{{ printf \"%s-%s\" .uid .region }}", "{{ printf(\"%s-%s\", uid, region) }}"),
        ("{{ .uid | upper | quote }}", "{{ uid | upper | quote }}"),
        ("{{ toHost .hostOrUrl }}", "{{ hostOrUrl | toHost }}"),
        ("{{ .uid | sha1sum | trunc 8 }}", "{{ uid | sha1sum | trunc(8) }}"),
        ("{{ replace \"-\" \"_\" .region }}", "{{ region | replace(\"-\", \"_\") }}"),
        (
            "{{ if eq .region \"eu-west\" }}eu{{ else }}other{{ end }}",
            "{% if region == \"eu-west\" %}eu{% else %}other{% endif %}",
        ),
        (
            "{{ range $i, $t := (fromJson .config).tags }}{{ $i }}{{ $t }}{{ end }}",
            "{% for t in (config | fromJson).tags %}{{ loop.index0 }}{{ t }}{% endfor %}",
        ),
        ("{{ with .region }}{{ . }}{{ end }}", "{% if region %}{{ region }}{% endif %}"),
        ("{{- if .planId }}paid{{- else }}free{{- end }}", "{%- if planId %}paid{%- else %}free{%- endif %}"),
        ("{{ .uid | b64enc }}", "{{ uid | b64enc }}"),
        ("{{ add1 .replicas }}", "{{ replicas | add1 }}"),
        ("{{ toJson (dict \"uid\" .uid) }}", "{{ dict(\"uid\", uid) | toJson }}"),
    ];
    for (go_src, jinja_src) in table {
        assert_eq!(go(go_src), jinja(jinja_src), "{go_src:?} vs {jinja_src:?}");
    }
}

#[test]
fn jinja_syntax_errors_have_positions() {
    match Engine::new().check("ok\n{% if x %}", Syntax::Jinja) {
        Err(TemplateError::Syntax { position, .. }) => assert_eq!(position.line, 2),
        other => panic!("expected Syntax, got {other:?}"),
    }
}

// ------------------------------------------------------------------------------------------------
// referenced_variables, check, cache

#[test]
fn referenced_variables_of_both_syntaxes() {
    let engine = Engine::new();
    let got = engine
        .referenced_variables(
            "{{ .uid }}{{ $.region }}{{ index . \"tier\" }}{{ range .items }}{{ .notRoot }}{{ end }}{{ hasKey . \"x\" }}",
            Syntax::Go,
        )
        .unwrap();
    let expected: BTreeSet<String> = ["uid", "region", "tier", "items", "x"].iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(got, expected);
    let got = engine
        .referenced_variables("{{ uid | upper }}{% if planId %}{{ toHost(host) }}{% endif %}", Syntax::Jinja)
        .unwrap();
    let expected: BTreeSet<String> = ["uid", "planId", "host"].iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(got, expected);
    assert!(engine.referenced_variables("plain", Syntax::Go).unwrap().is_empty());
}

#[test]
fn cache_compiles_each_template_once() {
    let engine = Engine::new();
    let clone = engine.clone();
    for _ in 0..3 {
        assert_eq!(engine.render_str("{{ .uid }}", Syntax::Go, &sample()).unwrap(), "acme");
        assert_eq!(clone.render_str("{{ .uid }}", Syntax::Go, &sample()).unwrap(), "acme");
    }
    assert_eq!(engine.compilations(), 1);
    engine.render_str("{{ .uid }}", Syntax::Jinja, &sample()).unwrap_err();
    assert_eq!(engine.compilations(), 2, "syntax is part of the cache key");
    let first = engine.compile("{{ .uid }}", Syntax::Go).unwrap();
    let second = engine.compile("{{ .uid }}", Syntax::Go).unwrap();
    assert!(Arc::ptr_eq(&first, &second));
}

#[test]
fn cache_is_bounded_and_evicted_templates_recompile() {
    let engine = Engine::with_cache_capacity(2);
    for src in ["{{ .uid }}1", "{{ .uid }}2", "{{ .uid }}3"] {
        engine.render_str(src, Syntax::Go, &sample()).unwrap();
    }
    assert_eq!(engine.inner.cache.lock().unwrap().len(), 2);
    assert!(engine.inner.env.read().unwrap().get_template("go:0").is_err(), "evicted template removed");
    assert_eq!(engine.render_str("{{ .uid }}1", Syntax::Go, &sample()).unwrap(), "acme1");
    assert_eq!(engine.compilations(), 4);
}

#[test]
fn engine_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Engine>();
    let engine = Engine::with_cache_capacity(2);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let src = format!("{{{{ .uid }}}}-{}", (i + t) % 6);
                    let out = engine.render_str(&src, Syntax::Go, &sample()).unwrap();
                    assert_eq!(out, format!("acme-{}", (i + t) % 6));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn syntax_serde_is_lowercase() {
    assert_eq!(serde_json::to_string(&Syntax::Jinja).unwrap(), "\"jinja\"");
    assert_eq!(serde_json::from_str::<Syntax>("\"go\"").unwrap(), Syntax::Go);
    assert_eq!(Syntax::default(), Syntax::Go);
}

// ------------------------------------------------------------------------------------------------
// render_object

#[test]
fn render_object_resolves_typed_markers() {
    let obj = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "{{ .uid }}-app",
            "labels": {"replicas": "{{ .replicas | int }}", "{{ .uid }}": "key-not-rendered"},
            "annotations": {"flag": "{{ bool \"yes\" }}"}
        },
        "spec": {
            "replicas": "{{ .replicas | int }}",
            "paused": "{{ bool \"false\" }}",
            "ratio": "{{ float \"0.5\" }}",
            "selector": {"matchLabels": {"n": "{{ int 7 }}"}},
            "template": {"spec": {
                "nodeSelector": {"zone": "{{ int 1 }}"},
                "containers": [{
                    "name": "app",
                    "image": "{{ .deployImage | default \"nginx:latest\" }}",
                    "args": ["{{ int 5 }}", "--n={{ int 5 }}"],
                    "ports": [{"containerPort": 8080}]
                }]
            }}
        }
    });
    let out = Engine::new().render_object(&obj, "Deployment", Syntax::Go, &sample()).unwrap();
    assert_eq!(out["metadata"]["name"], "acme-app");
    assert_eq!(out["metadata"]["labels"]["replicas"], "3");
    assert_eq!(out["metadata"]["labels"]["{{ .uid }}"], "key-not-rendered");
    assert_eq!(out["metadata"]["annotations"]["flag"], "true");
    assert_eq!(out["spec"]["replicas"], json!(3));
    assert_eq!(out["spec"]["paused"], json!(false));
    assert_eq!(out["spec"]["ratio"], json!(0.5));
    assert_eq!(out["spec"]["selector"]["matchLabels"]["n"], "7");
    let pod = &out["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["zone"], "1");
    assert_eq!(pod["containers"][0]["image"], "nginx:latest");
    assert_eq!(pod["containers"][0]["args"], json!([5, "--n=5"]));
    assert_eq!(pod["containers"][0]["ports"][0]["containerPort"], json!(8080));
}

#[test]
fn render_object_keeps_configmap_and_secret_data_as_strings() {
    let obj = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "data": {"replicas": "{{ int .replicas }}", "on": "{{ bool true }}"},
        "other": {"n": "{{ int .replicas }}"}
    });
    let out = Engine::new().render_object(&obj, "ConfigMap", Syntax::Go, &sample()).unwrap();
    assert_eq!(out["data"], json!({"replicas": "3", "on": "true"}));
    assert_eq!(out["other"]["n"], json!(3));
    let secret = json!({"kind": "Secret", "stringData": {"n": "{{ int 4 }}"}});
    let out = Engine::new().render_object(&secret, "Secret", Syntax::Go, &sample()).unwrap();
    assert_eq!(out["stringData"]["n"], "4");
    // `data` of other kinds is not special.
    let other = json!({"data": {"n": "{{ int 4 }}"}});
    let out = Engine::new().render_object(&other, "MyResource", Syntax::Go, &sample()).unwrap();
    assert_eq!(out["data"]["n"], json!(4));
}

#[test]
fn render_object_errors_name_the_json_path() {
    let obj = json!({"spec": {"template": {"spec": {"containers": [{"image": "{{ .image }}"}]}}}});
    let err = Engine::new().render_object(&obj, "Deployment", Syntax::Go, &sample()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("spec.template.spec.containers[0].image"), "{text}");
    assert!(text.contains("undefined variable \"image\""), "{text}");
}

#[test]
fn render_object_with_jinja_syntax() {
    let obj = json!({"spec": {"replicas": "{{ replicas | int }}", "name": "{{ uid }}"}});
    let out = Engine::new().render_object(&obj, "Deployment", Syntax::Jinja, &sample()).unwrap();
    assert_eq!(out, json!({"spec": {"replicas": 3, "name": "acme"}}));
}

#[test]
fn marker_resolution_rules() {
    use typed::{Resolved, resolve_whole, strip_markers};
    assert_eq!(resolve_whole("__LYNQ_TYPE_INT__42"), Resolved::Typed(json!(42)));
    assert_eq!(resolve_whole(" __LYNQ_TYPE_INT__-1\n"), Resolved::Typed(json!(-1)));
    assert_eq!(resolve_whole("__LYNQ_TYPE_FLOAT__1e+06"), Resolved::Typed(json!(1_000_000.0)));
    assert_eq!(resolve_whole("__LYNQ_TYPE_BOOL__true"), Resolved::Typed(json!(true)));
    assert_eq!(resolve_whole("x__LYNQ_TYPE_INT__42"), Resolved::NotMarker);
    assert_eq!(resolve_whole("__LYNQ_TYPE_INT__4__LYNQ_TYPE_INT__2"), Resolved::NotMarker);
    assert_eq!(resolve_whole("__LYNQ_TYPE_INT__4x"), Resolved::NotMarker);
    assert!(matches!(resolve_whole("__LYNQ_TYPE_FLOAT__NaN"), Resolved::Invalid(_)));
    assert_eq!(strip_markers("a-__LYNQ_TYPE_INT__4-__LYNQ_TYPE_BOOL__true"), "a-4-true");
}

#[test]
fn more_go_semantics() {
    assert_go(&[
        ("{{ range $a := list 1 2 }}{{ range $b := list 3 4 }}{{ $a }}{{ $b }} {{ end }}{{ end }}", "13 14 23 24 "),
        ("{{ range $i, $v := list \"x\" }}{{ $x := $v }}{{ $x }}{{ $i }}{{ end }}", "x0"),
        ("{{ printf \"%d\" (int64 .replicas) }}", "3"),
        ("{{ add1 (int .replicas) }} {{ mul (float \"1.5\") 2 }} {{ int (int 7) | add1 }}", "4 2 8"),
        ("a %} b }} c {{ .uid }}", "a %} b }} c acme"),
        ("{{ \"{% raw %}\" }}", "{% raw %}"),
        ("{{ .uid }}}} {{ if true }}}{{ end }}%}{{ .uid }}#}", "acme}} }%}acme#}"),
        ("{{ .uid }}\n", "acme\n"),
        ("{{ $m := dict \"k\" (list 1 2) }}{{ range $m.k }}{{ . }}{{ end }}", "12"),
        ("{{ if and (hasKey . \"region\") (ne .region \"\") }}{{ .region }}{{ end }}", "eu-west"),
    ]);
    let err = go_err("{{ range .uid }}{{ end }}");
    assert!(err.to_string().contains("range can't iterate over"), "{err}");
    let err = Engine::new().render_str("{{ nosuch(1) }}", Syntax::Jinja, &sample()).unwrap_err();
    assert!(err.to_string().contains("unknown function"), "{err}");
}

#[test]
fn typed_int_with_default_for_optional_fields() {
    let obj = json!({"spec": {"maxConnections": "{{ .maxConn | default \"10\" | int }}", "bad": "{{ int \"abc\" }}"}});
    let out = Engine::new().render_object(&obj, "Deployment", Syntax::Go, &sample()).unwrap();
    assert_eq!(out, json!({"spec": {"maxConnections": 10, "bad": 0}}));
}
