//! `herald check --config FILE`: read a configuration exactly as `serve` would (file, `HERALD_*` environment,
//! flags), check everything starting would refuse (values, keys, token key files, proxy ranges), print a summary
//! and exit: 0 when `serve` would start with it, 1 with the reason otherwise. Nothing is bound and the engine is
//! not reached, so it runs anywhere the file can be read (a package's post-install step, CI, before a restart).

use super::serve::ServeArgs;

/// Options of `herald check`: the same as `serve`'s.
#[derive(clap::Args, Debug)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    serve: ServeArgs,
}

/// Runs `herald check`.
pub(crate) fn run(args: CheckArgs) -> anyhow::Result<()> {
    let config = args.serve.load()?;
    herald::server::check(&config)?;
    let source = args.serve.config.as_ref().map_or("defaults".to_string(), |path| path.display().to_string());
    println!(
        "{source}: configuration OK (listen {}, engine {}, {} publisher keys, admin page {})",
        config.listen,
        match (&config.engine, &config.data_dir) {
            (herald::config::EngineKind::Memory, _) => "memory".to_string(),
            (herald::config::EngineKind::Redis, _) => "redis".to_string(),
            (herald::config::EngineKind::Disk, dir) => format!(
                "disk in {}, fsync {}",
                dir.as_deref().unwrap_or(std::path::Path::new("?")).display(),
                config.fsync.name()
            ),
        },
        config.publisher_keys.len(),
        if config.admin_keys.is_empty() { "off" } else { "on" },
    );
    Ok(())
}
