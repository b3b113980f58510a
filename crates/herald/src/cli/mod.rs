//! The `herald` command's subcommands, one file each.

pub(crate) mod check;
pub(crate) mod demo;
pub(crate) mod publish;
pub(crate) mod serve;
pub(crate) mod subscribe;
