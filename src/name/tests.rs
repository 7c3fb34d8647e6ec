//! Docker's reference grammar as the spec: the cases of distribution/reference's
//! `reference_test.go` and `normalize_test.go`, as tables.

use super::grammar::{self, Parts};
use super::{Problem, Reference};

const F64: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

/// What distribution's `Parse` returns: the parts, or the error class.
#[derive(Debug, PartialEq, Eq)]
enum Want<'a> {
    Parts {
        domain: Option<&'a str>,
        path: &'a str,
        tag: Option<&'a str>,
        digest: Option<&'a str>,
    },
    Empty,
    /// `ErrReferenceInvalidFormat` (a bad tag included).
    Format,
    Uppercase,
    TooLong,
    /// `ErrDigestInvalidLength` and `ErrDigestUnsupported`.
    Digest,
}

fn class(result: Result<Parts<'_>, Problem>) -> Want<'_> {
    match result {
        Ok(p) => Want::Parts {
            domain: p.domain,
            path: p.path,
            tag: p.tag,
            digest: p.digest,
        },
        Err(Problem::Empty) => Want::Empty,
        Err(Problem::Format | Problem::Tag) => Want::Format,
        Err(Problem::Uppercase) => Want::Uppercase,
        Err(Problem::TooLong) => Want::TooLong,
        Err(Problem::Digest) => Want::Digest,
        Err(other) => panic!("Parse never says {other:?}"),
    }
}

fn ok<'a>(
    domain: Option<&'a str>,
    path: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
) -> Want<'a> {
    Want::Parts {
        domain,
        path,
        tag,
        digest,
    }
}

/// `TestReferenceParse`.
#[test]
fn grammar_matches_distributions_parse() {
    let sha = format!("sha256:{F64}");
    let d = Some(sha.as_str());
    let long_path = format!("{}a", "a/".repeat(126));
    let cases: Vec<(String, Want<'_>)> = vec![
        ("test_com".into(), ok(None, "test_com", None, None)),
        (
            "test.com:tag".into(),
            ok(None, "test.com", Some("tag"), None),
        ),
        (
            "test.com:5000".into(),
            ok(None, "test.com", Some("5000"), None),
        ),
        (
            "test.com/repo:tag".into(),
            ok(Some("test.com"), "repo", Some("tag"), None),
        ),
        (
            "test:5000/repo".into(),
            ok(Some("test:5000"), "repo", None, None),
        ),
        (
            "test:5000/repo:tag".into(),
            ok(Some("test:5000"), "repo", Some("tag"), None),
        ),
        (
            format!("test:5000/repo@{sha}"),
            ok(Some("test:5000"), "repo", None, d),
        ),
        (
            format!("test:5000/repo:tag@{sha}"),
            ok(Some("test:5000"), "repo", Some("tag"), d),
        ),
        ("".into(), Want::Empty),
        (":justtag".into(), Want::Format),
        (format!("@{sha}"), Want::Format),
        (format!("repo@sha256:{}", &F64[..34]), Want::Digest),
        (format!("validname@invaliddigest:{F64}"), Want::Digest),
        (format!("validname@sha512:{F64}{F64}"), Want::Digest),
        ("Uppercase:tag".into(), Want::Uppercase),
        ("test:5000/Uppercase/lowercase:tag".into(), Want::Uppercase),
        (
            "lowercase:Uppercase".into(),
            ok(None, "lowercase", Some("Uppercase"), None),
        ),
        (format!("domain/{}:tag", "a".repeat(256)), Want::TooLong),
        (
            format!("{}a:tag-puts-this-over-max", "a/".repeat(127)),
            ok(Some("a"), &long_path, Some("tag-puts-this-over-max"), None),
        ),
        ("aa/asdf$$^/aa".into(), Want::Format),
        (
            "sub-dom1.foo.com/bar/baz/quux".into(),
            ok(Some("sub-dom1.foo.com"), "bar/baz/quux", None, None),
        ),
        (
            "sub-dom1.foo.com/bar/baz/quux:some-long-tag".into(),
            ok(
                Some("sub-dom1.foo.com"),
                "bar/baz/quux",
                Some("some-long-tag"),
                None,
            ),
        ),
        (
            "b.gcr.io/test.example.com/my-app:test.example.com".into(),
            ok(
                Some("b.gcr.io"),
                "test.example.com/my-app",
                Some("test.example.com"),
                None,
            ),
        ),
        (
            "xn--n3h.com/myimage:xn--n3h.com".into(),
            ok(Some("xn--n3h.com"), "myimage", Some("xn--n3h.com"), None),
        ),
        (
            format!("xn--7o8h.com/myimage:xn--7o8h.com@{sha}"),
            ok(Some("xn--7o8h.com"), "myimage", Some("xn--7o8h.com"), d),
        ),
        (
            "foo_bar.com:8080".into(),
            ok(None, "foo_bar.com", Some("8080"), None),
        ),
        (
            "foo/foo_bar.com:8080".into(),
            ok(Some("foo"), "foo_bar.com", Some("8080"), None),
        ),
        ("192.168.1.1".into(), ok(None, "192.168.1.1", None, None)),
        (
            "192.168.1.1:tag".into(),
            ok(None, "192.168.1.1", Some("tag"), None),
        ),
        (
            "192.168.1.1:5000".into(),
            ok(None, "192.168.1.1", Some("5000"), None),
        ),
        (
            "192.168.1.1/repo".into(),
            ok(Some("192.168.1.1"), "repo", None, None),
        ),
        (
            "192.168.1.1:5000/repo".into(),
            ok(Some("192.168.1.1:5000"), "repo", None, None),
        ),
        (
            "192.168.1.1:5000/repo:5050".into(),
            ok(Some("192.168.1.1:5000"), "repo", Some("5050"), None),
        ),
        ("[2001:db8::1]".into(), Want::Format),
        ("[2001:db8::1]:5000".into(), Want::Format),
        ("[2001:db8::1]:tag".into(), Want::Format),
        (
            "[2001:db8::1]/repo".into(),
            ok(Some("[2001:db8::1]"), "repo", None, None),
        ),
        (
            "[2001:db8:1:2:3:4:5:6]/repo:tag".into(),
            ok(Some("[2001:db8:1:2:3:4:5:6]"), "repo", Some("tag"), None),
        ),
        (
            "[2001:db8::1]:5000/repo".into(),
            ok(Some("[2001:db8::1]:5000"), "repo", None, None),
        ),
        (
            "[2001:db8::1]:5000/repo:tag".into(),
            ok(Some("[2001:db8::1]:5000"), "repo", Some("tag"), None),
        ),
        (
            format!("[2001:db8::1]:5000/repo@{sha}"),
            ok(Some("[2001:db8::1]:5000"), "repo", None, d),
        ),
        (
            format!("[2001:db8::1]:5000/repo:tag@{sha}"),
            ok(Some("[2001:db8::1]:5000"), "repo", Some("tag"), d),
        ),
        (
            "[2001:db8::]:5000/repo".into(),
            ok(Some("[2001:db8::]:5000"), "repo", None, None),
        ),
        (
            "[::1]:5000/repo".into(),
            ok(Some("[::1]:5000"), "repo", None, None),
        ),
        ("[fe80::1%eth0]:5000/repo".into(), Want::Format),
        ("[fe80::1%@invalidzone]:5000/repo".into(), Want::Format),
    ];
    let long_ok = format!("example.com/{}:tag", "a".repeat(255));
    let long_want = ok(Some("example.com"), &long_ok[12..267], Some("tag"), None);
    for (input, want) in cases.iter().chain([(long_ok.clone(), long_want)].iter()) {
        assert_eq!(&class(grammar::split(input)), want, "{input:?}");
    }
}

/// `TestDomainAndPath` (through `WithName`, a name with no tag).
#[test]
fn domain_and_path() {
    for (input, domain, path) in [
        ("test.com/foo", Some("test.com"), "foo"),
        ("test_com/foo", None, "test_com/foo"),
        ("test:8080/foo", Some("test:8080"), "foo"),
        ("test.com:8080/foo", Some("test.com:8080"), "foo"),
        ("test-com:8080/foo", Some("test-com:8080"), "foo"),
        ("xn--n3h.com:18080/foo", Some("xn--n3h.com:18080"), "foo"),
    ] {
        assert_eq!(
            class(grammar::split(input)),
            ok(domain, path, None, None),
            "{input}"
        );
    }
}

/// `TestValidateReferenceName` and `TestValidateRemoteName`.
#[test]
fn normalized_names_valid_and_invalid() {
    let long_namespace = format!(
        "{}/docker",
        "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_".repeat(4)
    );
    let valid = [
        "docker/docker",
        "library/debian",
        "debian",
        "localhost/library/debian",
        "localhost/debian",
        "LOCALDOMAIN/library/debian",
        "LOCALDOMAIN/debian",
        "docker.io/docker/docker",
        "docker.io/library/debian",
        "docker.io/debian",
        "index.docker.io/docker/docker",
        "index.docker.io/library/debian",
        "index.docker.io/debian",
        "127.0.0.1:5000/docker/docker",
        "127.0.0.1:5000/library/debian",
        "127.0.0.1:5000/debian",
        "192.168.0.1",
        "192.168.0.1:80",
        "192.168.0.1:8/debian",
        "192.168.0.2:25000/debian",
        "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
        "[fc00::1]:5000/docker",
        "[fc00::1]:5000/docker/docker",
        "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
        "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
        "Docker/docker",
        "DOCKER/docker",
        "docker-rules/docker",
        "docker---rules/docker",
        "doc/docker",
        "d/docker",
        "jess/t",
        "dock__er/docker",
    ];
    for name in valid {
        assert!(Reference::parse(name).is_ok(), "{name} is valid");
    }
    let invalid = [
        "https://github.com/docker/docker",
        "docker/Docker",
        "-docker",
        "-docker/docker",
        "-docker.io/docker/docker",
        "docker///docker",
        "docker.io/docker/Docker",
        "docker.io/docker///docker",
        "[fc00::1]",
        "[fc00::1]:5000",
        "fc00::1:5000/debian",
        "[fe80::1%eth0]:5000/debian",
        "[2001:db8:3:4::192.0.2.33]:5000/debian",
        "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
        "docker-/docker",
        "-docker-/docker",
        "____/____",
        "_docker/_docker",
        "dock..er/docker",
        "dock_.er/docker",
        "dock-.er/docker",
        "docker/",
        &long_namespace,
    ];
    for name in invalid {
        assert!(Reference::parse(name).is_err(), "{name} is invalid");
    }
}

/// `TestParseRepositoryInfo`: every spelling of a name gives the same
/// full name, registry and repository.
#[test]
fn repository_info() {
    let cases: &[(&[&str], &str, &str, &str)] = &[
        // (spellings, full name, registry, repository)
        (&["localhost/fooo"], "localhost/fooo", "localhost", "fooo"),
        (
            &["localhost/fooo/bar"],
            "localhost/fooo/bar",
            "localhost",
            "fooo/bar",
        ),
        (
            &["LOCALDOMAIN/fooo"],
            "LOCALDOMAIN/fooo",
            "LOCALDOMAIN",
            "fooo",
        ),
        (
            &["LOCALDOMAIN/fooo/bar"],
            "LOCALDOMAIN/fooo/bar",
            "LOCALDOMAIN",
            "fooo/bar",
        ),
        (
            &["fooo/bar", "docker.io/fooo/bar", "index.docker.io/fooo/bar"],
            "docker.io/fooo/bar",
            "docker.io",
            "fooo/bar",
        ),
        (
            &["ubuntu", "docker.io/library/ubuntu", "library/ubuntu"],
            "docker.io/library/ubuntu",
            "docker.io",
            "library/ubuntu",
        ),
        (
            &["nonlibrary/ubuntu", "docker.io/nonlibrary/ubuntu"],
            "docker.io/nonlibrary/ubuntu",
            "docker.io",
            "nonlibrary/ubuntu",
        ),
        (
            &["other/library", "docker.io/other/library"],
            "docker.io/other/library",
            "docker.io",
            "other/library",
        ),
        (
            &["127.0.0.1:8000/private/moonbase"],
            "127.0.0.1:8000/private/moonbase",
            "127.0.0.1:8000",
            "private/moonbase",
        ),
        (
            &["127.0.0.1:8000/privatebase"],
            "127.0.0.1:8000/privatebase",
            "127.0.0.1:8000",
            "privatebase",
        ),
        (
            &["example.com/private/moonbase"],
            "example.com/private/moonbase",
            "example.com",
            "private/moonbase",
        ),
        (
            &["example.com/privatebase"],
            "example.com/privatebase",
            "example.com",
            "privatebase",
        ),
        (
            &["example.com:8000/private/moonbase"],
            "example.com:8000/private/moonbase",
            "example.com:8000",
            "private/moonbase",
        ),
        (
            &["example.com:8000/privatebasee"],
            "example.com:8000/privatebasee",
            "example.com:8000",
            "privatebasee",
        ),
        (
            &[
                "ubuntu-12.04-base",
                "docker.io/library/ubuntu-12.04-base",
                "index.docker.io/library/ubuntu-12.04-base",
            ],
            "docker.io/library/ubuntu-12.04-base",
            "docker.io",
            "library/ubuntu-12.04-base",
        ),
        (
            &["foo", "docker.io/library/foo", "docker.io/foo"],
            "docker.io/library/foo",
            "docker.io",
            "library/foo",
        ),
        (
            &["library/foo/bar", "docker.io/library/foo/bar"],
            "docker.io/library/foo/bar",
            "docker.io",
            "library/foo/bar",
        ),
        (
            &["store/foo/bar", "docker.io/store/foo/bar"],
            "docker.io/store/foo/bar",
            "docker.io",
            "store/foo/bar",
        ),
        (&["Foo/bar"], "Foo/bar", "Foo", "bar"),
        (&["FOO/bar"], "FOO/bar", "FOO", "bar"),
    ];
    for (spellings, full, registry, repository) in cases {
        for text in *spellings {
            let r = Reference::parse(text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                (r.to_string().as_str(), r.registry(), r.repository()),
                (*full, *registry, *repository),
                "{text}"
            );
        }
    }
}

/// `TestNormalizedSplitHostname`.
#[test]
fn normalized_registry_and_repository() {
    for (input, registry, repository) in [
        ("test.com/foo", "test.com", "foo"),
        ("test_com/foo", "docker.io", "test_com/foo"),
        ("docker/migrator", "docker.io", "docker/migrator"),
        ("test.com:8080/foo", "test.com:8080", "foo"),
        ("test-com:8080/foo", "test-com:8080", "foo"),
        ("foo", "docker.io", "library/foo"),
        ("xn--n3h.com/foo", "xn--n3h.com", "foo"),
        ("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo"),
        ("docker.io/foo", "docker.io", "library/foo"),
        ("docker.io/library/foo", "docker.io", "library/foo"),
        ("docker.io/library/foo/bar", "docker.io", "library/foo/bar"),
    ] {
        let r = Reference::parse(input).unwrap();
        assert_eq!(
            (r.registry(), r.repository()),
            (registry, repository),
            "{input}"
        );
    }
}

/// `TestParseReferenceWithTagAndDigest`, `TestParseAnyReference` and
/// `TestParseDockerRef`: the full form of every spelling (the tag is kept
/// as written: a build records the base as named).
#[test]
fn full_forms() {
    let dg = "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c";
    let cases = [
        ("redis", "docker.io/library/redis".to_string()),
        ("redis:latest", "docker.io/library/redis:latest".into()),
        (
            "docker.io/library/redis:latest",
            "docker.io/library/redis:latest".into(),
        ),
        ("dmcgowan/myapp", "docker.io/dmcgowan/myapp".into()),
        (
            "dmcgowan/myapp:latest",
            "docker.io/dmcgowan/myapp:latest".into(),
        ),
        (
            "docker.io/mcgowan/myapp:latest",
            "docker.io/mcgowan/myapp:latest".into(),
        ),
        ("library/busybox", "docker.io/library/busybox".into()),
        (
            "docker.io/busybox:latest",
            "docker.io/library/busybox:latest".into(),
        ),
        ("gcr.io/library/busybox", "gcr.io/library/busybox".into()),
    ];
    for (input, full) in cases {
        assert_eq!(
            Reference::parse(input).unwrap().to_string(),
            full,
            "{input}"
        );
    }
    for (input, full) in [
        (
            format!("redis@{dg}"),
            format!("docker.io/library/redis@{dg}"),
        ),
        (
            format!("dmcgowan/myapp@{dg}"),
            format!("docker.io/dmcgowan/myapp@{dg}"),
        ),
        (
            format!("busybox:latest@{dg}"),
            format!("docker.io/library/busybox:latest@{dg}"),
        ),
    ] {
        let r = Reference::parse(&input).unwrap();
        assert_eq!(r.to_string(), full);
        assert_eq!(r.identifier(), dg);
        assert_eq!(
            r.as_written(),
            input,
            "the familiar form is what was written"
        );
    }
}

#[test]
fn names_to_tag() {
    let r = Reference::parse_tag("hello").unwrap();
    assert_eq!(
        (r.as_written(), r.to_string()),
        (
            "hello:latest".into(),
            "docker.io/library/hello:latest".into()
        )
    );
    let r = Reference::parse_tag("127.0.0.1:5000/team/hello:v1").unwrap();
    assert_eq!(r.as_written(), "127.0.0.1:5000/team/hello:v1");
    assert_eq!(
        (r.registry(), r.repository(), r.tag()),
        ("127.0.0.1:5000", "team/hello", Some("v1"))
    );
    assert!(r.names_registry());
    assert!(!Reference::parse_tag("team/hello").unwrap().names_registry());
    assert!(Reference::parse_tag("localhost/x")
        .unwrap()
        .names_registry());
    let e = Reference::parse_tag(&format!("hello@sha256:{F64}")).unwrap_err();
    assert_eq!(e.problem, Problem::DigestNotTag);
    assert!(
        e.to_string()
            .starts_with("invalid image name \"hello@sha256:"),
        "{e}"
    );
}

/// What the three parsers this replaced disagreed on.
#[test]
fn former_disagreements() {
    // One accepted a '.' next to a '-'.
    assert_eq!(
        Reference::parse("a.-b").unwrap_err().problem,
        Problem::Format
    );
    assert!(Reference::parse_tag("a.-b").is_err());
    // Only one mapped the legacy Docker Hub name.
    assert_eq!(
        Reference::parse_tag("index.docker.io/alpine:3")
            .unwrap()
            .to_string(),
        "docker.io/library/alpine:3"
    );
    for bad in [
        "",
        "Python:3.12",
        "a b",
        "app:",
        "app@sha256:abc",
        "app:-x",
        "/app",
        "a//b",
        "app..x",
        "reg.io/a:t/b",
    ] {
        assert!(Reference::parse(bad).is_err(), "{bad:?}");
    }
    let e = Reference::parse("Python:3.12").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("invalid image reference \"Python:3.12\": "),
        "{e}"
    );
}

#[test]
fn suggests_the_nearest_valid_tag() {
    for (given, wanted) in [
        ("app:1.0 beta", Some("app:1.0-beta")),
        ("app:1.0+build.5", Some("app:1.0-build.5")),
        ("MyApp:v1", Some("myapp:v1")),
        (
            "127.0.0.1:5000/Team/App:1 2",
            Some("127.0.0.1:5000/team/app:1-2"),
        ),
        ("app:v1", None),
        ("a@b:c", None),
    ] {
        assert_eq!(Reference::suggest_tag(given).as_deref(), wanted, "{given}");
    }
}
