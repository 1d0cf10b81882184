//! The `tagcast` command line: parses arguments, installs logging, and calls into the
//! library. Errors are printed as one message chain and mapped to an exit code: 2 for bad
//! input or config, 1 for anything else.

use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tagcast::config::DEFAULT_CONFIG_PATH;
use tagcast::{Engine, StartError};
use tagcast_plugin_api::{Data, Options};

#[derive(Parser)]
#[command(
    name = "tagcast",
    version,
    about = "Content-outdated notifications for browsers"
)]
struct Cli {
    /// Log line format (the filter comes from RUST_LOG, default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve WebSocket subscribers and the HTTP API.
    Serve(ConfigArg),
    /// Read JSON documents on stdin (one, or one per line) and print each one's tags as a
    /// JSON array.
    Tags {
        #[command(flatten)]
        config: ConfigArg,
        /// Include collection tags, as for inserts and deletes.
        #[arg(long)]
        collection: bool,
        /// Include the tags of nested entities.
        #[arg(long)]
        nested: bool,
    },
    /// List the loaded plugins.
    Plugins(ConfigArg),
    /// Validate the config and load its plugins, then exit.
    Check(ConfigArg),
}

#[derive(Args)]
struct ConfigArg {
    /// The config file.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
}

/// A failure and the exit code it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl From<StartError> for Failure {
    fn from(err: StartError) -> Self {
        Failure {
            code: err.exit_code(),
            error: err.into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => serve(&args.config),
        Command::Tags {
            config,
            collection,
            nested,
        } => tags(&config.config, Options { collection, nested }),
        Command::Plugins(args) => plugins(&args.config),
        Command::Check(args) => check(&args.config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("tagcast: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(config: &std::path::Path) -> Result<(), Failure> {
    let engine = Engine::load(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure {
            code: 1,
            error: anyhow::Error::new(e).context("cannot start the async runtime"),
        })?;
    runtime.block_on(tagcast::server::run(engine))?;
    Ok(())
}

fn tags(config: &std::path::Path, options: Options) -> Result<(), Failure> {
    let engine = Engine::load(config)?;
    let mut input = String::new();
    io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| Failure {
            code: 1,
            error: anyhow::Error::new(e).context("cannot read stdin"),
        })?;
    let out = io::stdout().lock();
    let mut out = BufWriter::new(out);
    let stream = serde_json::Deserializer::from_str(&input).into_iter::<Data>();
    for (index, document) in stream.enumerate() {
        let data = document.map_err(|e| Failure {
            code: 2,
            error: anyhow::anyhow!("stdin: document {}: invalid JSON: {e}", index + 1),
        })?;
        let tags = engine.chain.tags(&data, options);
        // A Vec<String> always serializes.
        let line = serde_json::to_string(&tags).expect("tags serialize");
        writeln!(out, "{line}").map_err(write_failure)?;
    }
    out.flush().map_err(write_failure)
}

fn plugins(config: &std::path::Path) -> Result<(), Failure> {
    let engine = Engine::load(config)?;
    let mut out = io::stdout().lock();
    for plugin in engine.registry.plugins() {
        writeln!(
            out,
            "{}\t{}\t{}\t{}",
            plugin.name,
            plugin.version,
            plugin.kinds().join(","),
            plugin.library.display()
        )
        .map_err(write_failure)?;
    }
    Ok(())
}

fn check(config: &std::path::Path) -> Result<(), Failure> {
    let engine = Engine::load(config)?;
    engine.check_plugins()?;
    let count = engine.registry.plugins().len();
    let generators: Vec<&str> = engine.chain.plugins().collect();
    writeln!(
        io::stdout().lock(),
        "{}: ok ({count} plugin{} loaded; chain: {})",
        config.display(),
        if count == 1 { "" } else { "s" },
        if generators.is_empty() {
            "empty".to_owned()
        } else {
            generators.join(" → ")
        }
    )
    .map_err(write_failure)
}

fn write_failure(e: io::Error) -> Failure {
    Failure {
        code: 1,
        error: anyhow::Error::new(e).context("cannot write to stdout"),
    }
}
