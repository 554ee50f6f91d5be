//! Simulator throughput on the checked-in attention PTX (bf16, head_dim 128, causal, 2 heads,
//! seq 256): `cargo run --release -p tessera-sim --example bench`.
//!
//! Prints thread-instructions per second with checks on and off, on one core (CTAs sequential) and
//! on all cores. Sequential runs also report the rate per second of this thread's CPU time (from
//! /proc/thread-self/schedstat on Linux), which a busy machine does not distort.
use tessera_sim::{launch, GlobalMemory, LaunchConfig, Module, SimOptions};

/// CPU time this thread has run, in seconds (Linux; None elsewhere).
fn thread_cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(s.split_whitespace().next()?.parse::<f64>().ok()? * 1e-9)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ptx/attn_bf16_d128_causal.ptx");
    let module = Module::parse(&std::fs::read_to_string(path)?)?;
    let entry = module.entries()[0].clone();
    let (seq, heads, d) = (256usize, 2usize, 128usize);
    let mem = GlobalMemory::new();
    let n = seq * heads * d;
    let mut x = 0x1234_5678u32;
    let mut buf = || -> Result<u64, Box<dyn std::error::Error>> {
        let a = mem.alloc(n * 2);
        let data: Vec<u8> = (0..n)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                half::bf16::from_f32((x >> 8) as f32 / (1 << 24) as f32 - 0.5).to_bits().to_le_bytes()
            })
            .collect();
        mem.write(a, &data)?;
        Ok(a)
    };
    let (q, k, v, o) = (buf()?, buf()?, buf()?, buf()?);
    let lse = mem.alloc(heads * seq * 4);
    let mut params = Vec::new();
    for p in [q, k, v, o, lse] {
        params.extend_from_slice(&p.to_le_bytes());
    }
    for _ in 0..4 {
        for s in [(seq * heads * d) as i64, (heads * d) as i64, d as i64] {
            params.extend_from_slice(&s.to_le_bytes());
        }
    }
    for i in [seq as i32, seq as i32, heads as i32] {
        params.extend_from_slice(&i.to_le_bytes());
    }
    params.extend_from_slice(&((1.0 / (d as f32).sqrt()) * std::f32::consts::LOG2_E).to_le_bytes());
    let config = LaunchConfig { grid: [(seq / 128) as u32, heads as u32, 1], block: [256, 1, 1], dynamic_shared_bytes: (128 * d + 2 * 2 * 64 * d) as u32 * 2 };
    for (checks, parallel) in [(false, false), (true, false), (false, true), (true, true)] {
        let options = SimOptions { checks, parallel, ..SimOptions::default() };
        let mut best = f64::MAX;
        let mut best_cpu = f64::MAX;
        let mut instr = 0;
        for _ in 0..5 {
            let cpu0 = thread_cpu_seconds();
            let s = launch(&module, &entry, &config, &params, &mem, &options)?;
            if let (Some(a), Some(b)) = (cpu0, thread_cpu_seconds()) {
                best_cpu = best_cpu.min(b - a);
            }
            best = best.min(s.elapsed.as_secs_f64());
            instr = s.thread_instructions;
        }
        let cpu = if parallel || best_cpu == f64::MAX {
            String::new()
        } else {
            format!(", {:.1} M/s of CPU time", instr as f64 / best_cpu / 1e6)
        };
        println!(
            "checks {:5} parallel {:5}: {instr} thread-instructions in {:.1} ms = {:.1} M/s{cpu}",
            checks,
            parallel,
            best * 1e3,
            instr as f64 / best / 1e6
        );
    }
    Ok(())
}
