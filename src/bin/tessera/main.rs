//! The `tessera` command line: list, emit, check, run, bench, demo, doctor.
//!
//! Flags and the `.npy` in/out contract are a public interface: add, never rename.

mod backend;
mod bench;
mod bench_all;
mod bench_amp;
mod bench_attention;
mod check;
mod db;
mod declared;
mod demo;
mod doctor;
mod flags;
mod measure;
mod plot;
mod run;
mod run_amp;
mod run_attention;
mod run_gemm;
mod run_window;
mod tune;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tessera::TesseraError;

/// The exit status after GPU work did not finish within the deadline: distinct from 1 (any other
/// error) and 2 (clap's usage errors), so a driver script can tell a hang from a failure.
const EXIT_HUNG: i32 = 3;

const EXIT_STATUS_HELP: &str = "Exit status: 0 success; 1 error; 2 bad command line; 3 GPU work did not \
finish within TESSERA_SYNC_TIMEOUT_S seconds (default 120, 0 for no deadline): the kernel is presumed \
hung and the process exits at once, without driver teardown, so that the GPU is freed.";

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Typed kernel specs -> specialised CUDA kernels, JIT-compiled and verified",
    after_help = EXIT_STATUS_HELP
)]
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
    /// What Tessera finds on this machine: NVRTC (and how it was found), ptxas, the kernel cache,
    /// the tuning database, the GPU deadline and the device (--json: one JSON object).
    Doctor(doctor::DoctorArgs),
}

/// The command line, with negative numbers accepted as values of every flag (`--scale -1`), so that
/// a numeric flag's own range check answers instead of clap's "unexpected argument".
fn parse_cli() -> Cli {
    fn allow_negative_numbers(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|arg| if arg.get_action().takes_values() { arg.allow_negative_numbers(true) } else { arg })
            .mut_subcommands(allow_negative_numbers)
    }
    let matches = allow_negative_numbers(Cli::command()).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn main() -> ExitCode {
    let cli = parse_cli();
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
        Command::Doctor(args) => doctor::run(args),
    };
    let reported_hang = matches!(&result, Err(TesseraError::Runtime(e)) if e.is_hung());
    if let Err(e) = &result {
        eprintln!("error: {e}");
    }
    // A hang may also have been reported as one failed candidate or check among others; whatever
    // the command made of it, the process must not run its exit handlers.
    if let Some(hang) = tessera::runtime::process_hang() {
        if !reported_hang {
            eprintln!("error: {hang}");
        }
        exit_without_teardown(EXIT_HUNG);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// Ends the process now, with `code`, without running exit handlers: the CUDA driver's teardown
/// there would wait for a hung kernel, forever.
fn exit_without_teardown(code: i32) -> ! {
    use std::io::Write;
    eprintln!("tessera: a GPU kernel is still running; exiting with status {code} without driver teardown");
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` takes no pointers and ends the process; the buffered output that matters was
    // flushed above, and the leaked GPU resources are reclaimed with the process.
    unsafe { libc::_exit(code) }
}

pub(crate) type Result<T> = std::result::Result<T, TesseraError>;
