//! End-to-end tests of the `tagcast` command line with the bundled plugins: `tags` on
//! stdin, `plugins`, `check`, and what a bad config or bad input gives: exit code 2 and one
//! readable message that names the file, the plugin and the key, with line and column.
//!
//! Configs are written to a scratch directory and omit `library`: the engine finds the
//! bundled plugins next to the `tagcast` executable, where `cargo build --workspace` put them.

use std::path::PathBuf;

use tagcast_tests::engine::{profile_dir, repo_root};
use tagcast_tests::plugin_fixtures::{bundled_library, Cli, Scratch};

/// The bundled generators, in the order of the shipped config.
const BUNDLED: &str = "\
[chain]
generators = [\"entity-tags\", \"simple-tags\"]
[plugins.entity-tags]
[plugins.simple-tags]
";

/// The tags `tagcast tags <flags>` prints for `stdin` with the bundled generators.
fn tags(flags: &[&str], stdin: &str) -> Vec<Vec<String>> {
    let scratch = Scratch::new("cli-tags");
    let path = scratch.write("tagcast.toml", BUNDLED);
    Cli::tags(&path, flags).stdin(stdin).run().tag_lists()
}

/// The message `tagcast check` fails with on `config`, after checking that it starts with
/// the config file's path.
fn config_error(scratch: &Scratch, config: &str) -> (PathBuf, String) {
    let path = scratch.write("tagcast.toml", config);
    let message = Cli::check(&path).run().input_error();
    let file = format!("{}: ", path.display());
    assert!(
        message.starts_with(&file),
        "the message must name {file}: {message}"
    );
    (path, message)
}

fn in_profile_dir(file: &str) -> String {
    profile_dir().join(file).display().to_string()
}

#[test]
fn tags_reads_a_pretty_printed_document_as_one() {
    let stdin = "{\n  \"class\": \"App\\\\Entity\\\\Task\",\n\n  \"id\": 42\n}\n";
    assert_eq!(tags(&[], stdin), [["App_Entity_Task_42"]]);
}

#[test]
fn tags_prints_one_list_per_document_in_input_order() {
    let stdin = concat!(
        r#"{"class": "C", "id": 1}"#,
        "\n",
        r#"{"name": "system_configuration", "params": ["platform", "general_setup"]}"#,
        "\n",
        r#"{"nothing": "to tag"}"#,
        "\n",
        r#"{"class": "C", "id": 2}"#,
        "\n",
    );
    let expected: [&[&str]; 4] = [
        &["C_1"],
        &["system_configuration_platform_general_setup"],
        &[],
        &["C_2"],
    ];
    assert_eq!(tags(&[], stdin), expected);
}

#[test]
fn collection_flag_adds_collection_tags() {
    let stdin = r#"{"class": "App\\Entity\\Task", "id": 42}"#;
    assert_eq!(tags(&[], stdin), [["App_Entity_Task_42"]]);
    assert_eq!(
        tags(&["--collection"], stdin),
        [["App_Entity_Task_42", "App_Entity_Task_type_collection"]]
    );
}

#[test]
fn nested_flag_adds_the_tags_of_nested_entities() {
    let stdin = r#"{"class": "C", "id": 1, "owner": {"class": "U", "id": 7}}"#;
    assert_eq!(tags(&[], stdin), [["C_1"]]);
    assert_eq!(tags(&["--nested"], stdin), [["C_1", "U_7"]]);
}

#[test]
fn invalid_json_on_stdin_is_a_readable_error_naming_the_document() {
    let scratch = Scratch::new("cli-bad-json");
    let path = scratch.write("tagcast.toml", BUNDLED);
    let stdin = "{\"class\": \"C\", \"id\": 1}\n{\"class\": \"D\",\n";

    let message = Cli::tags(&path, &[]).stdin(stdin).run().input_error();
    assert!(
        message.starts_with("stdin: document 2: invalid JSON: "),
        "{message}"
    );
    assert!(message.contains("line 3"), "{message}");
}

#[test]
fn plugins_lists_the_bundled_plugins_with_version_kinds_and_library() {
    let scratch = Scratch::new("cli-plugins");
    let path = scratch.write("tagcast.toml", BUNDLED);

    let listed = Cli::plugins(&path).run();
    let version = env!("CARGO_PKG_VERSION");
    let expected: Vec<String> = ["entity-tags", "simple-tags"]
        .iter()
        .map(|name| {
            let library = bundled_library(name);
            format!("{name}\t{version}\tgenerator\t{}", library.display())
        })
        .collect();
    assert_eq!(listed.success().lines().collect::<Vec<_>>(), expected);
}

#[test]
fn check_accepts_the_shipped_config() {
    let path = repo_root().join("config/tagcast.toml");
    let outcome = Cli::check(&path).run();
    let stdout = outcome.success();
    assert!(
        stdout.starts_with(&format!("{}: ok", path.display())),
        "{stdout}"
    );
}

#[test]
fn unknown_top_level_key_is_refused_with_file_line_and_key() {
    let scratch = Scratch::new("cli-top-key");
    // First: after a table header, TOML would put the key in that table.
    let (_, message) = config_error(&scratch, &format!("lisen = 1\n{BUNDLED}"));
    assert!(message.contains("line 1, column 1"), "{message}");
    assert!(message.contains("unknown field `lisen`"), "{message}");
}

#[test]
fn unknown_key_in_a_plugin_table_is_refused_with_file_line_and_key() {
    let scratch = Scratch::new("cli-plugin-key");
    let config = "[plugins.entity-tags]\nlibary = \"entity_tags\"\n";
    let (_, message) = config_error(&scratch, config);
    assert!(message.contains("line 2, column 1"), "{message}");
    assert!(message.contains("unknown field `libary`"), "{message}");
}

#[test]
fn unknown_key_in_a_plugin_table_names_the_plugin() {
    let scratch = Scratch::new("cli-plugin-key-name");
    let config = "[plugins.simple-tags]\n[plugins.entity-tags]\nlibary = \"entity_tags\"\n";
    let (_, message) = config_error(&scratch, config);
    assert!(message.contains("entity-tags"), "{message}");
}

#[test]
fn missing_library_is_refused_at_the_library_key() {
    let scratch = Scratch::new("cli-no-library");
    let (path, message) = config_error(&scratch, "[plugins.entity-tags]\nlibrary = \"nope\"\n");
    let expected = format!(
        "{}: line 2, column 1: plugin `entity-tags`: library not found: {}; check \
         plugins.entity-tags.library",
        path.display(),
        in_profile_dir("libnope.so")
    );
    assert_eq!(message, expected);
}

#[test]
fn unknown_plugin_is_refused_listing_the_plugins_found() {
    let scratch = Scratch::new("cli-unknown-plugin");
    let (path, message) = config_error(&scratch, "[plugins.nope-tags]\n");
    let start = format!(
        "{}: line 1, column 10: no plugin named `nope-tags` in {} (looked for \
         libnope_tags.so); plugins found there: ",
        path.display(),
        profile_dir().display()
    );
    let found = message
        .strip_prefix(&start)
        .and_then(|rest| rest.split_once(". "))
        .map(|(found, _)| found.split(", ").collect::<Vec<_>>())
        .unwrap_or_else(|| panic!("want {start:?}<plugins>. ... in: {message}"));
    assert!(
        found.contains(&"entity-tags") && found.contains(&"simple-tags"),
        "{message}"
    );
}

#[test]
fn two_tables_loading_one_plugin_are_refused_naming_both() {
    let scratch = Scratch::new("cli-same-name");
    let config = "[plugins.entity-tags]\n[plugins.other]\nlibrary = \"entity_tags\"\n";
    let (path, message) = config_error(&scratch, config);
    let library = in_profile_dir("libentity_tags.so");
    let expected = format!(
        "{}: line 2, column 10: two plugins named `entity-tags`: [plugins.entity-tags] \
         ({library}) and [plugins.other] ({library}); load each plugin once",
        path.display()
    );
    assert_eq!(message, expected);
}

#[test]
fn plugin_rejecting_its_settings_is_reported_at_the_key() {
    let scratch = Scratch::new("cli-settings");
    let config = "\
[chain]
generators = [\"entity-tags\"]
[plugins.entity-tags]
[plugins.entity-tags.settings]
id_fields = [\"id\"]
class_feild = \"type\"
";
    let (path, message) = config_error(&scratch, config);
    let start = format!(
        "{}: line 6, column 1: plugin `entity-tags` rejected its settings: key `class_feild`: ",
        path.display()
    );
    assert!(
        message.starts_with(&start),
        "want {start:?}... in: {message}"
    );
}

#[test]
fn check_refuses_bad_settings_of_a_plugin_outside_the_chain() {
    let scratch = Scratch::new("cli-settings-unused");
    let config = "[plugins.entity-tags.settings]\nclass_feild = \"type\"\n";
    let (_, message) = config_error(&scratch, config);
    assert!(message.contains("class_feild"), "{message}");
}

#[test]
fn chain_entry_without_a_plugin_table_is_refused_at_the_entry() {
    let scratch = Scratch::new("cli-chain-table");
    let config =
        "[chain]\ngenerators = [\"entity-tags\", \"simple-tags\"]\n[plugins.entity-tags]\n";
    let (path, message) = config_error(&scratch, config);
    let expected = format!(
        "{}: line 2, column 30: chain.generators lists `simple-tags`, which has no \
         [plugins.simple-tags] table; add one or remove it from the chain",
        path.display()
    );
    assert_eq!(message, expected);
}

#[test]
fn error_message_says_each_cause_once() {
    let scratch = Scratch::new("cli-once");
    scratch.write("libfake.so", "not a library\n");
    // Each config, and the words of its cause.
    let cases = [
        ("lisen = 1\n", "unknown field `lisen`"),
        (
            "[plugins.fake]\nlibrary = \"libfake.so\"\n",
            "is not a tagcast plugin",
        ),
    ];
    for (config, cause) in cases {
        let (_, message) = config_error(&scratch, config);
        assert_eq!(message.matches(cause).count(), 1, "{message}");
    }

    let missing = scratch.path().join("missing.toml");
    let message = Cli::check(&missing).run().input_error();
    assert_eq!(message.matches("os error").count(), 1, "{message}");
}
