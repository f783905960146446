//! `chorus`: the command line of the Chorus peer-to-peer music streaming node.
//!
//! The commands are in crate `chorus-cli` (argument parsing in its `cli`
//! module), `chorus bench` in crate `chorus-bench`.

use chorus_cli::{cli, config, demo, fetch, memory, play, resources, search, seed, signals};

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// `chorus swarm new`: a fresh key, and how to use it.
fn swarm_new() -> anyhow::Result<()> {
    let key = chorus_streamer::identity::SwarmKey::generate()?;
    println!("{}", key.to_hex());
    eprintln!(
        "share this key only with the swarm's members; each node uses it with\n  --swarm KEY   (or CHORUS_SWARM=KEY)\non seed, play and search alike"
    );
    Ok(())
}

fn main() -> ExitCode {
    let mut cli = cli::Cli::parse();
    // The bench reports stalls and dropped peers in its table; their
    // warnings would only bury the progress bar.
    let bench = matches!(cli.command, cli::Command::Bench(_));
    let seeding = matches!(cli.command, cli::Command::Seed(_));
    let default_level = match (cli.global.quiet || bench, cli.global.verbose) {
        (true, 0) => "error",
        (true, _) if cli.global.quiet => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    // symphonia logs its own view of bad files; we report each skipped file
    // ourselves, once, so its logs only show at -vv and above.
    let deps = if cli.global.verbose >= 2 {
        ""
    } else {
        ",symphonia_core=off,symphonia_bundle_flac=off,symphonia_bundle_mp3=off,symphonia_format_isomp4=off,symphonia_format_ogg=off,symphonia_format_riff=off,symphonia_format_mkv=off,symphonia_format_caf=off,symphonia_codec_aac=off,symphonia_codec_vorbis=off,symphonia_codec_alac=off,symphonia_codec_pcm=off,symphonia_metadata=off"
    };
    let filter = EnvFilter::try_from_env("CHORUS_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!("{default_level},quinn=warn,rustls=warn{deps}"))
    });
    let verbose = cli.global.verbose > 0;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(verbose)
        .without_time()
        .init();

    // The config file's data dir, unless a flag or CHORUS_DATA_DIR named one
    // (`chorus config` shows where it came from itself).
    if cli.global.data_dir.is_none() && !matches!(cli.command, cli::Command::Config) {
        match config::load(&cli.global) {
            Ok(file) => cli.global.data_dir = file.data_dir,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        // Commands that stop cleanly on signals; the others end at once.
        if matches!(
            cli.command,
            cli::Command::Seed(_) | cli::Command::Play(_) | cli::Command::Demo(_)
        ) {
            signals::listen();
        }
        match cli.command {
            cli::Command::Seed(args) => seed::run(&cli.global, args).await,
            cli::Command::Search(args) => search::run(&cli.global, args).await,
            cli::Command::Fetch(args) => fetch::run(&cli.global, args).await,
            cli::Command::Play(args) => play::run(&cli.global, args).await,
            cli::Command::Devices => play::devices(),
            cli::Command::Demo(args) => demo::run(&cli.global, args).await,
            cli::Command::Bench(args) => chorus_bench::run(&cli.global, args).await,
            cli::Command::Config => config::show(&cli.global),
            cli::Command::Peers => memory::show(&cli.global),
            cli::Command::Swarm(args) => match args.action {
                cli::SwarmAction::New => swarm_new(),
            },
        }
    });
    resources::report_if_asked();
    match result {
        // A daemon asked to stop has done its job.
        Ok(()) if seeding => ExitCode::SUCCESS,
        Ok(()) => signals::exit_code().unwrap_or(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
