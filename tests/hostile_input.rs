//! Property tests over hostile or arbitrary input: the Dockerfile parser
//! round-trips what it accepts, layers are deterministic whatever the entry
//! order, and the parsers never panic.
use dockless::dockerfile::{self, Dockerfile};
use dockless::layer::{write_layer, EntryData, LayerEntry, LayerOptions};
use dockless::store::BlobStore;
use proptest::prelude::*;

/// `line: N` (instruction and ARG positions) → `line: _`: the rendered file
/// puts things on other lines, which is not part of the structure.
fn without_lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("line: ") {
        out.push_str(&rest[..i + 6]);
        rest = rest[i + 6..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push('_');
    }
    out.push_str(rest);
    out
}

/// The Dockerfile again, from the parsed structure: directives, global ARGs,
/// then per stage its FROM and each instruction's `original` text.
fn render(df: &Dockerfile) -> String {
    let mut s = String::new();
    if df.escape != '\\' {
        s.push_str(&format!("# escape={}\n", df.escape));
    }
    for a in &df.global_args {
        match &a.default {
            Some(d) => s.push_str(&format!("ARG {}={d}\n", a.name)),
            None => s.push_str(&format!("ARG {}\n", a.name)),
        }
    }
    for st in &df.stages {
        s.push_str("FROM ");
        if let Some(p) = &st.from.platform {
            s.push_str(&format!("--platform={p} "));
        }
        s.push_str(&st.from.image);
        if let Some(a) = &st.from.alias {
            s.push_str(&format!(" AS {a}"));
        }
        s.push('\n');
        for i in &st.instructions {
            s.push_str(&i.original);
            s.push('\n');
        }
    }
    s
}

fn structure(df: &Dockerfile) -> String {
    let mut v = Vec::new();
    v.push(format!("{:?} {:?}", df.escape, df.global_args));
    for st in &df.stages {
        v.push(format!("{:?}", st.from));
        for i in &st.instructions {
            v.push(format!("{:?} {}", i.kind, i.original));
        }
    }
    without_lines(&v.join("\n"))
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_./-]{0,8}",
        "\\$[A-Z]{1,3}",
        "\\$\\{[A-Z]{1,3}(:-[a-z]{0,3})?\\}",
        "\"[a-z ]{0,6}\"",
        "'[a-z $]{0,6}'",
        Just("--chown=1:2".to_string()),
        Just("--from=build".to_string()),
        Just("--chmod=755".to_string()),
        "[ -~]{1,6}",
    ]
}

fn words(n: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(word(), 1..n).prop_map(|w| w.join(" "))
}

fn instruction() -> impl Strategy<Value = String> {
    let kw = prop_oneof![
        Just("COPY"),
        Just("ADD"),
        Just("ENV"),
        Just("LABEL"),
        Just("ARG"),
        Just("WORKDIR"),
        Just("EXPOSE"),
        Just("USER"),
        Just("VOLUME"),
        Just("ENTRYPOINT"),
        Just("CMD"),
        Just("SHELL"),
        Just("STOPSIGNAL"),
        Just("HEALTHCHECK"),
        Just("ONBUILD"),
        Just("MAINTAINER"),
        Just("copy"),
        Just("Env"),
    ];
    let json = proptest::collection::vec("[a-z /$]{0,5}", 0..4).prop_map(|v| {
        let items: Vec<String> = v.iter().map(|s| format!("\"{s}\"")).collect();
        format!("[{}]", items.join(", "))
    });
    let args = prop_oneof![
        words(5),
        json,
        "[A-Z]{1,4}=[a-z\"' ]{0,5}( [A-Z]{1,4}=[a-z]{0,4})?",
        Just("CMD echo ok".to_string()),
        Just("NONE".to_string()),
        Just("--interval=5s CMD true".to_string()),
        Just("COPY a b".to_string()),
    ];
    (kw, args, any::<bool>()).prop_map(|(k, a, cont)| {
        if cont {
            // A continuation line and a comment inside it.
            format!("{k} \\\n# note\n  {a}")
        } else {
            format!("{k} {a}")
        }
    })
}

fn dockerfile_text() -> impl Strategy<Value = String> {
    let stage = (
        "[a-z]{1,6}(:[0-9]{1,2})?",
        proptest::option::of("[a-z]{1,5}"),
        proptest::collection::vec(instruction(), 0..6),
    )
        .prop_map(|(img, alias, ins)| {
            let mut s = format!("FROM {img}");
            if let Some(a) = alias {
                s.push_str(&format!(" AS {a}"));
            }
            s.push('\n');
            for i in ins {
                s.push_str(&i);
                s.push('\n');
            }
            s
        });
    (
        proptest::option::of("ARG [A-Z]{1,3}(=[a-z]{0,3})?\n"),
        proptest::collection::vec(stage, 1..3),
        any::<bool>(),
    )
        .prop_map(|(arg, stages, blank)| {
            let mut s = arg.unwrap_or_default();
            if blank {
                s.push_str("\n# comment\n\n");
            }
            s.push_str(&stages.concat());
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn dockerfile_that_parses_round_trips(text in dockerfile_text()) {
        if let Ok(df) = dockerfile::parse(&text, "Dockerfile") {
            let again = render(&df);
            let df2 = dockerfile::parse(&again, "Dockerfile")
                .map_err(|e| TestCaseError::fail(format!("re-parse of {again:?} failed: {e}")))?;
            prop_assert_eq!(structure(&df), structure(&df2), "rendered: {}", again);
        }
    }

    #[test]
    fn parsers_never_panic(text in "\\PC{0,200}") {
        let _ = dockerfile::parse(&text, "Dockerfile");
        let _ = dockerfile::expand_word(&text, '\\', &|_| Some("v".into()));
        let _ = dockless::remote::parse_www_authenticate(&text);
        if let Ok(ig) = dockless::context::DockerIgnore::parse(&text, ".dockerignore") {
            let _ = ig.is_excluded(&text);
        }
    }

    #[test]
    fn layer_digest_is_independent_of_entry_order(
        files in proptest::collection::btree_map("[a-z]{1,6}(/[a-z]{1,6})?", proptest::collection::vec(any::<u8>(), 0..64), 1..8),
        seed in any::<u64>(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlobStore::open(tmp.path().join("blobs")).unwrap();
        let mut entries = Vec::new();
        let mut dirs = std::collections::BTreeSet::new();
        for (i, (path, bytes)) in files.iter().enumerate() {
            if let Some((d, _)) = path.split_once('/') {
                if files.contains_key(d) {
                    continue; // a file and a folder of the same name
                }
                dirs.insert(d.to_string());
            }
            let src = tmp.path().join(format!("src{i}"));
            std::fs::write(&src, bytes).unwrap();
            entries.push(LayerEntry::file(path.clone(), src, bytes.len() as u64));
        }
        for d in dirs {
            entries.push(LayerEntry { path: d, mode: 0o755, uid: 0, gid: 0, mtime: None, data: EntryData::Dir });
        }
        let first = write_layer(&entries, &store, LayerOptions::default()).unwrap();
        // A seeded shuffle (Fisher–Yates with xorshift).
        let mut x = seed | 1;
        for i in (1..entries.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            entries.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let second = write_layer(&entries, &store, LayerOptions::default()).unwrap();
        prop_assert_eq!(first, second);
    }
}

#[test]
fn round_trip_examples() {
    for text in [
        "FROM a AS b\nCOPY --chown=1:2 x y\nENV A=1 B=\"two words\"\n",
        "ARG V=1\nFROM x:$V\nRUN [\"echo\", \"hi\"]\nCMD echo ok\n",
        "FROM a\nHEALTHCHECK --interval=5s CMD true\nONBUILD COPY a b\n",
    ] {
        let df = dockerfile::parse(text, "Dockerfile").unwrap();
        let df2 = dockerfile::parse(&render(&df), "Dockerfile").unwrap();
        assert_eq!(structure(&df), structure(&df2));
    }
}
