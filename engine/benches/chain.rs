//! The cost of the generator chain per change, through the ABI (the bundled plugins loaded
//! from their shared libraries) beside the same generator code called in-process.
//!
//! Input: a ~1 KB entity (`App\Entity\Task` with an id and eighteen more fields, two of them
//! nested entities) through entity-tags and simple-tags, with collection and nested tags.
//!
//! Run: `cargo build --release --workspace && cargo bench -p tagcast --bench chain`
//! (the plugin libraries are looked up in the directory of the benchmark's target profile).

use std::path::PathBuf;
use std::sync::Arc;

use entity_tags::{EntityConfig, EntityGenerator};
use simple_tags::{SimpleConfig, SimpleGenerator};
use tagcast::{Chain, LoadedConfig, Registry};
use tagcast_plugin_api::{Data, Generator, Options, Tags};

fn main() {
    divan::main();
}

/// A ~1 KB entity with nested entities.
fn entity() -> Data {
    let json = serde_json_text();
    assert!(
        (900..1300).contains(&json.len()),
        "entity is {} bytes",
        json.len()
    );
    Data::from_json_str(&json).expect("the benchmark's entity is valid JSON")
}

fn serde_json_text() -> String {
    let mut fields = String::new();
    for i in 0..19 {
        fields.push_str(&format!(
            r#","field_{i}":"a value of some length, number {i:02}""#
        ));
    }
    format!(
        r#"{{"class":"App\\Entity\\Task","id":42,"owner":{{"class":"App\\Entity\\User","id":7}},"watchers":[{{"class":"App\\Entity\\User","id":8}},{{"class":"App\\Entity\\User","id":9}}]{fields}}}"#
    )
}

const OPTIONS: Options = Options {
    collection: true,
    nested: true,
};

/// The same generators, called directly.
fn in_process(data: &Data, entity: &EntityGenerator, simple: &SimpleGenerator) -> Vec<String> {
    let mut tags = Tags::new();
    for generator in [entity as &dyn Generator, simple as &dyn Generator] {
        if generator.supports(data.root()) {
            // Bench input is fixed; generation cannot fail on it.
            generator
                .generate(data.root(), OPTIONS, &mut tags)
                .expect("generation succeeds");
        }
    }
    let mut out: Vec<String> = Vec::new();
    for tag in tags.into_vec() {
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    out
}

#[divan::bench]
fn in_process_generators(bencher: divan::Bencher) {
    let data = entity();
    let entity_gen = EntityGenerator::new(EntityConfig::default()).expect("default config");
    let simple_gen = SimpleGenerator::new(SimpleConfig::default()).expect("default config");
    assert_eq!(in_process(&data, &entity_gen, &simple_gen).len(), 5);
    bencher.bench_local(|| in_process(divan::black_box(&data), &entity_gen, &simple_gen));
}

/// The chain of the bundled plugins, loaded from their libraries.
fn loaded_chain() -> Arc<Chain> {
    let profile_dir: PathBuf = std::env::current_exe()
        .expect("current exe")
        .parent()
        .and_then(|deps| deps.parent())
        .expect("bench binary lives in target/<profile>/deps")
        .to_owned();
    let text = format!(
        "plugin_dir = {:?}\n[chain]\ngenerators = [\"entity-tags\", \"simple-tags\"]\n\
         [plugins.entity-tags]\n[plugins.simple-tags]\n",
        profile_dir
    );
    let config =
        LoadedConfig::parse(std::path::Path::new("bench.toml"), text).expect("bench config parses");
    let registry = Registry::load(&config).unwrap_or_else(|e| {
        panic!("{e}\n(build the plugins first: cargo build --release --workspace)")
    });
    let chain = Chain::build(&config, &registry).expect("chain builds");
    // The registry holds only handles to libraries that are never unloaded.
    std::mem::forget(registry);
    Arc::new(chain)
}

#[divan::bench]
fn through_abi_chain(bencher: divan::Bencher) {
    let data = entity();
    let chain = loaded_chain();
    assert_eq!(chain.tags(&data, OPTIONS).len(), 5);
    bencher.bench_local(|| chain.tags(divan::black_box(&data), OPTIONS));
}
