//! What kind of failure ended a command, and the exit code that tells a script. Modules keep
//! returning `anyhow` errors; the few that mean something to a caller carry a `Kind`, either as
//! their own type (configuration, unreachable hosts: recognised in `main`) or tagged here.

use serde::Serialize;
use std::fmt;

/// Exit codes, documented in `pgctl --help` and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// 1: the operation was tried and failed.
    Failed,
    /// 2: bad configuration or usage; nothing was changed.
    Config,
    /// 3: a host's Docker engine or the S3 repository could not be reached.
    Unreachable,
    /// 4: refused as unsafe (safety pin, pre-flight, not confirmed); nothing was changed.
    Refused,
}

impl Kind {
    pub fn code(self) -> u8 {
        match self {
            Kind::Failed => 1,
            Kind::Config => 2,
            Kind::Unreachable => 3,
            Kind::Refused => 4,
        }
    }
}

/// Text for `--help` and the README.
pub const EXIT_CODES: &str = "Exit codes: 0 success; 1 the operation failed; 2 bad configuration or usage \
(nothing changed); 3 a host or S3 unreachable; 4 refused as unsafe (safety pin, pre-flight, not confirmed; nothing changed).";

/// An error with its kind; displays as the error it wraps.
#[derive(Debug)]
pub struct Tagged {
    pub kind: Kind,
    inner: anyhow::Error,
}

impl fmt::Display for Tagged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.inner)
    }
}

impl std::error::Error for Tagged {}

/// A new error of `kind`.
pub fn tagged(kind: Kind, message: impl fmt::Display) -> anyhow::Error {
    Tagged {
        kind,
        inner: anyhow::anyhow!("{message}"),
    }
    .into()
}

/// A refusal: the command would be unsafe, so nothing was changed.
pub fn refused(message: impl fmt::Display) -> anyhow::Error {
    tagged(Kind::Refused, message)
}

/// Bad input on the command line or in a file the user gave.
pub fn usage(message: impl fmt::Display) -> anyhow::Error {
    tagged(Kind::Config, message)
}

pub trait Classify<T> {
    /// Marks the error (if any) as being of `kind`.
    fn kind(self, kind: Kind) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> Classify<T> for Result<T, E> {
    fn kind(self, kind: Kind) -> anyhow::Result<T> {
        self.map_err(|e| Tagged { kind, inner: e.into() }.into())
    }
}

/// The kind of `err`: the outermost tag in its chain decides; `typed` recognises the typed
/// errors of modules above this one (configuration, unreachable hosts), which `main` passes in
/// so that this module depends on none of them.
pub fn kind_of(err: &anyhow::Error, typed: impl Fn(&(dyn std::error::Error + 'static)) -> Option<Kind>) -> Kind {
    for cause in err.chain() {
        if let Some(t) = cause.downcast_ref::<Tagged>() {
            return t.kind;
        }
        if let Some(kind) = typed(cause) {
            return kind;
        }
    }
    Kind::Failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn kinds_survive_context() {
        let e: anyhow::Result<()> = Err(refused("remove needs --i-am-aware"));
        let e = e.context("removing cluster main").unwrap_err();
        let none = |_: &(dyn std::error::Error + 'static)| None;
        assert_eq!(kind_of(&e, none), Kind::Refused);
        assert_eq!(format!("{e:#}"), "removing cluster main: remove needs --i-am-aware");
        let plain = anyhow::anyhow!("boom");
        assert_eq!(kind_of(&plain, none), Kind::Failed);
        let io: Result<(), std::io::Error> = Err(std::io::Error::other("no route"));
        assert_eq!(kind_of(&io.kind(Kind::Unreachable).unwrap_err(), none), Kind::Unreachable);
        assert_eq!(
            [Kind::Failed, Kind::Config, Kind::Unreachable, Kind::Refused].map(Kind::code),
            [1, 2, 3, 4]
        );
    }
}
