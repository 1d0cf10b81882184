//! End-to-end tests of plugin loading, through the `tagcast` binary: a plugin crate built
//! outside the workspace, the compatibility rule between plugin-api versions, libraries that
//! are not plugins, and how the chain treats a generator that panics or fails.
//!
//! The fixture plugins are built once per run of this binary (see
//! `tagcast_tests::plugin_fixtures`); the bundled ones come from `cargo build --workspace`.

use tagcast_tests::plugin_fixtures::{
    bundled_library, fixtures, toml_path, Cli, Fixture, Outcome, Scratch, FIXTURE_VERSION,
};

/// A config whose `plugin_dir` is the fixtures' directory, so that fixture plugins load by
/// name, with `entity-tags` loaded from its path, and `tables` appended.
fn config(chain: &[&str], tables: &str) -> String {
    let chain: Vec<String> = chain.iter().map(|name| format!("{name:?}")).collect();
    format!(
        "plugin_dir = {}\n\
         [chain]\n\
         generators = [{}]\n\
         [plugins.entity-tags]\n\
         library = {}\n\
         {tables}",
        toml_path(&fixtures().dir),
        chain.join(", "),
        toml_path(&bundled_library("entity-tags")),
    )
}

/// The tags of each line of `stdin`, with `chain` of echo-tags and entity-tags.
fn chain_tags(scratch: &Scratch, chain: &[&str], stdin: &str) -> Vec<Vec<String>> {
    let path = scratch.write("tagcast.toml", &config(chain, "[plugins.echo-tags]\n"));
    Cli::tags(&path, &[]).stdin(stdin).run().tag_lists()
}

/// The error `tagcast check` gives for a config with a fixture plugin `fixture` loaded by
/// name, after checking it names the config file and the library; and the run, logged at
/// debug level as JSON.
fn load_error(scratch: &Scratch, fixture: Fixture) -> (String, Outcome) {
    let name = fixture.name();
    let path = scratch.write("tagcast.toml", &config(&[], &format!("[plugins.{name}]\n")));
    let outcome = Cli::check(&path).json_logs("debug").run();
    let message = outcome.input_error();
    assert!(
        message.starts_with(&format!("{}: ", path.display())),
        "{message}"
    );
    assert!(message.contains(&format!("plugin `{name}`")), "{message}");
    let library = fixtures().library(fixture);
    assert!(
        message.contains(&library.display().to_string()),
        "{message}"
    );
    (message, outcome)
}

#[test]
fn external_plugin_builds_and_loads_by_name() {
    let scratch = Scratch::new("external-plugin");
    let path = scratch.write(
        "tagcast.toml",
        &config(&["echo-tags"], "[plugins.echo-tags]\n"),
    );

    let listed = Cli::plugins(&path).run();
    let library = fixtures().library(Fixture::EchoTags);
    let line = format!(
        "echo-tags\t{FIXTURE_VERSION}\tgenerator\t{}",
        library.display()
    );
    assert!(
        listed.success().lines().any(|l| l == line),
        "want {line:?} in:\n{}",
        listed.stdout
    );

    let tags = Cli::tags(&path, &[])
        .stdin(r#"{"echo": ["a", "b"]}"#)
        .run()
        .tag_lists();
    assert_eq!(tags, [["a", "b"]]);
}

#[test]
fn external_plugin_receives_its_settings() {
    let scratch = Scratch::new("external-settings");
    let tables = "[plugins.echo-tags.settings]\nprefix = \"x-\"\n";
    let path = scratch.write("tagcast.toml", &config(&["echo-tags"], tables));

    let tags = Cli::tags(&path, &[])
        .stdin(r#"{"echo": ["a"]}"#)
        .run()
        .tag_lists();
    assert_eq!(tags, [["x-a"]]);
}

#[test]
fn plugin_log_events_reach_the_engine_log_with_the_plugin_name() {
    let scratch = Scratch::new("log-bridge");
    let path = scratch.write(
        "tagcast.toml",
        &config(&["echo-tags"], "[plugins.echo-tags]\n"),
    );

    let outcome = Cli::tags(&path, &[])
        .json_logs("info")
        .stdin(r#"{"echo": ["a", "b", "c"]}"#)
        .run();
    outcome.success();
    let event = outcome
        .find_event(&[("plugin", "echo-tags"), ("message", "echoing tags")])
        .unwrap_or_else(|| panic!("no echo-tags event on stderr:\n{}", outcome.stderr));
    assert_eq!(event["level"], "INFO", "{event}");
    assert_eq!(event["fields"]["fields"], "echo=3", "{event}");
}

#[test]
fn plugin_api_of_a_newer_minor_version_loads() {
    let scratch = Scratch::new("next-minor");
    let name = Fixture::NextMinor.name();
    let path = scratch.write(
        "tagcast.toml",
        &config(&[name], &format!("[plugins.{name}]\n")),
    );

    let outcome = Cli::tags(&path, &[]).json_logs("info").stdin("{}").run();
    assert_eq!(
        outcome.tag_lists(),
        [[name]],
        "the engine calls into the plugin"
    );
    let versions = &fixtures().versions;
    let loaded = outcome.find_event(&[("message", "plugin loaded"), ("plugin", name)]);
    let loaded = loaded.unwrap_or_else(|| panic!("no `plugin loaded` event:\n{}", outcome.stderr));
    assert_eq!(
        loaded["fields"]["api_version"],
        versions.next_minor.as_str(),
        "{loaded}"
    );
}

#[test]
fn plugin_api_of_another_major_version_is_refused_naming_both_versions() {
    let scratch = Scratch::new("next-major");
    let (message, _) = load_error(&scratch, Fixture::NextMajor);

    let versions = &fixtures().versions;
    assert!(
        message.contains("is incompatible with this engine"),
        "{message}"
    );
    assert!(
        message.contains(&format!("plugin-api {}", versions.next_major)),
        "{message}"
    );
    let major = versions
        .real
        .split('.')
        .next()
        .expect("a version has a major part");
    assert!(
        message.contains(&format!("plugin-api {major}.x")),
        "{message}"
    );
}

#[test]
fn plugin_api_with_an_altered_layout_is_refused_as_incompatible() {
    let scratch = Scratch::new("altered-layout");
    let (message, outcome) = load_error(&scratch, Fixture::AlteredLayout);

    assert!(
        message.contains("is incompatible with this engine"),
        "{message}"
    );
    assert!(message.contains("differ in layout"), "{message}");
    // Only the key lines of abi_stable's report, which runs to hundreds of lines.
    assert!(message.lines().count() < 20, "{message}");

    // Refused for the field the fixture added, and not for anything else about the copy.
    let report = outcome
        .find_event(&[("message", "full layout report")])
        .unwrap_or_else(|| panic!("no layout report at debug level:\n{}", outcome.stderr));
    let report = report["fields"]["report"].as_str().unwrap_or_default();
    assert!(report.contains("field_name:altered"), "{report}");
    assert!(report.contains("Error:too many fields"), "{report}");
    assert!(!report.contains("mismatched package"), "{report}");
}

#[test]
fn altered_layout_error_says_which_type_differs_and_how() {
    let scratch = Scratch::new("altered-layout-summary");
    let (message, _) = load_error(&scratch, Fixture::AlteredLayout);

    assert!(message.contains("HostLogger"), "{message}");
    assert!(message.contains("too many fields"), "{message}");
}

#[test]
fn shared_library_without_plugin_export_is_refused() {
    let scratch = Scratch::new("not-a-plugin");
    let (message, _) = load_error(&scratch, Fixture::NotAPlugin);

    assert!(message.contains("is not a tagcast plugin"), "{message}");
    assert!(message.contains("export_plugin!"), "{message}");
}

#[test]
fn text_file_named_like_a_library_is_refused() {
    let scratch = Scratch::new("text-so");
    scratch.write("libfake.so", "not a library\n");
    let path = scratch.write("tagcast.toml", "[plugins.fake]\nlibrary = \"libfake.so\"\n");

    let message = Cli::check(&path).run().input_error();
    let library = scratch.path().join("libfake.so");
    assert!(
        message.starts_with(&format!("{}: ", path.display())),
        "{message}"
    );
    assert!(
        message.contains(&format!("{} is not a tagcast plugin", library.display())),
        "{message}"
    );
}

#[test]
fn chain_listing_a_plugin_without_generator_is_refused_at_the_entry() {
    let scratch = Scratch::new("source-in-chain");
    let path = scratch.write(
        "tagcast.toml",
        &config(&["entity-tags", "idle-source"], "[plugins.idle-source]\n"),
    );

    let message = Cli::check(&path).run().input_error();
    let expected = format!(
        "{}: line 3, column 30: chain.generators lists `idle-source`, but that plugin provides \
         no generator (it provides: source)",
        path.display()
    );
    assert_eq!(message, expected);
}

#[test]
fn panicking_generator_leaves_the_other_generators_tags() {
    let scratch = Scratch::new("panic");
    let path = scratch.write(
        "tagcast.toml",
        &config(&["echo-tags", "entity-tags"], "[plugins.echo-tags]\n"),
    );
    let stdin = concat!(
        r#"{"class": "C", "id": 1, "echo": ["x"], "panic": true}"#,
        "\n",
        r#"{"class": "D", "id": 2, "echo": ["y"]}"#,
        "\n",
    );

    let outcome = Cli::tags(&path, &[]).json_logs("warn").stdin(stdin).run();
    assert_eq!(outcome.tag_lists(), [vec!["C_1"], vec!["y", "D_2"]]);
    assert_generation_failure_logged(&outcome, "panicked: echo-tags was asked to panic");
}

#[test]
fn failing_generator_leaves_the_other_generators_tags() {
    let scratch = Scratch::new("fail");
    let path = scratch.write(
        "tagcast.toml",
        &config(&["echo-tags", "entity-tags"], "[plugins.echo-tags]\n"),
    );
    let stdin = concat!(
        r#"{"class": "C", "id": 1, "echo": ["x"], "fail": true}"#,
        "\n",
        r#"{"class": "D", "id": 2, "echo": ["y"]}"#,
        "\n",
    );

    let outcome = Cli::tags(&path, &[]).json_logs("warn").stdin(stdin).run();
    assert_eq!(outcome.tag_lists(), [vec!["C_1"], vec!["y", "D_2"]]);
    assert_generation_failure_logged(&outcome, "echo-tags was asked to fail");
}

/// Checks that one `tag generation failed` warning names echo-tags and says `cause`.
fn assert_generation_failure_logged(outcome: &Outcome, cause: &str) {
    let failures: Vec<_> = outcome
        .log_events()
        .into_iter()
        .filter(|e| e["fields"]["message"] == "tag generation failed")
        .collect();
    assert_eq!(
        failures.len(),
        1,
        "one failed generation, logged once:\n{}",
        outcome.stderr
    );
    let event = &failures[0];
    assert_eq!(event["level"], "WARN", "{event}");
    assert_eq!(event["fields"]["plugin"], "echo-tags", "{event}");
    let error = event["fields"]["error"].as_str().unwrap_or_default();
    assert!(error.contains(cause), "{event}");
    // plugin-api's quiet panic hook: the engine's warning is the only report.
    assert!(
        !outcome.stderr.contains("panicked at"),
        "{}",
        outcome.stderr
    );
}

/// Data for which echo-tags repeats entity-tags' tag `C_1`, and one of its own.
const OVERLAPPING: &str = r#"{"class": "C", "id": 1, "echo": ["a", "C_1", "b", "a"]}"#;

#[test]
fn chain_gives_tags_in_chain_order_keeping_the_first_of_duplicates() {
    let scratch = Scratch::new("chain-order");
    let tags = chain_tags(&scratch, &["echo-tags", "entity-tags"], OVERLAPPING);
    assert_eq!(tags, [["a", "C_1", "b"]]);
}

#[test]
fn reversed_chain_gives_the_other_generators_tags_first() {
    let scratch = Scratch::new("chain-reversed");
    let tags = chain_tags(&scratch, &["entity-tags", "echo-tags"], OVERLAPPING);
    assert_eq!(tags, [["C_1", "a", "b"]]);
}
