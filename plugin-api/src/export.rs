//! What [`crate::export_plugin!`] expands to: the root module of a plugin library, built
//! from the plugin's name and constructors. Not part of the public API.

use abi_stable::library::{CheckTypeLayout, LibHeader, RootModuleResult};
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RStr};
use serde::de::DeserializeOwned;

use crate::abi::{
    GeneratorAbi_TO, GeneratorBox, HostLogger, Manifest, PluginError, PluginMod, PluginModRef,
    SourceAbi_TO, SourceBox,
};
use crate::error::Error;
use crate::generator::{Generator, GeneratorAdapter};
use crate::guard::{guarded, install_quiet_panic_hook};
use crate::source::{Source, SourceAdapter};

pub use abi_stable;

/// The symbol abi_stable looks up in a plugin library. abi_stable derives it by mangling a
/// fixed name; it is spelled out here because `#[export_root_module]` refers to
/// `::abi_stable`, which a plugin built against plugin-api alone does not have. A test checks
/// it against abi_stable's own constant.
pub const ROOT_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

/// Implemented by the `export_plugin!` macro on a hidden type in the plugin crate.
pub trait Plugin: 'static {
    /// The plugin's name.
    const NAME: &'static str;
    /// The plugin crate's version.
    const VERSION: &'static str;
    /// Whether a generator constructor was given.
    const GENERATOR: bool;
    /// Whether a source constructor was given.
    const SOURCE: bool;

    /// Builds the generator from its settings text.
    fn new_generator(settings: &str) -> Result<GeneratorBox, Error>;

    /// Builds the source from its settings text.
    fn new_source(settings: &str) -> Result<SourceBox, Error>;
}

/// The library header static a plugin exports.
pub const fn lib_header<P: Plugin>() -> LibHeader {
    // SAFETY: `from_constructor` requires the constructor to return a type-erased
    // `PluginModRef`; `root_loader::<P>` returns exactly `root_module::<P>()` through
    // abi_stable's own loader shim.
    #[allow(unsafe_code)]
    unsafe {
        LibHeader::from_constructor::<PluginModRef>(root_loader::<P>, CheckTypeLayout::Yes)
    }
}

extern "C" fn root_loader<P: Plugin>() -> RootModuleResult {
    abi_stable::library::__call_root_module_loader(root_module::<P>)
}

fn root_module<P: Plugin>() -> PluginModRef {
    PluginMod {
        manifest: manifest::<P>,
        set_logger: set_logger::<P>,
        new_generator: new_generator::<P>,
        new_source: new_source::<P>,
    }
    .leak_into_prefix()
}

extern "C" fn manifest<P: Plugin>() -> Manifest {
    Manifest {
        name: RStr::from_str(P::NAME),
        version: RStr::from_str(P::VERSION),
        api_version: RStr::from_str(crate::API_VERSION),
        generator: P::GENERATOR,
        source: P::SOURCE,
    }
}

extern "C" fn set_logger<P: Plugin>(logger: HostLogger) {
    install_quiet_panic_hook();
    crate::logging::install(P::NAME, logger);
}

extern "C" fn new_generator<P: Plugin>(settings: RStr<'_>) -> RResult<GeneratorBox, PluginError> {
    guarded(P::NAME, || P::new_generator(settings.as_str()))
}

extern "C" fn new_source<P: Plugin>(settings: RStr<'_>) -> RResult<SourceBox, PluginError> {
    guarded(P::NAME, || P::new_source(settings.as_str()))
}

/// Parses settings and builds a generator object with `ctor`.
pub fn build_generator<C, G>(
    plugin: &'static str,
    settings: &str,
    ctor: impl FnOnce(C) -> Result<G, Error>,
) -> Result<GeneratorBox, Error>
where
    C: DeserializeOwned,
    G: Generator,
{
    let inner = ctor(crate::parse_settings(settings)?)?;
    Ok(GeneratorAbi_TO::from_value(
        GeneratorAdapter { plugin, inner },
        TD_Opaque,
    ))
}

/// Parses settings and builds a source object with `ctor`.
pub fn build_source<C, S>(
    plugin: &'static str,
    settings: &str,
    ctor: impl FnOnce(C) -> Result<S, Error>,
) -> Result<SourceBox, Error>
where
    C: DeserializeOwned,
    S: Source,
{
    let inner = ctor(crate::parse_settings(settings)?)?;
    Ok(SourceAbi_TO::from_value(
        SourceAdapter { plugin, inner },
        TD_Opaque,
    ))
}

/// The error for a constructor the plugin does not provide.
pub fn not_provided(plugin: &str, what: &str) -> Error {
    Error::new(format!("plugin `{plugin}` provides no {what}"))
}

/// Exports a plugin library's root module. Invoke once, at the crate root of a `cdylib`,
/// with the plugin's name and a constructor for its generator, its source, or both; each
/// constructor takes the plugin's settings type, deserialized from its `settings` table
/// (make it `#[serde(deny_unknown_fields)]` so that typos are start-up errors):
///
/// ```
/// use serde::Deserialize;
/// use tagcast_plugin_api::{export_plugin, Error, Generator, Options, Tags, Value};
///
/// #[derive(Deserialize)]
/// #[serde(deny_unknown_fields)]
/// pub struct Settings {
///     prefix: String,
/// }
///
/// pub struct Prefixed(String);
///
/// impl Prefixed {
///     pub fn new(settings: Settings) -> Result<Prefixed, Error> {
///         Ok(Prefixed(settings.prefix))
///     }
/// }
///
/// impl Generator for Prefixed {
///     fn supports(&self, data: Value<'_>) -> bool {
///         data.get("id").is_some()
///     }
///
///     fn generate(&self, data: Value<'_>, _: Options, tags: &mut Tags) -> Result<(), Error> {
///         let mut tag = self.0.clone();
///         if let Some(id) = data.get("id") {
///             id.write_scalar(&mut tag);
///         }
///         tags.push(tag);
///         Ok(())
///     }
/// }
///
/// export_plugin! { name: "prefixed", generator: Prefixed::new }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr $(, generator: $generator:expr)? $(, source: $source:expr)? $(,)?) => {
        #[doc(hidden)]
        pub struct __TagcastPlugin;

        impl $crate::__private::Plugin for __TagcastPlugin {
            const NAME: &'static str = $name;
            const VERSION: &'static str = ::core::env!("CARGO_PKG_VERSION");
            const GENERATOR: bool = <[&str]>::len(&[$(::core::stringify!($generator))?]) == 1;
            const SOURCE: bool = <[&str]>::len(&[$(::core::stringify!($source))?]) == 1;

            #[allow(unreachable_code, unused_variables)]
            fn new_generator(
                settings: &str,
            ) -> ::core::result::Result<$crate::abi::GeneratorBox, $crate::Error> {
                $(return $crate::__private::build_generator(Self::NAME, settings, $generator);)?
                ::core::result::Result::Err($crate::__private::not_provided(Self::NAME, "generator"))
            }

            #[allow(unreachable_code, unused_variables)]
            fn new_source(
                settings: &str,
            ) -> ::core::result::Result<$crate::abi::SourceBox, $crate::Error> {
                $(return $crate::__private::build_source(Self::NAME, settings, $source);)?
                ::core::result::Result::Err($crate::__private::not_provided(Self::NAME, "source"))
            }
        }

        // The one exported symbol of a plugin library; the name is abi_stable's (see
        // `ROOT_SYMBOL`, which a plugin-api test keeps in step).
        #[doc(hidden)]
        #[allow(unsafe_code)]
        #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
        pub static __TAGCAST_LIB_HEADER: $crate::__private::abi_stable::library::LibHeader =
            $crate::__private::lib_header::<__TagcastPlugin>();
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_symbol_matches_abi_stable() {
        assert_eq!(
            super::ROOT_SYMBOL,
            abi_stable::library::ROOT_MODULE_LOADER_NAME
        );
    }
}
