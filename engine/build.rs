//! Link settings for the engine's benchmarks only.
//!
//! The chain benchmark links both bundled plugins as rlibs, to call their generators
//! in-process beside the same plugins loaded through the ABI. Each plugin library exports
//! the root-module symbol abi_stable looks up, under one fixed name, so the two rlibs define
//! it twice. The benchmark never reads either definition; letting the linker keep the first
//! is harmless there, and no other target links the plugins.

fn main() {
    println!("cargo:rustc-link-arg-benches=-Wl,--allow-multiple-definition");
    println!("cargo:rerun-if-changed=build.rs");
}
