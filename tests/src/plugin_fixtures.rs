//! Plugins built at test time, and the `tagcast` command line run as a process, for the
//! end-to-end tests of plugin loading (`tests/plugins.rs`) and of the CLI (`tests/cli.rs`).
//!
//! The fixture plugins stand for the plugin teams' crates: they live outside the tagcast
//! workspace and depend on plugin-api by path, as a real plugin does. The sources are under
//! `tests/fixtures/`; [`fixtures`] writes them, with three altered copies of plugin-api, into
//! one small cargo workspace in the temp dir and builds it with a single `cargo build
//! --offline` into `target/external-plugins`, shared across runs so that dependencies
//! compile once. See [`Fixture`] for what each library is for.
//!
//! The bundled plugins and the `tagcast` binary come from `cargo build --workspace`, which
//! the README's test command runs first; helpers fail with that advice when they are missing.
//! Submodule `cli` runs the binary: [`Cli`], [`Outcome`], [`Scratch`].

use std::collections::hash_map::DefaultHasher;
use std::ffi::OsStr;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::engine::{built, profile_dir, repo_root};

mod cli;

pub use cli::{Cli, Outcome, Scratch};

/// A library the fixture workspace builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fixture {
    /// `echo-tags`, a generator plugin against the real plugin-api: echoes the strings of the
    /// data's `echo` array (with the `prefix` setting in front), panics on `"panic": true`,
    /// fails on `"fail": true`, and logs one info event with an `echo` field per generation.
    EchoTags,
    /// `idle-source`, against the real plugin-api: a source and no generator.
    SourceOnly,
    /// `not-a-plugin`: a cdylib without `export_plugin!`.
    NotAPlugin,
    /// `api-altered`, against a copy of plugin-api with the next patch version whose
    /// `HostLogger` has an extra field: a layout the engine must refuse.
    AlteredLayout,
    /// `api-next-major`, against a copy of plugin-api with the next major version and the
    /// same layout: refused by the version rule.
    NextMajor,
    /// `api-next-minor`, against a copy of plugin-api with the next minor version and the
    /// same layout: loads.
    NextMinor,
}

/// Every fixture crate's version, distinct from the workspace's so that a test can tell
/// where `tagcast plugins` took it from.
pub const FIXTURE_VERSION: &str = "0.3.0";

impl Fixture {
    /// Every fixture, in the order the workspace lists them.
    pub const ALL: [Fixture; 6] = [
        Fixture::EchoTags,
        Fixture::SourceOnly,
        Fixture::NotAPlugin,
        Fixture::AlteredLayout,
        Fixture::NextMajor,
        Fixture::NextMinor,
    ];

    /// The package name, which is also the plugin's name in its manifest.
    pub fn name(self) -> &'static str {
        match self {
            Fixture::EchoTags => "echo-tags",
            Fixture::SourceOnly => "idle-source",
            Fixture::NotAPlugin => "not-a-plugin",
            Fixture::AlteredLayout => "api-altered",
            Fixture::NextMajor => "api-next-major",
            Fixture::NextMinor => "api-next-minor",
        }
    }

    /// The library's source, from `tests/fixtures/`.
    fn source(self) -> &'static str {
        match self {
            Fixture::EchoTags => include_str!("../fixtures/external-plugin/lib.rs"),
            Fixture::SourceOnly => include_str!("../fixtures/source-only/lib.rs"),
            Fixture::NotAPlugin => include_str!("../fixtures/not-a-plugin/lib.rs"),
            Fixture::AlteredLayout | Fixture::NextMajor | Fixture::NextMinor => {
                include_str!("../fixtures/api-variant/lib.rs")
            }
        }
    }

    /// The plugin-api it is built against.
    fn api(self) -> Api {
        match self {
            Fixture::EchoTags | Fixture::SourceOnly => Api::Real,
            Fixture::NotAPlugin => Api::None,
            Fixture::AlteredLayout => Api::Copy(ApiChange::Layout),
            Fixture::NextMajor => Api::Copy(ApiChange::NextMajor),
            Fixture::NextMinor => Api::Copy(ApiChange::NextMinor),
        }
    }
}

/// What a fixture depends on.
enum Api {
    /// `<repo>/plugin-api`, as an external plugin crate would.
    Real,
    /// A copy of plugin-api changed so.
    Copy(ApiChange),
    /// Nothing.
    None,
}

/// How a copy of plugin-api differs from the real one.
#[derive(Clone, Copy)]
enum ApiChange {
    /// The next patch version, with a field appended to `HostLogger`.
    Layout,
    /// The next major version, same layout.
    NextMajor,
    /// The next minor version, same layout.
    NextMinor,
}

impl ApiChange {
    const ALL: [ApiChange; 3] = [
        ApiChange::Layout,
        ApiChange::NextMajor,
        ApiChange::NextMinor,
    ];

    /// The copy's folder.
    fn label(self) -> &'static str {
        match self {
            ApiChange::Layout => "altered",
            ApiChange::NextMajor => "next-major",
            ApiChange::NextMinor => "next-minor",
        }
    }
}

/// The built fixture libraries.
#[derive(Debug)]
pub struct Fixtures {
    /// The directory holding the libraries: `target/external-plugins/debug`. A config may
    /// name it as `plugin_dir` to load the fixtures by name.
    pub dir: PathBuf,
    /// The versions the copies of plugin-api were given, by change.
    pub versions: ApiVersions,
}

/// The plugin-api versions in play.
#[derive(Debug, Clone)]
pub struct ApiVersions {
    /// The real plugin-api's, which the engine is built with.
    pub real: String,
    /// The next patch version, e.g. `1.0.1` for `1.0.0`: the altered copy's.
    pub next_patch: String,
    /// The next major version, e.g. `2.0.0` for `1.0.0`.
    pub next_major: String,
    /// The next minor version, e.g. `1.1.0` for `1.0.0`.
    pub next_minor: String,
}

impl Fixtures {
    /// The library file of `fixture`.
    pub fn library(&self, fixture: Fixture) -> PathBuf {
        self.dir.join(library_file_name(fixture.name()))
    }
}

/// The fixture libraries, built on first use in this test binary. Every test that calls it
/// fails with cargo's output if the build failed.
pub fn fixtures() -> &'static Fixtures {
    // The build's outcome, not a panic inside `get_or_init`, is what is kept: a panicking
    // initializer leaves the cell empty, and every other test would build again.
    static BUILT: OnceLock<Result<Fixtures, String>> = OnceLock::new();
    match BUILT.get_or_init(build_fixtures) {
        Ok(fixtures) => fixtures,
        Err(message) => panic!("the fixture plugins could not be built:\n{message}"),
    }
}

/// The file name of the library of the plugin crate `package` on this platform.
pub fn library_file_name(package: &str) -> String {
    format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        package.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    )
}

/// A bundled plugin's library in the profile directory, such as `entity-tags`.
pub fn bundled_library(plugin: &str) -> PathBuf {
    built(&library_file_name(plugin))
}

/// `path` as a TOML string, for configs written by tests.
pub fn toml_path(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

fn build_fixtures() -> Result<Fixtures, String> {
    let repo = repo_root();
    let api_dir = repo.join("plugin-api");
    let target = profile_dir()
        .parent()
        .expect("the profile directory sits in the target directory")
        .join("external-plugins");

    // One folder per target directory, not per run: cargo's fingerprints hold the paths and
    // mtimes of path dependencies, so a fresh folder would rebuild four plugin-apis and six
    // plugins every run. Files are only rewritten when their contents change, and the build
    // takes cargo's lock on the target directory, so concurrent runs are safe.
    let root = std::env::temp_dir().join(format!("tagcast-fixtures-{:016x}", hash(&target)));

    let manifest = read_toml(&api_dir.join("Cargo.toml"))?;
    let real = manifest
        .get("package")
        .and_then(|p| p.get("version"))
        .and_then(toml::Value::as_str)
        .ok_or("plugin-api/Cargo.toml has no package.version")?
        .to_owned();
    let versions = ApiVersions::after(&real)?;

    for change in ApiChange::ALL {
        let dest = root.join("api-copies").join(change.label());
        write_api_copy(&repo, &dest, change, versions.of(change))?;
    }
    for fixture in Fixture::ALL {
        let dir = root.join(fixture.name());
        write_if_changed(&dir.join("Cargo.toml"), &member_manifest(fixture, &api_dir))?;
        write_if_changed(&dir.join("src/lib.rs"), fixture.source())?;
    }
    write_if_changed(&root.join("Cargo.toml"), &workspace_manifest())?;
    // The repository's lock file pins the versions that are in the local cache, which an
    // offline build needs; cargo adds the fixture packages to it.
    let lock =
        fs::read_to_string(repo.join("Cargo.lock")).map_err(|e| format!("Cargo.lock: {e}"))?;
    write_if_changed(&root.join("Cargo.lock"), &lock)?;

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = Instant::now();
    let output = Command::new(&cargo)
        .args(["build", "--offline", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
    let took = started.elapsed();
    if !output.status.success() {
        return Err(format!(
            "`cargo build --offline` in {} failed ({}):\n{}",
            root.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    // The figure a CI budget cares about; shown with --nocapture.
    eprintln!("fixture plugins built in {}", seconds(took));

    let fixtures = Fixtures {
        dir: target.join("debug"),
        versions,
    };
    for fixture in Fixture::ALL {
        let library = fixtures.library(fixture);
        if !library.is_file() {
            return Err(format!(
                "cargo succeeded but {} is missing",
                library.display()
            ));
        }
    }
    Ok(fixtures)
}

impl ApiVersions {
    /// The copy's version.
    fn of(&self, change: ApiChange) -> &str {
        match change {
            ApiChange::Layout => &self.next_patch,
            ApiChange::NextMajor => &self.next_major,
            ApiChange::NextMinor => &self.next_minor,
        }
    }

    fn after(real: &str) -> Result<ApiVersions, String> {
        let mut parts = real.split('.').map(str::parse::<u64>);
        let (Some(Ok(major)), Some(Ok(minor)), Some(Ok(patch))) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "plugin-api's version {real} is not major.minor.patch"
            ));
        };
        Ok(ApiVersions {
            real: real.to_owned(),
            next_patch: format!("{major}.{minor}.{}", patch + 1),
            next_major: format!("{}.0.0", major + 1),
            next_minor: format!("{major}.{}.0", minor + 1),
        })
    }
}

fn workspace_manifest() -> String {
    let members: Vec<String> = Fixture::ALL
        .iter()
        .map(|f| toml::Value::String(f.name().to_owned()).to_string())
        .collect();
    format!(
        "# Written by tagcast-tests (tests/src/plugin_fixtures.rs); changes are overwritten.\n\
         [workspace]\n\
         resolver = \"2\"\n\
         members = [{}]\n\
         # Path dependencies only: as members they would be uplifted to one file name.\n\
         exclude = [\"api-copies\"]\n\
         \n\
         [profile.dev]\n\
         # plugin-api turns a plugin's panic into an error by unwinding to the boundary.\n\
         panic = \"unwind\"\n\
         # Nothing reads debug info, and the fixtures are not edited between builds: both\n\
         # would only cost build time and disk.\n\
         debug = false\n\
         incremental = false\n",
        members.join(", ")
    )
}

fn member_manifest(fixture: Fixture, api_dir: &Path) -> String {
    let api = match fixture.api() {
        Api::Real => format!("tagcast-plugin-api = {{ path = {} }}\n", toml_path(api_dir)),
        Api::Copy(change) => format!(
            "tagcast-plugin-api = {{ path = \"../api-copies/{}\" }}\n",
            change.label()
        ),
        Api::None => String::new(),
    };
    let serde = match fixture.api() {
        Api::None => "",
        Api::Real | Api::Copy(_) => "serde = { version = \"1\", features = [\"derive\"] }\n",
    };
    format!(
        "[package]\n\
         name = \"{name}\"\n\
         version = \"{FIXTURE_VERSION}\"\n\
         edition = \"2021\"\n\
         publish = false\n\
         \n\
         [lib]\n\
         crate-type = [\"cdylib\"]\n\
         \n\
         [dependencies]\n\
         {api}{serde}",
        name = fixture.name(),
    )
}

/// Copies plugin-api into `dest` at `version`; for [`ApiChange::Layout`], `HostLogger` gets an
/// extra field.
///
/// The copy keeps the package name: abi_stable records each type's package in its layout
/// and refuses a mismatch, so a renamed copy would be refused for its name alone, and the
/// tests would not see the check they mean to. The real plugin-api and the copies can share
/// one build because their versions differ: a lock file tells path packages apart by name
/// and version only.
fn write_api_copy(
    repo: &Path,
    dest: &Path,
    change: ApiChange,
    version: &str,
) -> Result<(), String> {
    let source = repo.join("plugin-api");
    for file in files_under(&source)? {
        let relative = file.strip_prefix(&source).expect("listed under the source");
        if relative == Path::new("Cargo.toml") {
            continue;
        }
        let mut text = fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        if matches!(change, ApiChange::Layout) && relative == Path::new("src/abi.rs") {
            text = alter_host_logger(&text)?;
        }
        write_if_changed(&dest.join(relative), &text)?;
    }
    let manifest = api_copy_manifest(repo, version)?;
    write_if_changed(&dest.join("Cargo.toml"), &manifest)
}

/// Appends a field to `HostLogger`, which crosses the boundary when the engine loads the
/// plugin. Only the engine builds a `HostLogger`, so the altered copy still compiles: a type
/// that plugin-api itself constructs (`Options`, in its testing module) would not.
fn alter_host_logger(abi: &str) -> Result<String, String> {
    const END_OF_HOST_LOGGER: &str = "    pub log: extern \"C\" fn(&LogRecord<'_>),\n}\n";
    if abi.matches(END_OF_HOST_LOGGER).count() != 1 || !abi.contains("pub struct HostLogger {") {
        return Err(format!(
            "plugin-api/src/abi.rs no longer ends `HostLogger` with `{}`: update \
             alter_host_logger in tests/src/plugin_fixtures.rs to change another type's layout",
            END_OF_HOST_LOGGER.trim()
        ));
    }
    Ok(abi.replace(
        END_OF_HOST_LOGGER,
        "    pub log: extern \"C\" fn(&LogRecord<'_>),\n    /// Added by tagcast-tests: a layout the \
         engine must refuse.\n    pub altered: bool,\n}\n",
    ))
}

/// plugin-api's manifest as a standalone package: the keys it inherits from the tagcast
/// workspace (`x.workspace = true`) replaced by the workspace's values, since the copy is
/// in no such workspace.
fn api_copy_manifest(repo: &Path, version: &str) -> Result<String, String> {
    let root = read_toml(&repo.join("Cargo.toml"))?;
    let workspace = |section: &str| {
        root.get("workspace")
            .and_then(|w| w.get(section))
            .and_then(toml::Value::as_table)
            .cloned()
            .unwrap_or_default()
    };
    let (inherited_package, inherited_deps) = (workspace("package"), workspace("dependencies"));
    let mut manifest = read_toml(&repo.join("plugin-api/Cargo.toml"))?;

    let package_table = manifest
        .get_mut("package")
        .and_then(toml::Value::as_table_mut)
        .ok_or("plugin-api/Cargo.toml has no [package]")?;
    for (key, value) in package_table.iter_mut() {
        if is_inherited(value) {
            *value = inherited_package
                .get(key)
                .cloned()
                .ok_or(format!("workspace.package.{key} is missing"))?;
        }
    }
    package_table.insert("version".into(), version.into());

    // Neither the copy's tests nor the workspace's lint table are wanted here.
    manifest.remove("dev-dependencies");
    manifest.remove("lints");
    for section in ["dependencies", "build-dependencies"] {
        let Some(deps) = manifest
            .get_mut(section)
            .and_then(toml::Value::as_table_mut)
        else {
            continue;
        };
        for (name, dep) in deps.iter_mut() {
            if !is_inherited(dep) {
                continue;
            }
            let mut resolved = match inherited_deps.get(name) {
                Some(toml::Value::String(version)) => {
                    toml::Table::from_iter([("version".to_owned(), version.as_str().into())])
                }
                Some(toml::Value::Table(table)) => table.clone(),
                _ => return Err(format!("workspace.dependencies.{name} is missing")),
            };
            // A member may add features and optionality to what it inherits.
            for (key, value) in dep.as_table().into_iter().flatten() {
                match (key.as_str(), resolved.get_mut(key)) {
                    ("workspace", _) => {}
                    ("features", Some(toml::Value::Array(features))) => {
                        features.extend(value.as_array().into_iter().flatten().cloned());
                    }
                    _ => {
                        resolved.insert(key.clone(), value.clone());
                    }
                }
            }
            *dep = toml::Value::Table(resolved);
        }
    }
    toml::to_string(&manifest)
        .map_err(|e| format!("cannot write the plugin-api copy's manifest: {e}"))
}

fn is_inherited(value: &toml::Value) -> bool {
    value.get("workspace").and_then(toml::Value::as_bool) == Some(true)
}

fn read_toml(path: &Path) -> Result<toml::Table, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every file under `dir`, skipping `target` folders.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
            if path.is_dir() {
                if path.file_name() != Some(OsStr::new("target")) {
                    pending.push(path);
                }
            } else {
                files.push(path);
            }
        }
    }
    Ok(files)
}

/// Writes `contents` to `path` unless it already holds them, keeping the mtime cargo's
/// fingerprints compare; the rename makes the write atomic for a concurrent run.
fn write_if_changed(path: &Path, contents: &str) -> Result<(), String> {
    if fs::read(path).is_ok_and(|old| old == contents.as_bytes()) {
        return Ok(());
    }
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let parent = path.parent().expect("fixture files sit in a folder");
    fs::create_dir_all(parent).map_err(fail)?;
    let file_name = path
        .file_name()
        .expect("fixture files have names")
        .to_string_lossy();
    let partial = parent.join(format!(".{file_name}.{}.partial", std::process::id()));
    fs::write(&partial, contents).map_err(fail)?;
    fs::rename(&partial, path).map_err(fail)
}

fn hash(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
