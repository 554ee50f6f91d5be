//! `tessera bench all`: every family at a representative shape on the current GPU, as one table.
//! Each case runs as `tessera bench <family> ... --json` in a child process (one family's failure
//! or crash does not stop the others) and the JSON rows are collected.

use std::process::Command;

use clap::Args;
use tessera::TesseraError;

use crate::Result;

#[derive(Args)]
pub struct BenchAllArgs {
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    #[arg(long, default_value_t = 30)]
    pub reps: usize,
}

/// (label, arguments after `bench`).
const CASES: [(&str, &[&str]); 7] = [
    ("attention bf16 d128 seq 4096", &["attention", "--dtype", "bf16", "--head-dim", "128", "--heads-q", "16", "--batch", "4", "--seq-q", "4096"]),
    ("attention bf16 d128 causal seq 4096", &["attention", "--dtype", "bf16", "--head-dim", "128", "--causal", "--heads-q", "16", "--batch", "4", "--seq-q", "4096"]),
    ("gemm bf16 4096^3", &["gemm", "--dtype", "bf16", "--m", "4096", "--n", "4096", "--k", "4096"]),
    ("lora bf16 r16 4096^3", &["lora", "--dtype", "bf16", "--m", "4096", "--n", "4096", "--k", "4096", "--rank", "16"]),
    ("cast f32->bf16 256M", &["cast", "--from", "f32", "--to", "bf16", "--n", "268435456"]),
    ("unscale f16 100 tensors 256M", &["unscale", "--tensors", "100", "--total", "268435456"]),
    ("adamw bf16 100 tensors 64M", &["adamw", "--tensors", "100", "--total", "67108864"]),
];

pub fn run(args: BenchAllArgs) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| TesseraError::input("bench all", format!("cannot find this program: {e}")))?;
    let (warmup, reps) = (args.warmup.to_string(), args.reps.to_string());
    println!("{:<38} {:>10} {:>14}  kernel / status", "case", "median ms", "throughput");
    let mut failures = 0;
    for (label, case) in CASES {
        let out = Command::new(&exe)
            .arg("bench")
            .args(case)
            .args(["--warmup", &warmup, "--reps", &reps, "--json"])
            .output()
            .map_err(|e| TesseraError::input("bench all", format!("running {label}: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let row = stdout.lines().last().and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok());
        match (out.status.success(), row) {
            (true, Some(v)) => {
                let ms = v["median_ms"].as_f64().unwrap_or(f64::NAN);
                let throughput = match v["gbps"].as_f64() {
                    Some(g) => format!("{g:.0} GB/s"),
                    None => format!("{:.1} TFLOP/s", v["tflops"].as_f64().unwrap_or(f64::NAN)),
                };
                println!("{label:<38} {ms:>10.4} {throughput:>14}  {}", v["kernel"].as_str().unwrap_or("?"));
            }
            _ => {
                failures += 1;
                let err = String::from_utf8_lossy(&out.stderr);
                let err = err.lines().last().unwrap_or("failed").trim_start_matches("error: ");
                println!("{label:<38} {:>10} {:>14}  FAILED: {err}", "-", "-");
                if err.contains("no usable CUDA GPU") {
                    return Err(TesseraError::input("bench all", "timing needs a CUDA GPU; none is usable here"));
                }
            }
        }
    }
    if failures > 0 {
        return Err(TesseraError::Check(format!("{failures} of {} cases failed", CASES.len())));
    }
    Ok(())
}
