//! The subcommands, one module each: [`run`] resolves the global settings ([`ctx::Ctx`]) and
//! dispatches; each module parses nothing and decides nothing about exit codes beyond its own
//! outcome (complete, partial, damaged). Shared helpers live in [`shared`].

mod backup;
mod check;
mod ctx;
mod disable;
mod forget;
mod init;
mod key;
mod migrate;
mod prune;
mod repair;
mod restore;
mod sample;
mod shared;
mod snapshots;
mod whatsapp;

use anyhow::Result;

use crate::args::*;
use ctx::Ctx;

/// Runs the parsed command line; returns the exit code of a run that did not fail.
pub fn run(cli: Cli) -> Result<u8> {
    let ctx = Ctx::new(&cli)?;
    match &cli.command {
        Command::Init(a) => init::run(&ctx, a),
        Command::Backup(a) => backup::run(&ctx, a),
        Command::Snapshots(a) => snapshots::run(&ctx, a.json),
        Command::Restore(a) => restore::run(&ctx, a),
        Command::Check(a) => check::run(&ctx, a),
        Command::Forget(a) => forget::run(&ctx, a),
        Command::Prune(a) => prune::run(&ctx, a),
        Command::Repair(RepairCommand::Index(a)) => repair::index(&ctx, a),
        Command::Repair(RepairCommand::Packs(a)) => repair::packs(&ctx, a),
        Command::Key(KeyCommand::Show { yes }) => key::show(&ctx, *yes),
        Command::Key(KeyCommand::ChangePassword) => key::change_password(&ctx),
        Command::Key(KeyCommand::ToKey) => key::to_key(&ctx),
        Command::Key(KeyCommand::ToPassword) => key::to_password(&ctx),
        Command::Disable { yes } => disable::run(&ctx, *yes),
        Command::Whatsapp(c) => whatsapp::run(&ctx, c),
        Command::Sample(a) => sample::run(a),
        Command::Migrate(a) => migrate::run(&ctx, a.json),
        #[cfg(feature = "demo")]
        Command::Demo {
            keep,
            realms: Some(n),
        } => crate::demo::run_realms(keep.as_deref(), ctx.quiet, *n),
        #[cfg(feature = "demo")]
        Command::Demo { keep, realms: None } => crate::demo::run(keep.as_deref(), ctx.quiet),
    }
}
