//! `pgctl completions SHELL` and `pgctl man`: generated from the clap definitions, so they
//! never drift from the real options.

use super::Cli;
use crate::output;
use anyhow::Result;
use clap::{Args, CommandFactory};

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to complete for; e.g. `pgctl completions bash > /etc/bash_completion.d/pgctl`
    shell: clap_complete::Shell,
}

pub fn completions(a: CompletionsArgs) -> Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut Cli::command(), "pgctl", &mut out);
    output::raw(&String::from_utf8(out)?)
}

pub fn man() -> Result<()> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    output::raw(&String::from_utf8(out)?)
}
