//! Tests of the config file: defaults, the shipped examples, every
//! validation error (each must name its key), parse errors (each must give a
//! line and column) and command-line overrides.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use floodwall::config::{
    Config, ConfigError, LimitConfig, LogFormat, Overrides, QueueOrder, RouteConfig, UpstreamConfig,
};

/// One upstream and one route; the base that most tests change one key of.
const MINIMAL: &str = r#"
[[upstreams]]
name = "api"
url = "http://127.0.0.1:3000"

[[routes]]
name = "all"
upstream = "api"
"#;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn uri(s: &str) -> http::Uri {
    s.parse().unwrap()
}

/// Parses `toml`, expects it to be refused, and returns the message.
fn error_of(toml: &str) -> String {
    match Config::from_toml_str(toml) {
        Ok(config) => panic!("expected an error, got {config:#?}"),
        Err(e) => e.to_string(),
    }
}

/// Asserts `message` contains every one of `parts`.
#[track_caller]
fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "expected {part:?} in the error message:\n{message}"
        );
    }
}

/// Checks that setting one key of a valid config is refused with a message
/// naming `key` and containing every one of `problem`.
#[track_caller]
fn assert_invalid(toml: &str, key: &str, problem: &[&str]) {
    let err = Config::from_toml_str(toml).expect_err("expected a validation error");
    let message = err.to_string();
    assert!(
        matches!(err, ConfigError::Invalid { .. }),
        "expected a validation error, got: {message}"
    );
    assert_eq!(err.key(), Some(key), "wrong key in: {message}");
    assert!(
        message.starts_with(&format!("{key}: ")),
        "message should start with the key {key:?}: {message}"
    );
    assert_mentions(&message, problem);
}

/// A minimal config with `section` (a TOML fragment) appended to the route.
fn with_route_tables(section: &str) -> String {
    format!("{MINIMAL}\n{section}\n")
}

/// A minimal config with `[server]` keys `keys`.
fn with_server(keys: &str) -> String {
    format!("[server]\n{keys}\n{MINIMAL}")
}

// ---------------------------------------------------------------- defaults

#[test]
fn minimal_config_gets_every_default() {
    let config = Config::from_toml_str(MINIMAL).unwrap();

    let s = &config.server;
    assert_eq!(s.listen, addr("127.0.0.1:8080"));
    assert_eq!(s.admin, addr("127.0.0.1:9464"));
    assert_eq!(s.drain_timeout, Duration::from_secs(30));
    assert_eq!(s.priority_header, "x-priority");
    assert_eq!(s.tenant_header, "x-tenant-id");
    assert_eq!(s.default_class, "interactive");
    assert_eq!(s.max_tenant_id_len, 128);
    assert_eq!(s.retry_after_max, Duration::from_secs(30));
    assert_eq!(s.header_read_timeout, Duration::from_secs(10));
    assert_eq!(s.state_file, None, "no state is written unless asked");
    assert_eq!(s.state_max_age, Duration::from_secs(15 * 60));

    assert_eq!(config.log.level, "info");
    assert_eq!(config.log.format, LogFormat::Text);

    let classes: Vec<(&str, f64)> = config
        .classes
        .iter()
        .map(|c| (c.name.as_str(), c.reserved))
        .collect();
    assert_eq!(classes, [("interactive", 0.5), ("batch", 0.0)]);

    let [up] = config.upstreams.as_slice() else {
        panic!("one upstream expected")
    };
    assert_eq!(up.name, "api");
    assert_eq!(up.url, Some(uri("http://127.0.0.1:3000")));
    assert_eq!(up.connect_timeout, Duration::from_secs(1));
    assert_eq!(up.response_timeout, Duration::from_secs(30));
    assert_eq!(up.pool_idle_timeout, Duration::from_secs(90));
    assert_eq!(up.pool_max_idle_per_host, 256);
    assert_eq!(up.pool_max_connecting, 8);

    let [route] = config.routes.as_slice() else {
        panic!("one route expected")
    };
    assert_eq!(route.name, "all");
    assert_eq!(route.path_prefix, "/");
    assert_eq!(route.host, None);
    assert_eq!(route.upstream, "api");
    assert_eq!(route.class, None);
    assert_eq!(route.limit, LimitConfig::default());
    assert_eq!(route.limit.algorithm(), "aimd", "adaptive is the default");
    assert_eq!(route.queue.capacity, 0);
    assert_eq!(route.queue.timeout, Duration::from_millis(100));
    assert_eq!(route.queue.order, QueueOrder::Fifo);
    assert_eq!(route.tenant.max_share, 1.0);
    assert_eq!(route.tenant.contention_window, Duration::from_secs(1));
}

#[test]
fn every_key_is_read() {
    let config = Config::from_toml_str(
        r#"
[server]
listen = "0.0.0.0:80"
admin = "127.0.0.1:9000"
drain_timeout = "5s"
priority_header = "X-Class"
tenant_header = "x-customer"
default_class = "low"
max_tenant_id_len = 1024
retry_after_max = "2m"
header_read_timeout = "250ms"

[log]
level = "debug"
format = "json"

[[classes]]
name = "high"
reserved = 1

[[classes]]
name = "low"

[[upstreams]]
name = "api"
url = "http://api.internal"
connect_timeout = "250ms"
response_timeout = "1m"
pool_idle_timeout = "10s"
pool_max_idle_per_host = 0

[[routes]]
name = "r"
path_prefix = "/v1/"
host = "example.com:8443"
upstream = "api"
class = "high"
limit = { algorithm = "fixed", value = 1 }
queue = { capacity = 10, timeout = "1s", order = "adaptive_lifo" }
tenant = { max_share = 0.5, contention_window = "500ms" }
"#,
    )
    .unwrap();

    let s = &config.server;
    assert_eq!(s.listen, addr("0.0.0.0:80"));
    assert_eq!(s.admin, addr("127.0.0.1:9000"));
    assert_eq!(s.drain_timeout, Duration::from_secs(5));
    assert_eq!(s.priority_header, "X-Class");
    assert_eq!(s.tenant_header, "x-customer");
    assert_eq!(s.default_class, "low");
    assert_eq!(s.max_tenant_id_len, 1024);
    assert_eq!(s.retry_after_max, Duration::from_secs(120));
    assert_eq!(s.header_read_timeout, Duration::from_millis(250));
    assert_eq!(config.log.level, "debug");
    assert_eq!(config.log.format, LogFormat::Json);

    assert_eq!(config.classes.len(), 2);
    assert_eq!(
        config.classes[0].reserved, 1.0,
        "an integer is a valid share"
    );
    assert_eq!(config.classes[1].reserved, 0.0, "reserved defaults to 0");

    let up = &config.upstreams[0];
    assert_eq!(up.url, Some(uri("http://api.internal")));
    assert_eq!(up.connect_timeout, Duration::from_millis(250));
    assert_eq!(up.response_timeout, Duration::from_secs(60));
    assert_eq!(up.pool_idle_timeout, Duration::from_secs(10));
    assert_eq!(up.pool_max_idle_per_host, 0);

    let route = &config.routes[0];
    assert_eq!(route.path_prefix, "/v1/");
    assert_eq!(route.host.as_deref(), Some("example.com:8443"));
    assert_eq!(route.class.as_deref(), Some("high"));
    assert_eq!(route.limit, LimitConfig::Fixed { value: 1 });
    assert_eq!(route.queue.capacity, 10);
    assert_eq!(route.queue.timeout, Duration::from_secs(1));
    assert_eq!(route.queue.order, QueueOrder::AdaptiveLifo);
    assert_eq!(route.tenant.max_share, 0.5);
    assert_eq!(route.tenant.contention_window, Duration::from_millis(500));
}

#[test]
fn limit_value_defaults_when_only_the_algorithm_is_given() {
    let config =
        Config::from_toml_str(&with_route_tables("[routes.limit]\nalgorithm = \"fixed\"")).unwrap();
    assert_eq!(config.routes[0].limit, LimitConfig::Fixed { value: 64 });
}

#[test]
fn simple_builds_one_default_upstream_and_route() {
    let config = Config::simple(
        addr("0.0.0.0:8000"),
        uri("http://10.1.2.3:9000"),
        12,
        addr("127.0.0.1:9999"),
    );
    config.validate().unwrap();

    assert_eq!(config.server.listen, addr("0.0.0.0:8000"));
    assert_eq!(config.server.admin, addr("127.0.0.1:9999"));
    assert_eq!(config.server.drain_timeout, Duration::from_secs(30));
    assert_eq!(config.classes.len(), 2);
    assert_eq!(
        config.upstreams,
        [UpstreamConfig::new("default", uri("http://10.1.2.3:9000"))]
    );
    assert_eq!(
        config.routes,
        [RouteConfig {
            limit: LimitConfig::Fixed { value: 12 },
            ..RouteConfig::new("default", "default")
        }]
    );
    assert_eq!(config.routes[0].path_prefix, "/");
}

#[test]
fn simple_is_refused_by_validate_when_its_arguments_are_bad() {
    let config = Config::simple(
        addr("127.0.0.1:8080"),
        uri("http://a:1"),
        0,
        addr("127.0.0.1:9464"),
    );
    let message = config.validate().unwrap_err().to_string();
    assert_mentions(&message, &["routes[0].limit.value", "at least 1"]);
}

// ---------------------------------------------------------------- examples

#[test]
fn every_example_validates() {
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(e) = Config::load(&path) {
                panic!("{} does not load: {e}", path.display());
            }
            checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    checked.sort();
    assert!(
        checked.iter().any(|f| f == "minimal.toml") && checked.iter().any(|f| f == "full.toml"),
        "examples/minimal.toml and examples/full.toml must exist; found {checked:?}"
    );
}

#[test]
fn full_example_sets_more_than_the_defaults() {
    let config = Config::load(&examples_dir().join("full.toml")).unwrap();
    assert_eq!(config.routes.len(), 2);
    assert!(config.upstreams.len() >= 2);
    assert!(config.classes.len() >= 2);
    assert!(config.routes.iter().any(|r| r.queue.capacity > 0));
    assert!(config.routes.iter().any(|r| r.tenant.max_share < 1.0));
    assert!(config.routes.iter().any(|r| r.host.is_some()));
    assert!(config.routes.iter().any(|r| r.class.is_some()));
    assert_eq!(config.log.format, LogFormat::Json);
}

// ---------------------------------------------------------------- parse errors

#[test]
fn unknown_key_is_refused_with_its_name_and_position() {
    let message = error_of(&format!("[server]\nlisen = \"0.0.0.0:80\"\n{MINIMAL}"));
    assert_mentions(&message, &["lisen", "line 2", "column 1", "unknown field"]);
}

#[test]
fn unknown_key_in_a_nested_table_is_refused() {
    let message = error_of(&with_route_tables("[routes.queue]\ncapacity = 1\nsize = 3"));
    assert_mentions(&message, &["size", "line", "column", "unknown field"]);
}

#[test]
fn unknown_key_in_the_limit_table_is_refused() {
    let message = error_of(&with_route_tables(
        "[routes.limit]\nalgorithm = \"fixed\"\nvalue = 3\nmax = 10",
    ));
    assert_mentions(&message, &["max", "line", "unknown field"]);
}

#[test]
fn unknown_limit_algorithm_is_refused() {
    let message = error_of(&with_route_tables(
        "[routes.limit]\nalgorithm = \"bogus\"\nvalue = 3",
    ));
    assert_mentions(&message, &["bogus", "fixed", "aimd", "line"]);
}

#[test]
fn a_key_of_another_algorithm_is_refused_by_name() {
    let message = error_of(&with_route_tables(
        "[routes.limit]\nalgorithm = \"aimd\"\nsmoothing = 0.5",
    ));
    assert_mentions(&message, &["routes[0].limit.smoothing", "gradient"]);
    let message = error_of(&with_route_tables(
        "[routes.limit]\nalgorithm = \"vegas\"\nvalue = 3",
    ));
    assert_mentions(&message, &["value", "line"]);
}

#[test]
fn adaptive_limits_are_validated_by_key() {
    let message = error_of(&with_route_tables(
        "[routes.limit]\nalgorithm = \"gradient\"\nmin = 50\nmax = 10",
    ));
    assert_mentions(&message, &["routes[0].limit."]);
    let message = error_of(&with_route_tables(
        "[routes.limit]\nalgorithm = \"wip\"\nbaseline = \"soon\"",
    ));
    assert_mentions(&message, &["routes[0].limit.baseline", "probe"]);
    let message = error_of(&with_route_tables(
        "[routes.limit]\nalgorithm = \"aimd\"\nprobe_shift = 0.9",
    ));
    assert_mentions(&message, &["routes[0].limit.probe_shift", "above 1.0"]);
    let message = error_of(&with_route_tables(
        "[routes.limit]\nalgorithm = \"aimd\"\nbaseline = \"20ms\"\nprobe_shift = 1.5",
    ));
    assert_mentions(
        &message,
        &["routes[0].limit.probe_shift", "only with baseline"],
    );
    for algorithm in ["fixed", "aimd", "gradient", "vegas", "wip"] {
        let config = Config::from_toml_str(&with_route_tables(&format!(
            "[routes.limit]\nalgorithm = \"{algorithm}\""
        )))
        .unwrap();
        assert_eq!(config.routes[0].limit.algorithm(), algorithm);
    }
}

#[test]
fn syntax_error_gives_line_and_column() {
    let message = error_of("[server]\nlisten = \"0.0.0.0:80\nadmin = 1\n");
    assert_mentions(&message, &["cannot parse config", "line 2", "column"]);
}

#[test]
fn wrong_type_gives_the_key_line() {
    let message = error_of(&format!(
        "[server]\nmax_tenant_id_len = \"long\"\n{MINIMAL}"
    ));
    assert_mentions(&message, &["line 2", "max_tenant_id_len"]);
}

#[test]
fn bad_duration_is_refused_with_its_position() {
    let message = error_of(&format!(
        "[server]\ndrain_timeout = \"30 parsecs\"\n{MINIMAL}"
    ));
    assert_mentions(&message, &["line 2", "drain_timeout"]);
}

#[test]
fn bad_enum_values_are_refused() {
    let message = error_of(&format!("[log]\nformat = \"xml\"\n{MINIMAL}"));
    assert_mentions(&message, &["xml", "text", "json", "line 2"]);

    let message = error_of(&with_route_tables("[routes.queue]\norder = \"lifo\""));
    assert_mentions(&message, &["lifo", "adaptive_lifo", "line"]);
}

#[test]
fn unparsable_url_names_the_url_and_its_line() {
    let message = error_of(
        "[[upstreams]]\nname = \"api\"\nurl = \"http://bad host\"\n\n\
         [[routes]]\nname = \"r\"\nupstream = \"api\"\n",
    );
    assert_mentions(
        &message,
        &["line 3", "url", "invalid upstream url", "bad host"],
    );
}

#[test]
fn load_names_the_file_in_parse_errors() {
    let dir = TempDir::new("parse");
    let path = dir.write("bad.toml", "[server]\nlisen = 1\n");
    let err = Config::load(&path).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ConfigError::Parse { .. }), "{message}");
    assert_mentions(&message, &[&path.display().to_string(), "lisen", "line 2"]);
}

#[test]
fn load_names_the_file_in_validation_errors() {
    let dir = TempDir::new("invalid");
    let path = dir.write(
        "bad.toml",
        &with_route_tables("[routes.limit]\nalgorithm = \"fixed\"\nvalue = 0"),
    );
    let err = Config::load(&path).unwrap_err();
    assert_eq!(err.key(), Some("routes[0].limit.value"));
    assert_mentions(
        &err.to_string(),
        &[
            &path.display().to_string(),
            "routes[0].limit.value: must be at least 1 (got 0)",
        ],
    );
}

#[test]
fn load_names_the_file_it_cannot_read() {
    let dir = TempDir::new("missing");
    let path = dir.path.join("nope.toml");
    let err = Config::load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert_mentions(
        &err.to_string(),
        &["cannot read config file", &path.display().to_string()],
    );
}

// ---------------------------------------------------------------- validation

#[test]
fn at_least_one_upstream_is_required() {
    assert_invalid(
        "[[routes]]\nname = \"r\"\nupstream = \"api\"\n",
        "upstreams",
        &["at least one"],
    );
}

#[test]
fn at_least_one_route_is_required() {
    assert_invalid(
        "[[upstreams]]\nname = \"api\"\nurl = \"http://a:1\"\n",
        "routes",
        &["at least one"],
    );
}

#[test]
fn at_least_one_class_is_required() {
    assert_invalid(
        &format!("classes = []\n{MINIMAL}"),
        "classes",
        &["at least one"],
    );
}

#[test]
fn upstream_names_are_unique() {
    assert_invalid(
        &format!("{MINIMAL}\n[[upstreams]]\nname = \"api\"\nurl = \"http://b:2\"\n"),
        "upstreams[1].name",
        &["\"api\"", "more than once"],
    );
}

#[test]
fn route_names_are_unique() {
    assert_invalid(
        &format!(
            "{MINIMAL}\n[[routes]]\nname = \"all\"\npath_prefix = \"/x\"\nupstream = \"api\"\n"
        ),
        "routes[1].name",
        &["\"all\"", "more than once"],
    );
}

#[test]
fn class_names_are_unique() {
    assert_invalid(
        &format!(
            "[[classes]]\nname = \"interactive\"\n[[classes]]\nname = \"interactive\"\n{MINIMAL}"
        ),
        "classes[1].name",
        &["\"interactive\"", "more than once"],
    );
}

#[test]
fn names_must_not_be_empty() {
    assert_invalid(
        "[[upstreams]]\nname = \"\"\nurl = \"http://a:1\"\n[[routes]]\nname = \"r\"\nupstream = \"\"\n",
        "upstreams[0].name",
        &["must not be empty"],
    );
}

#[test]
fn names_are_limited_to_label_safe_characters() {
    assert_invalid(
        &MINIMAL.replace("name = \"all\"", "name = \"all routes\""),
        "routes[0].name",
        &["\"all routes\"", "' '", "letters, digits"],
    );
    assert_invalid(
        &format!("[[classes]]\nname = \"gold\\\"\"\n[server]\ndefault_class = \"gold\"\n{MINIMAL}"),
        "classes[0].name",
        &["letters, digits"],
    );
    // Every allowed character at once.
    Config::from_toml_str(&MINIMAL.replace("name = \"all\"", "name = \"A-z_0.9\"")).unwrap();
}

#[test]
fn class_reserved_is_a_fraction() {
    let classes = "[[classes]]\nname = \"interactive\"\nreserved = 1.5\n";
    assert_invalid(
        &format!("{classes}{MINIMAL}"),
        "classes[0].reserved",
        &["between 0.0 and 1.0", "1.5"],
    );
    let classes = "[[classes]]\nname = \"interactive\"\nreserved = -0.1\n";
    assert_invalid(
        &format!("{classes}{MINIMAL}"),
        "classes[0].reserved",
        &["between 0.0 and 1.0", "-0.1"],
    );
    let classes = "[[classes]]\nname = \"interactive\"\nreserved = nan\n";
    assert_invalid(
        &format!("{classes}{MINIMAL}"),
        "classes[0].reserved",
        &["NaN"],
    );
}

#[test]
fn class_reserved_shares_add_up_to_at_most_one() {
    let classes = "[[classes]]\nname = \"interactive\"\nreserved = 0.7\n\
                   [[classes]]\nname = \"batch\"\nreserved = 0.5\n";
    assert_invalid(
        &format!("{classes}{MINIMAL}"),
        "classes",
        &["reserved shares add up to 1.20, must be at most 1.0"],
    );
}

#[test]
fn class_reserved_shares_of_exactly_one_are_allowed_despite_rounding() {
    // 0.6 + 0.3 + 0.1 is 1.0000000000000002 in f64.
    let classes = "[[classes]]\nname = \"interactive\"\nreserved = 0.6\n\
                   [[classes]]\nname = \"b\"\nreserved = 0.3\n\
                   [[classes]]\nname = \"c\"\nreserved = 0.1\n";
    Config::from_toml_str(&format!("{classes}{MINIMAL}")).unwrap();
}

#[test]
fn default_class_must_exist() {
    assert_invalid(
        &with_server("default_class = \"gold\""),
        "server.default_class",
        &[
            "server.default_class: no class named \"gold\"",
            "\"interactive\", \"batch\"",
        ],
    );
}

#[test]
fn default_class_must_exist_when_classes_are_replaced() {
    // Replacing the classes drops "interactive", the default default_class.
    assert_invalid(
        &format!("[[classes]]\nname = \"gold\"\n{MINIMAL}"),
        "server.default_class",
        &["no class named \"interactive\"", "known: \"gold\""],
    );
}

#[test]
fn route_class_must_exist() {
    assert_invalid(
        &MINIMAL.replace("upstream = \"api\"", "upstream = \"api\"\nclass = \"gold\""),
        "routes[0].class",
        &["no class named \"gold\""],
    );
}

#[test]
fn route_upstream_must_exist() {
    assert_invalid(
        &format!(
            "{MINIMAL}\n[[routes]]\nname = \"db\"\npath_prefix = \"/db\"\nupstream = \"db\"\n"
        ),
        "routes[1].upstream",
        &["routes[1].upstream: no upstream named \"db\" (known: \"api\")"],
    );
}

#[test]
fn path_prefix_starts_with_a_slash() {
    assert_invalid(
        &MINIMAL.replace(
            "upstream = \"api\"",
            "upstream = \"api\"\npath_prefix = \"api/\"",
        ),
        "routes[0].path_prefix",
        &["must start with '/'", "\"api/\""],
    );
}

#[test]
fn path_prefix_has_no_query() {
    assert_invalid(
        &MINIMAL.replace(
            "upstream = \"api\"",
            "upstream = \"api\"\npath_prefix = \"/a?b=1\"",
        ),
        "routes[0].path_prefix",
        &["without query"],
    );
}

#[test]
fn routes_with_the_same_match_are_refused() {
    assert_invalid(
        &format!("{MINIMAL}\n[[routes]]\nname = \"shadowed\"\nupstream = \"api\"\n"),
        "routes[1].path_prefix",
        &["routes[0]", "never match"],
    );
    // The same prefix on another host is a different match.
    Config::from_toml_str(&format!(
        "{MINIMAL}\n[[routes]]\nname = \"other\"\nhost = \"b.example\"\nupstream = \"api\"\n"
    ))
    .unwrap();
}

#[test]
fn route_host_must_be_a_host() {
    assert_invalid(
        &MINIMAL.replace("upstream = \"api\"", "upstream = \"api\"\nhost = \"a b\""),
        "routes[0].host",
        &["must be a host name", "\"a b\""],
    );
}

#[test]
fn header_names_must_be_valid() {
    assert_invalid(
        &with_server("priority_header = \"x priority\""),
        "server.priority_header",
        &["not a valid HTTP header name", "\"x priority\""],
    );
    assert_invalid(
        &with_server("tenant_header = \"\""),
        "server.tenant_header",
        &["not a valid HTTP header name"],
    );
}

#[test]
fn priority_and_tenant_headers_differ() {
    assert_invalid(
        &with_server("priority_header = \"X-Who\"\ntenant_header = \"x-who\""),
        "server.tenant_header",
        &["must differ from server.priority_header", "x-who"],
    );
}

#[test]
fn limit_value_is_at_least_one() {
    let toml = format!(
        "{MINIMAL}\n[[routes]]\nname = \"two\"\npath_prefix = \"/two\"\nupstream = \"api\"\n\
         limit = {{ algorithm = \"fixed\", value = 0 }}\n"
    );
    assert_invalid(
        &toml,
        "routes[1].limit.value",
        &["routes[1].limit.value: must be at least 1 (got 0)"],
    );
}

#[test]
fn queue_timeout_is_positive_when_there_is_a_queue() {
    assert_invalid(
        &with_route_tables("[routes.queue]\ncapacity = 5\ntimeout = \"0s\""),
        "routes[0].queue.timeout",
        &["greater than 0", "capacity"],
    );
    // Without a queue the timeout is never used, so 0 is fine.
    Config::from_toml_str(&with_route_tables(
        "[routes.queue]\ncapacity = 0\ntimeout = \"0s\"",
    ))
    .unwrap();
}

#[test]
fn tenant_max_share_is_in_zero_to_one() {
    for share in ["0.0", "1.5", "-1.0", "nan"] {
        assert_invalid(
            &with_route_tables(&format!("[routes.tenant]\nmax_share = {share}")),
            "routes[0].tenant.max_share",
            &["greater than 0 and at most 1.0"],
        );
    }
    Config::from_toml_str(&with_route_tables("[routes.tenant]\nmax_share = 0.01")).unwrap();
}

#[test]
fn tenant_contention_window_is_positive() {
    assert_invalid(
        &with_route_tables("[routes.tenant]\ncontention_window = \"0s\""),
        "routes[0].tenant.contention_window",
        &["greater than 0"],
    );
}

#[test]
fn max_tenant_id_len_is_between_1_and_1024() {
    assert_invalid(
        &with_server("max_tenant_id_len = 0"),
        "server.max_tenant_id_len",
        &["between 1 and 1024", "got 0"],
    );
    assert_invalid(
        &with_server("max_tenant_id_len = 1025"),
        "server.max_tenant_id_len",
        &["between 1 and 1024", "got 1025"],
    );
    Config::from_toml_str(&with_server("max_tenant_id_len = 1")).unwrap();
}

#[test]
fn server_timeouts_are_positive() {
    for key in ["drain_timeout", "header_read_timeout"] {
        assert_invalid(
            &with_server(&format!("{key} = \"0s\"")),
            &format!("server.{key}"),
            &["greater than 0"],
        );
    }
}

#[test]
fn retry_after_max_is_at_least_a_second() {
    assert_invalid(
        &with_server("retry_after_max = \"500ms\""),
        "server.retry_after_max",
        &["at least 1s", "500ms"],
    );
}

#[test]
fn upstream_timeouts_are_positive() {
    for key in ["connect_timeout", "response_timeout", "pool_idle_timeout"] {
        assert_invalid(
            &MINIMAL.replace(
                "url = \"http://127.0.0.1:3000\"",
                &format!("url = \"http://127.0.0.1:3000\"\n{key} = \"0ms\""),
            ),
            &format!("upstreams[0].{key}"),
            &["greater than 0"],
        );
    }
}

#[test]
fn a_state_file_must_name_a_file() {
    for path in ["", "/var/lib/floodwall/..", "/"] {
        let toml = with_server(&format!("state_file = {path:?}"));
        assert_invalid(&toml, "server.state_file", &["must name a file"]);
    }
    let ok =
        Config::from_toml_str(&with_server("state_file = \"/var/lib/floodwall/state\"")).unwrap();
    assert_eq!(
        ok.server.state_file.as_deref(),
        Some(std::path::Path::new("/var/lib/floodwall/state"))
    );
}

#[test]
fn listen_and_admin_differ() {
    assert_invalid(
        &with_server("listen = \"127.0.0.1:9000\"\nadmin = \"127.0.0.1:9000\""),
        "server.admin",
        &["must differ from server.listen"],
    );
    // Port 0 means "any free port", so both may ask for it.
    Config::from_toml_str(&with_server(
        "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"",
    ))
    .unwrap();
}

#[test]
fn log_level_must_be_a_filter_directive() {
    assert_invalid(
        &format!("[log]\nlevel = \"floodwall=loud\"\n{MINIMAL}"),
        "log.level",
        &["not a valid filter directive", "floodwall=loud"],
    );
}

fn with_url(url: &str) -> String {
    MINIMAL.replace("http://127.0.0.1:3000", url)
}

#[test]
fn https_upstream_is_accepted_with_the_same_rules() {
    Config::from_toml_str(&with_url("https://api.example.com")).unwrap();
    Config::from_toml_str(&with_url("https://10.0.0.1:8443")).unwrap();
    assert_invalid(
        &with_url("https://api.example.com/v1"),
        "upstreams[0].url",
        &["must not have a path or query"],
    );
}

#[test]
fn upstream_url_must_be_plain_http_to_a_host() {
    let cases = [
        ("127.0.0.1:3000", "must start with http:// or https://"),
        ("ftp://a:21", "scheme must be http:// or https://"),
        ("/just/a/path", "must start with http://"),
        ("http://a:0", "port must not be 0"),
        ("http://a:1/v1", "must not have a path or query"),
        ("http://a:1/?x=1", "must not have a path or query"),
        ("http://user:pw@a:1", "credentials"),
    ];
    for (url, problem) in cases {
        assert_invalid(&with_url(url), "upstreams[0].url", &[problem, url]);
    }
    for url in [
        "http://a",
        "http://a/",
        "http://[::1]:8080",
        "http://a.b.c:65535",
    ] {
        if let Err(e) = Config::from_toml_str(&with_url(url)) {
            panic!("{url} should be accepted: {e}");
        }
    }
}

// ---------------------------------------------------------------- overrides

const TWO_ROUTES: &str = r#"
[[upstreams]]
name = "api"
url = "http://127.0.0.1:3000"

[[routes]]
name = "a"
path_prefix = "/a"
upstream = "api"
limit = { algorithm = "fixed", value = 5 }

[[routes]]
name = "b"
upstream = "api"
"#;

#[test]
fn no_overrides_change_nothing() {
    let mut config = Config::from_toml_str(TWO_ROUTES).unwrap();
    let before = config.clone();
    config.apply_overrides(&Overrides::default()).unwrap();
    assert_eq!(config, before);
}

#[test]
fn flags_override_the_file() {
    let mut config = Config::from_toml_str(TWO_ROUTES).unwrap();
    config
        .apply_overrides(&Overrides {
            listen: Some(addr("0.0.0.0:1234")),
            admin: Some(addr("0.0.0.0:5678")),
            upstream: Some(uri("http://10.0.0.1:81")),
            limit: Some(7),
            algorithm: None,
            ..Overrides::default()
        })
        .unwrap();
    assert_eq!(config.server.listen, addr("0.0.0.0:1234"));
    assert_eq!(config.server.admin, addr("0.0.0.0:5678"));
    assert_eq!(config.upstreams[0].url, Some(uri("http://10.0.0.1:81")));
    assert_eq!(config.upstreams[0].name, "api", "only the url is replaced");
    for route in &config.routes {
        assert_eq!(
            route.limit,
            LimitConfig::Fixed { value: 7 },
            "{}",
            route.name
        );
    }
}

#[test]
fn upstream_override_is_refused_with_several_upstreams() {
    let mut config = Config::from_toml_str(&format!(
        "{TWO_ROUTES}\n[[upstreams]]\nname = \"other\"\nurl = \"http://b:2\"\n"
    ))
    .unwrap();
    let before = config.clone();
    let err = config
        .apply_overrides(&Overrides {
            upstream: Some(uri("http://10.0.0.1:81")),
            ..Overrides::default()
        })
        .unwrap_err();
    assert_eq!(err.key(), Some("--upstream"));
    assert_mentions(
        &err.to_string(),
        &["--upstream", "exactly one upstream", "has 2"],
    );
    assert_eq!(config, before, "a refused override changes nothing");
}

#[test]
fn bad_upstream_override_names_the_flag() {
    let mut config = Config::from_toml_str(MINIMAL).unwrap();
    let err = config
        .apply_overrides(&Overrides {
            upstream: Some(uri("ftp://a:21")),
            ..Overrides::default()
        })
        .unwrap_err();
    assert_mentions(
        &err.to_string(),
        &["--upstream: ", "scheme must be http:// or https://"],
    );
    assert_eq!(config.upstreams[0].url, Some(uri("http://127.0.0.1:3000")));
    config
        .apply_overrides(&Overrides {
            upstream: Some(uri("https://a:443")),
            ..Overrides::default()
        })
        .unwrap();
    assert_eq!(config.upstreams[0].url, Some(uri("https://a:443")));
}

#[test]
fn zero_limit_override_names_the_flag() {
    let mut config = Config::from_toml_str(TWO_ROUTES).unwrap();
    let err = config
        .apply_overrides(&Overrides {
            limit: Some(0),
            ..Overrides::default()
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "--limit: must be at least 1 (got 0)");
    assert_eq!(config.routes[0].limit, LimitConfig::Fixed { value: 5 });
}

#[test]
fn overrides_are_validated_together_with_the_file() {
    // Moving the admin port onto the listener is only wrong in combination.
    let mut config = Config::from_toml_str(MINIMAL).unwrap();
    let err = config
        .apply_overrides(&Overrides {
            admin: Some(addr("127.0.0.1:8080")),
            ..Overrides::default()
        })
        .unwrap_err();
    assert_eq!(err.key(), Some("server.admin"));
    assert_eq!(config.server.admin, addr("127.0.0.1:9464"));
}

// ---------------------------------------------------------------- helpers

/// A directory of its own for one test, removed when dropped. Each test
/// names its own so tests running in parallel never share one.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "floodwall-config-test-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    fn write(&self, file: &str, contents: &str) -> PathBuf {
        let path = self.path.join(file);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ------------------------------------------------------------------ bounds

/// The issue's case: this parsed, passed `check`, and then every connection
/// panicked ("overflow when adding duration to instant").
#[test]
fn header_read_timeout_of_u64_max_seconds_is_refused() {
    assert_invalid(
        &with_server("header_read_timeout = \"18446744073709551615s\""),
        "server.header_read_timeout",
        &["at most", "1h"],
    );
}

/// A config with one key set: `[server]` keys, an upstream key, a route
/// table, a probe or a store, each on top of [`MINIMAL`].
fn one_key(place: &str, line: &str) -> String {
    match place {
        "server" => with_server(line),
        "upstream" => MINIMAL.replace(
            "url = \"http://127.0.0.1:3000\"\n",
            &format!("url = \"http://127.0.0.1:3000\"\n{line}\n"),
        ),
        "route" => with_route_tables(line),
        "probe" => format!("{MINIMAL}\n[[probes]]\n{line}\n"),
        "store" => format!("{MINIMAL}\n[store]\nurl = \"redis://127.0.0.1:1\"\n{line}\n"),
        other => unreachable!("{other}"),
    }
}

/// Every duration and number is refused above its bound (and below, where
/// 0 is nonsense), with the key named. Each case is one key just past its
/// bound, so the bound itself is pinned, and the same key at u64::MAX
/// seconds or a huge integer.
#[test]
fn every_duration_and_number_has_bounds() {
    let cases: &[(&str, &str, &str)] = &[
        ("server", "drain_timeout = \"61m\"", "server.drain_timeout"),
        ("server", "state_max_age = \"25h\"", "server.state_max_age"),
        ("server", "state_max_age = \"0s\"", "server.state_max_age"),
        (
            "server",
            "retry_after_max = \"61m\"",
            "server.retry_after_max",
        ),
        (
            "server",
            "header_read_timeout = \"61m\"",
            "server.header_read_timeout",
        ),
        (
            "server",
            "class_idle_window = \"61m\"",
            "server.class_idle_window",
        ),
        (
            "server",
            "max_tenant_id_len = 1025",
            "server.max_tenant_id_len",
        ),
        (
            "upstream",
            "connect_timeout = \"61m\"",
            "upstreams[0].connect_timeout",
        ),
        (
            "upstream",
            "response_timeout = \"25h\"",
            "upstreams[0].response_timeout",
        ),
        (
            "upstream",
            "pool_idle_timeout = \"25h\"",
            "upstreams[0].pool_idle_timeout",
        ),
        (
            "upstream",
            "pool_max_idle_per_host = 65537",
            "upstreams[0].pool_max_idle_per_host",
        ),
        (
            "upstream",
            "pool_max_connecting = 0",
            "upstreams[0].pool_max_connecting",
        ),
        (
            "upstream",
            "pool_max_connecting = 65537",
            "upstreams[0].pool_max_connecting",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"fixed\"\nvalue = 1000001",
            "routes[0].limit.value",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"aimd\"\nmax = 1000001",
            "routes[0].limit.max",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"aimd\"\nmin = 1000001\nmax = 1000001",
            "routes[0].limit.min",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"aimd\"\nramp_up = \"25h\"",
            "routes[0].limit.ramp_up",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"aimd\"\nstable_for = \"61m\"",
            "routes[0].limit.stable_for",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"aimd\"\nwindow_min_samples = 0",
            "routes[0].limit.window_min_samples",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"aimd\"\nwindow_min_samples = 1000001",
            "routes[0].limit.window_min_samples",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"aimd\"\nwindow_min_duration = \"61m\"",
            "routes[0].limit.window_min_duration",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"aimd\"\nmin_rtt = \"61s\"",
            "routes[0].limit.min_rtt",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"aimd\"\nbaseline = \"61m\"",
            "routes[0].limit.baseline",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"aimd\"\nprobe_interval = \"25h\"",
            "routes[0].limit.probe_interval",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"aimd\"\nprobe_shift = 101.0",
            "routes[0].limit.probe_shift",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"aimd\"\nerror_rate = nan",
            "routes[0].limit.error_rate",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"aimd\"\ndrop_rate = -0.1",
            "routes[0].limit.drop_rate",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"aimd\"\nfailure_backoff = 1.0",
            "routes[0].limit.failure_backoff",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"aimd\"\ntolerance = inf",
            "routes[0].limit.tolerance",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"aimd\"\nbackoff = 0.0",
            "routes[0].limit.backoff",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"aimd\"\nmax_cut = nan",
            "routes[0].limit.max_cut",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"aimd\"\nincrease = 11.0",
            "routes[0].limit.increase",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"gradient\"\ntolerance = 101.0",
            "routes[0].limit.tolerance",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"gradient\"\nsmoothing = inf",
            "routes[0].limit.smoothing",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"vegas\"\nbeta = inf",
            "routes[0].limit.beta",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"vegas\"\nalpha = -1.0",
            "routes[0].limit.alpha",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"vegas\"\nthreshold = nan",
            "routes[0].limit.threshold",
        ),
        (
            "route",
            "[routes.limit]\nalgorithm = \"wip\"\nmultiplier = 101.0",
            "routes[0].limit.multiplier",
        ),
        (
            "route",
            "[routes.queue]\ncapacity = 1000001",
            "routes[0].queue.capacity",
        ),
        (
            "route",
            "[routes.queue]\ntimeout = \"61m\"",
            "routes[0].queue.timeout",
        ),
        (
            "route",
            "[routes.tenant]\nmax_share = nan",
            "routes[0].tenant.max_share",
        ),
        (
            "route",
            "[routes.tenant]\ncontention_window = \"61m\"",
            "routes[0].tenant.contention_window",
        ),
        (
            "probe",
            "kind = \"memory\"\ninterval = \"61m\"",
            "probes[0].interval",
        ),
        (
            "probe",
            "kind = \"memory\"\ntimeout = \"61m\"",
            "probes[0].timeout",
        ),
        (
            "probe",
            "kind = \"memory\"\nbackoff = nan",
            "probes[0].backoff",
        ),
        (
            "probe",
            "kind = \"memory\"\nmin_limit = 1000001",
            "probes[0].min_limit",
        ),
        (
            "probe",
            "kind = \"memory\"\ncooldown = \"61m\"",
            "probes[0].cooldown",
        ),
        ("probe", "kind = \"memory\"\nratio = inf", "probes[0].ratio"),
        (
            "probe",
            "kind = \"memory\"\nmax_bytes = \"1025TiB\"",
            "probes[0].max_bytes",
        ),
        (
            "probe",
            "kind = \"postgres\"\ndsn = \"host=h\"\nconn_ratio = nan",
            "probes[0].conn_ratio",
        ),
        (
            "probe",
            "kind = \"postgres\"\ndsn = \"host=h\"\nlock_waits = 1000001",
            "probes[0].lock_waits",
        ),
        (
            "probe",
            "kind = \"backlog\"\nmax_backlog = 1000001",
            "probes[0].max_backlog",
        ),
        (
            "probe",
            "kind = \"latency\"\nmultiplier = 101.0",
            "probes[0].multiplier",
        ),
        (
            "probe",
            "kind = \"latency\"\nbaseline_half_life = \"25h\"",
            "probes[0].baseline_half_life",
        ),
        (
            "store",
            "renew_interval = \"11m\"\nlease_ttl = \"40m\"\ntimeout = \"1s\"",
            "store.renew_interval",
        ),
        ("store", "lease_ttl = \"61m\"", "store.lease_ttl"),
        ("store", "join_ramp = \"61m\"", "store.join_ramp"),
        (
            "store",
            "timeout = \"18446744073709551615s\"",
            "store.timeout",
        ),
    ];
    for (place, line, key) in cases {
        let text = one_key(place, line);
        let err = Config::from_toml_str(&text).expect_err(line);
        assert_eq!(err.key(), Some(*key), "{line}: {err}");
        // The same key at the extreme: refused with the same key, no panic.
        let Some((name, _)) = line
            .rsplit_once('\n')
            .map_or(line.split_once(" = "), |(_, last)| last.split_once(" = "))
        else {
            continue;
        };
        let extreme = if line.rsplit('\n').next().unwrap().contains('"') {
            "\"18446744073709551615s\"".to_owned()
        } else {
            "9223372036854775807".to_owned()
        };
        if matches!(
            *key,
            "routes[0].limit.min" | "probes[0].max_bytes" | "store.renew_interval"
        ) || line.contains("= nan")
            || line.contains("= inf")
            || line.contains("= -")
            || line.contains(".0\n")
            || line.ends_with(".0")
            || line.ends_with("= 0")
        {
            continue;
        }
        let last = line.rsplit('\n').next().unwrap();
        let text = one_key(place, &line.replace(last, &format!("{name} = {extreme}")));
        let err = Config::from_toml_str(&text).expect_err(&text);
        assert_eq!(err.key(), Some(*key), "{name} = {extreme}: {err}");
    }
}

/// The bounds themselves are accepted: each key at its upper bound parses.
#[test]
fn bounds_are_inclusive() {
    let text = format!(
        "[server]\ndrain_timeout = \"1h\"\nretry_after_max = \"1h\"\n\
         header_read_timeout = \"1h\"\nclass_idle_window = \"1h\"\n{}\n\
         [routes.limit]\nalgorithm = \"aimd\"\nmin = 1000000\nmax = 1000000\n\
         ramp_up = \"24h\"\nstable_for = \"1h\"\nwindow_min_samples = 1000000\n\
         window_min_duration = \"1h\"\nmin_rtt = \"1m\"\nprobe_interval = \"24h\"\n\
         probe_shift = 100.0\ntolerance = 100.0\nincrease = 10.0\n\
         [routes.queue]\ncapacity = 1000000\ntimeout = \"1h\"\n\
         [routes.tenant]\ncontention_window = \"1h\"\n\
         [[probes]]\nkind = \"memory\"\ninterval = \"1h\"\ntimeout = \"1h\"\n\
         min_limit = 1000000\ncooldown = \"1h\"\nmax_bytes = \"1024TiB\"\n\
         [store]\nurl = \"redis://127.0.0.1:1\"\nrenew_interval = \"10m\"\n\
         lease_ttl = \"1h\"\ntimeout = \"1s\"\njoin_ramp = \"1h\"\n",
        MINIMAL.replace(
            "url = \"http://127.0.0.1:3000\"\n",
            "url = \"http://127.0.0.1:3000\"\nconnect_timeout = \"1h\"\n\
             response_timeout = \"24h\"\npool_idle_timeout = \"24h\"\n\
             pool_max_idle_per_host = 65536\n"
        )
    );
    Config::from_toml_str(&text).unwrap();
}

#[test]
fn limit_flag_has_the_same_upper_bound() {
    let mut c = Config::from_toml_str(MINIMAL).unwrap();
    let err = c
        .apply_overrides(&Overrides {
            limit: Some(usize::MAX),
            ..Overrides::default()
        })
        .unwrap_err();
    assert_eq!(err.key(), Some("--limit"), "{err}");
    assert_mentions(&err.to_string(), &["at most 1000000"]);
}

/// A store URL with the wrong scheme is quoted in the error without its
/// password, from the file and from `--store` alike.
#[test]
fn wrong_store_scheme_does_not_echo_the_password() {
    let text = format!("{MINIMAL}\n[store]\nurl = \"http://user:hunter2@10.0.0.7:6379\"\n");
    let message = error_of(&text);
    assert!(!message.contains("hunter2"), "{message}");
    assert_mentions(&message, &["store.url", "http://***@10.0.0.7:6379"]);

    let mut c = Config::from_toml_str(MINIMAL).unwrap();
    for url in ["http://user:hunter2@10.0.0.7:6379", "user:hunter2@10.0.0.7"] {
        let err = c
            .apply_overrides(&Overrides {
                store: Some(url.to_owned()),
                ..Overrides::default()
            })
            .unwrap_err();
        let message = err.to_string();
        assert!(!message.contains("hunter2"), "{message}");
        assert_eq!(err.key(), Some("store.url"), "{message}");
    }
}

fn with_upstream_keys(keys: &str) -> String {
    MINIMAL.replace("url = \"http://127.0.0.1:3000\"", keys)
}

#[test]
fn endpoints_and_balancing_keys_parse_with_their_defaults() {
    let c = Config::from_toml_str(&with_upstream_keys(
        "endpoints = [\"http://10.0.0.1:80\", \"http://10.0.0.2:80\"]",
    ))
    .unwrap();
    let up = &c.upstreams[0];
    assert_eq!(up.url, None);
    assert_eq!(up.urls().len(), 2);
    assert_eq!(up.balance, floodwall::config::Balance::LeastInflight);
    assert_eq!(up.max_ejection_percent, 50);
    assert_eq!(up.consecutive_failures, 3);
    assert_eq!(up.base_ejection_time, Duration::from_secs(5));
    assert_eq!(up.max_ejection_time, Duration::from_secs(60));
    assert_eq!(up.drain_timeout, Duration::from_secs(30));
    let c = Config::from_toml_str(&with_upstream_keys(
        "endpoints = [\"http://a:1\", \"http://b:1\"]\nbalance = \"hash\"\nhash_on = \"header:X-Tenant-Id\"",
    ))
    .unwrap();
    assert_eq!(
        c.upstreams[0].hash_key(),
        Some(floodwall::config::HashOn::Header(
            http::HeaderName::from_static("x-tenant-id")
        ))
    );
    // `url` alone is one endpoint.
    assert_eq!(
        Config::from_toml_str(MINIMAL).unwrap().upstreams[0]
            .urls()
            .len(),
        1
    );
}

#[test]
fn endpoint_mistakes_name_their_key() {
    let cases: [(&str, &str, &str); 13] = [
        ("name = \"x\"", "upstreams[0].url", "missing: set url"),
        (
            "url = \"http://a:1\"\nendpoints = [\"http://b:1\"]",
            "upstreams[0].endpoints",
            "set one of url",
        ),
        (
            "url = \"http://a:1\"\ndns = \"api.internal:80\"",
            "upstreams[0].dns",
            "set one of url",
        ),
        (
            "dns = \"ftp://api.internal:80\"",
            "upstreams[0].dns",
            "http:// or https://",
        ),
        (
            "dns = \"api.internal:80\"\ndns_refresh = \"1ms\"",
            "upstreams[0].dns_refresh",
            "between 100ms and 1h",
        ),
        (
            "endpoints = [\"http://a:1\", \"ftp://b:1\"]",
            "upstreams[0].endpoints[1]",
            "scheme must be",
        ),
        (
            "endpoints = [\"http://a:1\", \"https://b:1\"]",
            "upstreams[0].endpoints[1]",
            "one scheme",
        ),
        (
            "endpoints = [\"http://a:1\", \"http://A:1\"]",
            "upstreams[0].endpoints[1]",
            "more than once",
        ),
        (
            "endpoints = [\"http://a:1\"]\nbalance = \"hash\"",
            "upstreams[0].hash_on",
            "needs hash_on",
        ),
        (
            "endpoints = [\"http://a:1\"]\nbalance = \"hash\"\nhash_on = \"query:x\"",
            "upstreams[0].hash_on",
            "header:NAME",
        ),
        (
            "endpoints = [\"http://a:1\"]\nhash_on = \"path\"",
            "upstreams[0].hash_on",
            "only applies with balance",
        ),
        (
            "endpoints = [\"http://a:1\"]\nmax_ejection_percent = 101",
            "upstreams[0].max_ejection_percent",
            "0 to 100",
        ),
        (
            "endpoints = [\"http://a:1\"]\nbase_ejection_time = \"10s\"\nmax_ejection_time = \"5s\"",
            "upstreams[0].max_ejection_time",
            "at least base_ejection_time",
        ),
    ];
    for (keys, key, problem) in cases {
        let toml =
            with_upstream_keys(keys).replace("name = \"api\"\nname = \"x\"", "name = \"api\"");
        assert_invalid(&toml, key, &[problem]);
    }
    let unknown = error_of(&with_upstream_keys(
        "endpoints = [\"http://a:1\"]\nbalance = \"random\"",
    ));
    assert!(unknown.contains("least_inflight"), "{unknown}");
}
