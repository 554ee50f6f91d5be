//! The `tessera` command line: list, emit, check, run, bench, demo.
//!
//! Flags and the `.npy` in/out contract are a public interface: add, never rename.

mod bench;
mod bench_all;
mod bench_amp;
mod bench_attention;
mod check;
mod db;
mod declared;
mod demo;
mod flags;
mod plot;
mod run;
mod run_amp;
mod run_attention;
mod run_gemm;
mod run_window;
mod tune;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tessera::TesseraError;

#[derive(Parser)]
#[command(name = "tessera", version, about = "Typed kernel specs -> specialised CUDA kernels, JIT-compiled and verified")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant (run attention's flags) does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// List the kernel families and their spec options.
    List,
    /// Print the generated CUDA C++ source of one spec.
    Emit {
        #[command(subcommand)]
        family: flags::EmitFamily,
    },
    /// Compile every supported spec with NVRTC and report registers / shared memory / spills.
    Check(check::CheckArgs),
    /// Run a kernel on .npy inputs and write the result as f32 .npy.
    Run {
        #[command(subcommand)]
        family: run::RunFamily,
    },
    /// Time a kernel on the GPU (CUDA events, median of repetitions).
    Bench {
        #[command(subcommand)]
        family: bench::BenchFamily,
    },
    /// Time every candidate tile for some shapes on the GPU and store the winners (--dry-run: list
    /// the pruned space; without a GPU: compile every candidate).
    Tune {
        #[command(subcommand)]
        family: tune::TuneFamily,
    },
    /// The tuning database: show, export, import.
    Db {
        #[command(subcommand)]
        command: db::DbCommand,
    },
    /// The main job: generate, compile, run attention on random inputs and check it against the
    /// CPU reference (on the GPU when present, else on the CPU simulator).
    Demo(demo::DemoArgs),
    /// Draw the merged GPU benchmark results of benches/gpu/run_all.py as one PNG (Tessera vs PyTorch).
    Plot(plot::PlotArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::List => {
            // A closed pipe (`tessera list | head`) is not an error worth a panic.
            use std::io::Write;
            let _ = write!(std::io::stdout(), "{}{}", flags::family_list(), flags::registry_list());
            Ok(())
        }
        Command::Emit { family } => flags::emit(family),
        Command::Check(args) => check::run(args),
        Command::Run { family } => run::run(family),
        Command::Bench { family } => bench::run(family),
        Command::Demo(args) => demo::run(args),
        Command::Tune { family } => tune::run(family),
        Command::Db { command } => db::run(command),
        Command::Plot(args) => plot::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, TesseraError>;
