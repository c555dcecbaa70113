//! pgctl: highly available PostgreSQL on plain Docker hosts. This file parses the command
//! line, runs the command and turns its error into a message and an exit code; commands live
//! in `commands/`, capabilities in their own modules (arrows point down: commands ->
//! capabilities -> docker/config/render/layout).

mod backup;
mod cluster;
mod commands;
mod compose;
mod config;
mod dcs;
mod docker;
mod error;
mod image;
mod lab;
mod layout;
mod member;
mod migrate;
mod monitor;
mod nodes;
mod output;
mod pki;
mod proxy;
mod recovery;
mod render;
mod restore;
mod roles;
mod s3;
mod settings;
mod standby;
mod tls;
mod upgrade;
mod users;
mod verify;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = commands::Cli::parse();
    output::init(cli.global.format());
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGCTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if cli.global.verbose { "pgctl=debug" } else { "pgctl=warn" }));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let kind = error::kind_of(&e, typed_kind);
            output::error(&e, kind);
            std::process::ExitCode::from(kind.code())
        }
    }
}

/// The exit-code kind of the typed errors modules return.
fn typed_kind(cause: &(dyn std::error::Error + 'static)) -> Option<error::Kind> {
    if cause.is::<config::ConfigError>() {
        Some(error::Kind::Config)
    } else if cause.is::<docker::connect::UnreachableHosts>() {
        Some(error::Kind::Unreachable)
    } else {
        None
    }
}
