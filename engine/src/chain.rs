//! The generator chain: every enabled generator that supports the data, in the configured
//! order, with their tags merged and duplicates removed (the first occurrence stays).
//!
//! A generator that fails or panics on one input does not stop the chain: the input still
//! gets the other generators' tags, and the failure is logged once, here, with the plugin's
//! name, and counted per plugin for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use abi_stable::std_types::{RResult, RString, RVec};
use tagcast_plugin_api::abi::{GeneratorBox, PluginError};
use tagcast_plugin_api::{Data, Options};
use tracing::{info, warn};

use crate::config::{ConfigError, LoadedConfig};
use crate::plugins::{settings_error, Registry};

/// One generator in the chain.
struct Link {
    /// The plugin's name, for logs and metrics.
    plugin: String,
    /// The plugin's generator object; dropped with the chain.
    generator: GeneratorBox,
    /// Failed or panicked generations, for `tagcast_generation_errors_total`.
    errors: AtomicU64,
}

/// The configured generators, ready to run. Shared by every task that turns data into tags.
pub struct Chain {
    links: Vec<Link>,
}

impl Chain {
    /// Builds each generator named in `chain.generators` from its plugin's settings.
    pub fn build(config: &LoadedConfig, registry: &Registry) -> Result<Chain, ConfigError> {
        let mut links = Vec::new();
        for entry in &config.config.chain.generators {
            let name = entry.get_ref().as_str();
            // validate() guarantees a [plugins.<name>] table for every chain entry.
            let enabled = config.config.plugins.get(name).is_some_and(|p| p.enabled);
            if !enabled {
                info!(plugin = %name, "generator skipped: plugin disabled");
                continue;
            }
            let plugin = registry
                .get(name)
                .expect("every enabled plugin table is loaded into the registry");
            if !plugin.generator {
                return Err(config.invalid_at(
                    entry.span(),
                    format!(
                        "chain.generators lists `{name}`, but that plugin provides no generator \
                         (it provides: {})",
                        plugin.kinds().join(", ")
                    ),
                ));
            }
            let generator = plugin
                .new_generator()
                .map_err(|err| settings_error(config, name, &err))?;
            links.push(Link {
                plugin: name.to_owned(),
                generator,
                errors: AtomicU64::new(0),
            });
        }
        Ok(Chain { links })
    }

    /// A chain of already built generators, in order: for benchmarks and tests.
    pub fn from_generators(generators: Vec<(String, GeneratorBox)>) -> Chain {
        let links = generators
            .into_iter()
            .map(|(plugin, generator)| Link {
                plugin,
                generator,
                errors: AtomicU64::new(0),
            })
            .collect();
        Chain { links }
    }

    /// The generators' plugin names, in order.
    pub fn plugins(&self) -> impl Iterator<Item = &str> {
        self.links.iter().map(|l| l.plugin.as_str())
    }

    /// Failed generations per plugin, in chain order.
    pub fn error_counts(&self) -> impl Iterator<Item = (&str, u64)> {
        self.links
            .iter()
            .map(|l| (l.plugin.as_str(), l.errors.load(Ordering::Relaxed)))
    }

    /// The tags of `data`: each supporting generator's, in chain order, without duplicates.
    pub fn tags(&self, data: &Data, options: Options) -> Vec<String> {
        let mut all = RVec::new();
        // Each generator writes into its own buffer: one that panics loses that buffer, and
        // must not take the other generators' tags with it.
        let mut scratch = RVec::new();
        for link in &self.links {
            match link.run(data, options, &mut scratch) {
                Ok(()) => all.extend(scratch.drain(..)),
                Err(err) => {
                    // A failed generation contributes nothing, not a partial list.
                    scratch.clear();
                    link.errors.fetch_add(1, Ordering::Relaxed);
                    warn!(plugin = %link.plugin, error = %err, "tag generation failed");
                }
            }
        }
        dedup_keep_first(all)
    }
}

impl Link {
    fn run(
        &self,
        data: &Data,
        options: Options,
        out: &mut RVec<RString>,
    ) -> Result<(), PluginError> {
        match self.generator.supports(data) {
            RResult::ROk(true) => {}
            RResult::ROk(false) => return Ok(()),
            RResult::RErr(err) => return Err(err),
        }
        self.generator.generate(data, options, out).into_result()
    }
}

/// Removes duplicates, keeping each tag's first occurrence in place. A change usually
/// carries a handful of tags, where a linear scan beats hashing; nested data can carry many.
fn dedup_keep_first(all: RVec<RString>) -> Vec<String> {
    const LINEAR_MAX: usize = 32;
    let mut tags: Vec<String> = Vec::with_capacity(all.len());
    if all.len() <= LINEAR_MAX {
        for tag in all {
            if !tags.iter().any(|t| t.as_str() == tag.as_str()) {
                tags.push(tag.into_string());
            }
        }
    } else {
        let mut seen = std::collections::HashSet::with_capacity(all.len());
        for tag in all {
            if seen.insert(tag.clone()) {
                tags.push(tag.into_string());
            }
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_keeps_first_occurrence_order() {
        let tags: RVec<RString> = ["b", "a", "b", "c", "a"]
            .into_iter()
            .map(RString::from)
            .collect();
        assert_eq!(dedup_keep_first(tags), ["b", "a", "c"]);
    }

    #[test]
    fn dedup_of_many_tags_matches_linear_dedup() {
        let tags: RVec<RString> = (0..200)
            .map(|i| RString::from(format!("t{}", i % 70)))
            .collect();
        let expected: Vec<String> = (0..70).map(|i| format!("t{i}")).collect();
        assert_eq!(dedup_keep_first(tags), expected);
    }
}
