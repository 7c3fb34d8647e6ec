//! Dockerfile parsing and Docker-style variable expansion.
//!
//! The parser follows BuildKit's observable behaviour: parser directives,
//! line continuations, comments inside continuations, JSON (exec) versus
//! shell forms, flags and heredocs. Values are kept raw; expansion happens
//! later through [`expand_word`] / [`expand_words`] once the build knows the
//! variables in scope.
//!
//! `parse` reads lines (directives, continuations, heredoc bodies),
//! `instruction` reads each instruction's arguments and flags, `words`
//! splits shell words, `json` reads the exec form, `expand` substitutes
//! variables (with `pattern` for `${V#pat}`, `${V%pat}` and `${V/pat/repl}`).

mod expand;
mod instruction;
mod json;
mod parse;
mod pattern;
mod run;
mod words;

#[cfg(test)]
mod tests;

pub use expand::{expand_heredoc, expand_word, expand_words};
pub use parse::{heredoc_name, parse};
pub use run::{CacheSharing, MountType, RunMount, RunNetwork};

use std::time::Duration;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// From the `# escape=` directive, default `\`.
    pub escape: char,
    /// The `# syntax=` directive, recorded only.
    pub syntax: Option<String>,
    /// The `# check=` directive, recorded only.
    pub check: Option<String>,
    /// ARGs before the first FROM.
    pub global_args: Vec<ArgDecl>,
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub from: From,
    pub instructions: Vec<Instruction>,
    pub index: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    /// Raw, unexpanded.
    pub image: String,
    pub platform: Option<String>,
    /// Lower-cased, as Docker treats stage names case-insensitively.
    pub alias: Option<String>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: String,
    /// Raw, unexpanded.
    pub default: Option<String>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line where the instruction starts.
    pub line: usize,
    /// Keyword upper-cased plus the joined arguments, as shown in image history.
    pub original: String,
    pub kind: InstructionKind,
    /// Heredocs attached to RUN, COPY or ADD (COPY/ADD also carry them in
    /// [`CopyArgs::heredocs`]); RUN has no other place to keep them.
    pub heredocs: Vec<Heredoc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstructionKind {
    Copy(CopyArgs),
    Add(CopyArgs),
    /// Raw values (quotes and escapes still present).
    Env(Vec<(String, String)>),
    /// Raw values.
    Label(Vec<(String, String)>),
    Arg(Vec<ArgDecl>),
    Workdir(String),
    Expose(Vec<String>),
    User(String),
    Volume(Vec<String>),
    Entrypoint(Command),
    Cmd(Command),
    Run(RunArgs),
    Shell(Vec<String>),
    StopSignal(String),
    Healthcheck(Healthcheck),
    /// The trigger text, validated to be a legal nested instruction.
    Onbuild(String),
    Maintainer(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyArgs {
    pub sources: Vec<String>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    /// `ADD --checksum=sha256:...`, raw.
    pub checksum: Option<String>,
    pub link: bool,
    pub heredocs: Vec<Heredoc>,
}

/// RUN's command and flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunArgs {
    pub command: Command,
    pub mounts: Vec<RunMount>,
    pub network: RunNetwork,
}

impl RunArgs {
    /// A command with no flags.
    pub fn plain(command: Command) -> RunArgs {
        RunArgs {
            command,
            mounts: Vec::new(),
            network: RunNetwork::Default,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter, e.g. `EOF`.
    pub name: String,
    pub content: String,
    /// False when the delimiter was quoted.
    pub expand: bool,
    /// The `<<-` form: leading tabs were stripped from the content.
    pub chomp_tabs: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Exec(Vec<String>),
    Shell(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", cmd]`.
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// The most of a Dockerfile that is read.
pub const MAX_BYTES: u64 = 2 << 20;
