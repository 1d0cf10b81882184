//! The `tagcast` binary run as a process, one command at a time: [`Cli`] builds the command
//! line, [`Outcome`] holds what the process wrote and checks it, [`Scratch`] holds the
//! configs a test writes.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::engine::{built, temp_dir};

/// A temporary directory for one test's files, removed when the test passes and kept when
/// it fails, for a look at the config it ran with.
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// A fresh directory; `label` names the test in its path.
    pub fn new(label: &str) -> Scratch {
        Scratch {
            dir: temp_dir(label),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes `text` to the file `name` in the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// One run of the `tagcast` command line, built up and then [`Cli::run`].
pub struct Cli {
    command: Command,
    /// Shown in assertion messages.
    line: String,
    stdin: String,
}

impl Cli {
    /// `tagcast <args>`, with `RUST_LOG=warn` so that the caller's environment cannot change
    /// what the process writes.
    pub fn new<I, S>(args: I) -> Cli
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(built("tagcast"));
        let args: Vec<S> = args.into_iter().collect();
        command.args(&args).env("RUST_LOG", "warn");
        let line = std::iter::once("tagcast".into())
            .chain(args.iter().map(|a| a.as_ref().to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ");
        Cli {
            command,
            line,
            stdin: String::new(),
        }
    }

    /// `tagcast tags --config <config> <flags>`.
    pub fn tags(config: &Path, flags: &[&str]) -> Cli {
        let mut args = vec![
            OsStr::new("tags"),
            OsStr::new("--config"),
            config.as_os_str(),
        ];
        args.extend(flags.iter().map(OsStr::new));
        Cli::new(args)
    }

    /// `tagcast check --config <config>`.
    pub fn check(config: &Path) -> Cli {
        Cli::new([
            OsStr::new("check"),
            OsStr::new("--config"),
            config.as_os_str(),
        ])
    }

    /// `tagcast plugins --config <config>`.
    pub fn plugins(config: &Path) -> Cli {
        Cli::new([
            OsStr::new("plugins"),
            OsStr::new("--config"),
            config.as_os_str(),
        ])
    }

    /// Logs as JSON lines at `filter` (a RUST_LOG value), for [`Outcome::log_events`].
    pub fn json_logs(mut self, filter: &str) -> Cli {
        self.command
            .arg("--log-format")
            .arg("json")
            .env("RUST_LOG", filter);
        self
    }

    /// The text written to the process's stdin.
    pub fn stdin(mut self, text: &str) -> Cli {
        self.stdin = text.to_owned();
        self
    }

    /// Runs the process to its end.
    pub fn run(mut self) -> Outcome {
        let mut child = self
            .command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", self.line));
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let input = std::mem::take(&mut self.stdin);
        // Written from a thread so that a process that answers before reading all its input
        // cannot deadlock against a full stdout pipe. It may exit without reading (bad
        // config): a broken pipe is then expected and ignored.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let output = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("cannot wait for `{}`: {e}", self.line));
        writer.join().expect("the stdin writer does not panic");
        Outcome {
            line: self.line,
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// What a finished `tagcast` process did.
#[derive(Debug)]
pub struct Outcome {
    /// The command line, for messages.
    pub line: String,
    /// The exit code; None if a signal ended it (a crash).
    pub code: Option<i32>,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr: logs, and the error message if any.
    pub stderr: String,
}

impl Outcome {
    /// Stdout, after checking that the process exited with 0.
    pub fn success(&self) -> &str {
        assert_eq!(
            self.code,
            Some(0),
            "`{}` failed\nstdout:\n{}\nstderr:\n{}",
            self.line,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// The tags printed by a successful `tagcast tags`, one list per input document.
    pub fn tag_lists(&self) -> Vec<Vec<String>> {
        self.success()
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("`{}` printed {line:?}, not tags: {e}", self.line))
            })
            .collect()
    }

    /// The error message of a run that must fail with exit code 2 (bad input or config):
    /// what follows `tagcast: `, checked to be a readable message, not a panic or a Rust
    /// debug dump.
    pub fn input_error(&self) -> String {
        assert_eq!(
            self.code,
            Some(2),
            "`{}` must exit with 2\nstdout:\n{}\nstderr:\n{}",
            self.line,
            self.stdout,
            self.stderr
        );
        let start = self.stderr.find("tagcast: ").unwrap_or_else(|| {
            panic!(
                "`{}` printed no `tagcast: ` error:\n{}",
                self.line, self.stderr
            )
        });
        let message = self.stderr[start + "tagcast: ".len()..]
            .trim_end()
            .to_owned();
        // A panic's own report goes to stderr before any message.
        assert!(
            !self.stderr.contains("panicked at"),
            "`{}` panicked:\n{}",
            self.line,
            self.stderr
        );
        for dump in [
            "panicked",
            "RUST_BACKTRACE",
            "Error {",
            "Os {",
            "Some(",
            "\\n",
        ] {
            assert!(
                !message.contains(dump),
                "`{}` printed `{dump}`, not a readable message:\n{message}",
                self.line,
            );
        }
        message
    }

    /// The log events on stderr of a run with [`Cli::json_logs`].
    pub fn log_events(&self) -> Vec<Value> {
        self.stderr
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(Value::is_object)
            .collect()
    }

    /// The first log event whose fields include every `(name, value)` of `fields`.
    pub fn find_event(&self, fields: &[(&str, &str)]) -> Option<Value> {
        self.log_events().into_iter().find(|event| {
            fields
                .iter()
                .all(|(name, value)| event["fields"][*name].as_str() == Some(*value))
        })
    }
}
