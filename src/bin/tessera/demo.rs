//! `tessera demo`, the main job: generate, compile, run attention on random inputs and check it
//! against the f64 CPU reference: on the GPU when one is present, else on the CPU simulator (which
//! interprets the very PTX NVRTC generated, with bounds and race checks).

use std::time::Instant;

use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera::runtime::attention::{run_attention, AttentionProblem};
use tessera::runtime::check_spec;
use tessera::runtime::reference;
use tessera::runtime::{nvrtc_version, open_backend, BackendKind, Compiler};
use tessera::{Arch, AttentionSpec, ElemType, TesseraError};

use crate::Result;

#[derive(Args)]
pub struct DemoArgs {
    /// auto (GPU, then simulator), cuda or sim.
    #[arg(long, default_value = "auto")]
    pub backend: BackendKind,
    /// Seed for the random inputs (default: from the clock, printed).
    #[arg(long)]
    pub seed: Option<u64>,
}

struct Case {
    spec: AttentionSpec,
    problem: AttentionProblem,
    what: &'static str,
}

/// The same cases on every backend: the simulator runs them in about a second (release build).
fn cases() -> Vec<Case> {
    let p = |batch, seq_q, seq_k, heads_q, heads_kv, head_dim| AttentionProblem { batch, seq_q, seq_k, heads_q, heads_kv, head_dim };
    vec![
        Case { spec: AttentionSpec::new(ElemType::BF16, 128, true, 4, 4), problem: p(2, 300, 300, 4, 4, 128), what: "causal MHA, seq not a tile multiple" },
        Case { spec: AttentionSpec::new(ElemType::F16, 64, false, 8, 2), problem: p(1, 77, 190, 8, 2, 64), what: "GQA 4:1, seq_q != seq_k" },
        Case { spec: AttentionSpec::new(ElemType::BF16, 256, true, 2, 1), problem: p(2, 1, 129, 2, 1, 256), what: "MQA decode step (seq_q 1)" },
        Case { spec: AttentionSpec::new(ElemType::F16, 96, true, 2, 2), problem: p(1, 200, 64, 2, 2, 96), what: "causal seq_q > seq_k: fully masked rows" },
    ]
}

pub fn run(args: DemoArgs) -> Result<()> {
    let (major, minor) = nvrtc_version()?;
    println!("NVRTC {major}.{minor}");

    // `auto` always has the simulator to fall back on; should even that fail to open (a bad
    // TESSERA_SIM_ARCH), the job still generates and compiles every case, so a broken template or
    // toolchain shows up on any machine.
    let backend = match open_backend(args.backend) {
        Ok(b) => Some(b),
        Err(e) if args.backend == BackendKind::Auto => {
            println!("no backend to run on: {e}");
            None
        }
        Err(e) => return Err(e.into()),
    };

    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    });
    let mut rng = StdRng::seed_from_u64(seed);
    let compiler = Compiler::with_default_cache()?;
    let mut failures = 0;

    match &backend {
        None => {
            println!("\ncompile only (PTX via NVRTC, resources via ptxas):");
            println!("{:<58} {:>6} {:>5} {:>7} {:>8}", "kernel", "arch", "regs", "spills", "nvrtc ms");
            for case in cases() {
                for arch in [Arch::SM80, Arch::SM90] {
                    let c = check_spec(case.spec, arch)?;
                    let (regs, spills) = c
                        .report
                        .as_ref()
                        .map(|r| (r.registers.to_string(), (r.spill_store_bytes + r.spill_load_bytes).to_string()))
                        .unwrap_or(("-".into(), "-".into()));
                    println!("{:<58} {:>6} {regs:>5} {spills:>7} {:>8.0}", case.spec.kernel_name(arch), arch.to_string(), c.compile_ms);
                }
            }
            println!("\nrun: skipped: neither the GPU nor the simulator backend opened; the numeric check needs one");
        }
        Some(backend) => {
            println!("backend: {} ({}, {}), seed {seed}", backend.kind(), backend.device_name(), backend.arch());
            if backend.kind() == BackendKind::Sim {
                println!("(simulated on the CPU: ms is interpretation time, not GPU time)");
            }
            println!();
            println!(
                "{:<44} {:<26} {:>10} {:>10} {:>10}  {:<14} kernel",
                "case", "shape b,sq,sk,hq,hkv,d", "rel L2", "max abs", "ms", "result"
            );
            for case in cases() {
                let pr = &case.problem;
                let n_q = pr.batch * pr.seq_q * pr.heads_q * pr.head_dim;
                let n_kv = pr.batch * pr.seq_k * pr.heads_kv * pr.head_dim;
                let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect() };
                let (q, k, v) = (draw(n_q), draw(n_kv), draw(n_kv));
                let scale = 1.0 / (pr.head_dim as f64).sqrt();
                let start = Instant::now();
                let label = format!("{} {}", case.spec.dtype, case.what);
                let shape = format!("{},{},{},{},{},{}", pr.batch, pr.seq_q, pr.seq_k, pr.heads_q, pr.heads_kv, pr.head_dim);
                let out = match run_attention(backend.as_ref(), &compiler, &case.spec, pr, &q, &k, &v, None, true) {
                    Ok(out) => out,
                    // A simulator report (fault, race, deadlock) fails this case, not the others.
                    Err(e @ tessera::runtime::RuntimeError::Simulator { .. }) => {
                        failures += 1;
                        println!("{label:<44} {shape:<26} FAIL: {e}");
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                let ms = start.elapsed().as_secs_f64() * 1e3;
                let round = |x: &[f32]| reference::round_to_dtype(x, case.spec.dtype);
                let want = reference::attention(&round(&q), &round(&k), &round(&v), pr, case.spec.causal, scale);
                let cmp = reference::compare(&out.out, &want.out);
                let lse_ok = out.lse.as_ref().is_some_and(|lse| {
                    lse.iter().zip(&want.lse).all(|(&got, &w)| {
                        if w == f64::NEG_INFINITY { got == f32::NEG_INFINITY } else { (got as f64 - w).abs() <= 1e-3 * (1.0 + w.abs()) }
                    })
                });
                let ok = cmp.non_finite == 0 && cmp.rel_l2 <= reference::tolerance(case.spec.dtype) && lse_ok;
                if !ok {
                    failures += 1;
                }
                // The entry point that ran (the sm_90a kernel or the mma.sync one), so a GPU run shows
                // which path each case took; a fallback's reason is already on standard error.
                println!(
                    "{label:<44} {shape:<26} {:>10.2e} {:>10.2e} {ms:>10.1}  {:<14} {}",
                    cmp.rel_l2,
                    cmp.max_abs,
                    if ok { "ok" } else if lse_ok { "FAIL (output)" } else { "FAIL (lse)" },
                    out.kernel
                );
            }
        }
    }
    if failures > 0 {
        return Err(TesseraError::Check(format!("{failures} demo case(s) disagree with the reference (seed {seed})")));
    }
    Ok(())
}
