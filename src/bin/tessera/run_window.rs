//! `tessera run window-max|window-min|window-sum`: sliding-window reductions on a .npy file.
//!
//! x is f32 or f16 .npy, `[rows, n]` or `[n]`, rounded to `--dtype` first (round to nearest even);
//! y is f32 .npy `[rows, n - k + 1]` (`[n - k + 1]` for a 1-D x) holding the exact values the
//! kernel stored.

use std::path::PathBuf;

use clap::Args;
use tessera::codegen::{ElemType, WindowOp, WindowSpec};
use tessera::npy::read_npy;
use tessera::outputs::OutputSet;
use tessera::runtime::window::{run_window, WindowProblem};
use tessera::runtime::{open_backend, BackendKind, Compiler};
use tessera::TesseraError;

use crate::run_amp::{parse_elem, ElementwiseTileFlags};
use crate::Result;

#[derive(Args)]
#[command(about = "Sliding-window reduction (van Herk / Gil-Werman) of width --k over the last axis of x [rows, n] -> [rows, n - k + 1]")]
pub struct RunWindowArgs {
    /// Window width (1 <= k <= n).
    #[arg(long)]
    pub k: usize,
    /// Input [rows, n] or [n].
    #[arg(long)]
    pub x: PathBuf,
    /// Element type the input is rounded to and the kernel reads and writes: f32, f16, bf16.
    #[arg(long, value_parser = parse_elem, default_value = "f32")]
    pub dtype: ElemType,
    /// The window results, as f32, [rows, n - k + 1].
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "auto")]
    pub backend: BackendKind,
    /// Tile overrides (threads x elems_per_thread <= 2048; vector must be 1).
    #[command(flatten)]
    pub tile: ElementwiseTileFlags,
}

pub fn run_window_cmd(op: WindowOp, args: RunWindowArgs) -> Result<()> {
    let mut spec = WindowSpec::new(op, args.dtype);
    spec.tile = args.tile.tile(spec.tile());
    spec.validate(tessera::Arch::SM90)?;
    let mut outputs = OutputSet::new();
    let out_slot = outputs.reserve("--out", &args.out)?;
    let x = read_npy(&args.x)?;
    let (rows, n) = match x.shape.as_slice() {
        &[n] => (1, n),
        &[rows, n] => (rows, n),
        other => return Err(TesseraError::input("--x", format!("expected shape [rows, n] or [n], got {other:?}"))),
    };
    if args.k == 0 || args.k > n {
        return Err(TesseraError::input("--k", format!("{} must be between 1 and the row length n = {n}", args.k)));
    }
    let problem = WindowProblem { rows, n, k: args.k };
    let backend = open_backend(args.backend)?;
    let compiler = Compiler::with_default_cache()?;
    let y = run_window(backend.as_ref(), &compiler, &spec, &problem, &x.data)?;
    let shape = if x.shape.len() == 1 { vec![problem.n_out()] } else { vec![rows, problem.n_out()] };
    outputs.write_npy_f32(out_slot, &shape, &y)?;
    outputs.commit()?;
    eprintln!(
        "window-{op} {} on {} ({}): k = {}, {:?} -> {:?} {}",
        spec.kernel_name(),
        backend.device_name(),
        backend.kind(),
        args.k,
        x.shape,
        shape,
        args.out.display()
    );
    Ok(())
}
