//! What the `tessera bench` families share: device buffers freed on every path, seeded random
//! inputs, argument checks, timing statistics and the FLOP/s report. Kept apart from `bench.rs`
//! (the dispatcher) so that the per-family files import from here, not from each other.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use tessera::runtime::{Backend, DeviceBuffer};
use tessera::TesseraError;

use crate::Result;

/// Device buffers of one benchmark: freed by [`DeviceMemory::free_all`] after timing (which
/// reports errors), or on drop when an error ends the benchmark early.
pub(crate) struct DeviceMemory<'a> {
    backend: &'a dyn Backend,
    pub(crate) buffers: Vec<DeviceBuffer>,
}

impl<'a> DeviceMemory<'a> {
    pub(crate) fn new(backend: &'a dyn Backend) -> Self {
        DeviceMemory { backend, buffers: Vec::new() }
    }

    /// Uploads `bytes` into a new buffer and returns its index.
    pub(crate) fn upload(&mut self, bytes: &[u8]) -> Result<usize> {
        let index = self.alloc(bytes.len())?;
        self.backend.write(&self.buffers[index], bytes)?;
        Ok(index)
    }

    /// Allocates an uninitialised buffer and returns its index.
    pub(crate) fn alloc(&mut self, bytes: usize) -> Result<usize> {
        self.buffers.push(self.backend.alloc(bytes)?);
        Ok(self.buffers.len() - 1)
    }

    pub(crate) fn free_all(mut self) -> Result<()> {
        for buffer in std::mem::take(&mut self.buffers) {
            self.backend.free(buffer)?;
        }
        Ok(())
    }
}

impl Drop for DeviceMemory<'_> {
    fn drop(&mut self) {
        for buffer in self.buffers.drain(..) {
            let _ = self.backend.free(buffer);
        }
    }
}

/// The seed of every benchmark's inputs: the same inputs on every run and machine.
const RANDOM_SEED: u64 = 0x7e55e7a;
/// Values drawn per chunk by [`RandomData::values`], each chunk from its own generator: large
/// enough that seeding costs nothing next to drawing, small enough to spread a tensor of a few
/// million values over every core.
const VALUES_PER_CHUNK: usize = 1 << 16;

/// Random data, not zeros: zeros can run faster than real inputs and hide unwritten outputs.
pub(crate) struct RandomData {
    /// `values` calls so far: each call draws from its own seed.
    calls: u64,
    shuffler: StdRng,
}

impl RandomData {
    pub(crate) fn new() -> Self {
        RandomData { calls: 0, shuffler: StdRng::seed_from_u64(RANDOM_SEED) }
    }

    /// `n` values uniform in (-range, range). Drawn in parallel (up to 64M values per benchmark
    /// tensor), in fixed-size chunks whose generators are seeded from (seed, call, chunk index), so
    /// the values do not depend on the number of threads.
    pub(crate) fn values(&mut self, n: usize, range: f32) -> Vec<f32> {
        let call_seed = mix_seed(RANDOM_SEED, self.calls);
        self.calls += 1;
        let mut values = vec![0.0f32; n];
        values.par_chunks_mut(VALUES_PER_CHUNK).enumerate().for_each(|(chunk_index, chunk)| {
            let mut rng = StdRng::seed_from_u64(mix_seed(call_seed, chunk_index as u64));
            chunk.iter_mut().for_each(|v| *v = rng.random_range(-range..range));
        });
        values
    }

    /// A uniformly random permutation of `items`.
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        items.shuffle(&mut self.shuffler);
    }
}

/// A seed for stream `index` of `seed`: SplitMix64's finaliser over both, so neighbouring indices
/// give unrelated seeds.
fn mix_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub(crate) fn check_run_args(reps: usize, dims: &[(&str, usize)]) -> Result<()> {
    if reps == 0 {
        return Err(TesseraError::input("--reps", "must be at least 1"));
    }
    for &(name, v) in dims {
        if v == 0 {
            return Err(TesseraError::input(name, "must be at least 1 (an empty problem launches nothing)"));
        }
    }
    Ok(())
}

/// Median, min and max of the timed launches, in milliseconds.
pub(crate) struct Timing {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Timing {
    pub(crate) fn of(mut times: Vec<f32>) -> Self {
        times.sort_by(f32::total_cmp);
        let at = |i: Option<usize>| i.and_then(|i| times.get(i)).map_or(f64::NAN, |&t| f64::from(t));
        Timing {
            median: at(Some(times.len() / 2)),
            min: at(Some(0)),
            max: at(times.len().checked_sub(1)),
        }
    }

    fn tflops(&self, flops: f64) -> f64 {
        flops / (self.median * 1e-3) / 1e12
    }
}

/// Prints the common report: one JSON object (with `extra` fields merged in) or one line of text.
pub(crate) fn report(
    json: bool,
    kernel: &str,
    device: &str,
    timing: &Timing,
    flops: f64,
    reps: usize,
    extra: serde_json::Map<String, serde_json::Value>,
) {
    let tflops = timing.tflops(flops);
    let fields = serde_json::json!({
        "kernel": kernel,
        "device": device,
        "median_ms": timing.median,
        "min_ms": timing.min,
        "max_ms": timing.max,
        "tflops": tflops,
        "reps": reps,
    });
    print_result(json, fields, extra, |extra| {
        format!("{kernel} on {device}: median {:.3} ms over {reps} reps, {tflops:.1} TFLOP/s{extra}", timing.median)
    });
}

/// Prints one benchmark result: with `json`, the object `fields` with `extra` merged in; else the
/// line `text` makes from the extra fields written as ", key value" each.
pub(crate) fn print_result(
    json: bool,
    mut fields: serde_json::Value,
    extra: serde_json::Map<String, serde_json::Value>,
    text: impl FnOnce(&str) -> String,
) {
    if json {
        if let Some(object) = fields.as_object_mut() {
            object.extend(extra);
        }
        println!("{fields}");
    } else {
        let extra: String = extra
            .iter()
            .map(|(k, v)| match v.as_str() {
                Some(s) => format!(", {k} {s}"),
                None => format!(", {k} {v}"),
            })
            .collect();
        println!("{}", text(&extra));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_values_do_not_depend_on_the_thread_count() {
        let n = 2 * VALUES_PER_CHUNK + VALUES_PER_CHUNK / 2;
        let draw = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut rng = RandomData::new();
                (rng.values(n, 2.0), rng.values(100, 2.0))
            })
        };
        let (one, one_next) = draw(1);
        let (four, four_next) = draw(4);
        assert_eq!(one, four);
        assert_eq!(one_next, four_next);
        assert_eq!(one.len(), n);
        assert!(one.iter().all(|v| (-2.0..2.0).contains(v)));
        // Chunks are not copies of each other, and the next call draws fresh values.
        assert_ne!(one[..8], one[VALUES_PER_CHUNK..VALUES_PER_CHUNK + 8]);
        assert_ne!(one[..8], one_next[..8]);
        // Roughly uniform: the mean of |v| over (-2, 2) is 1.
        let mean_abs = one.iter().map(|v| f64::from(v.abs())).sum::<f64>() / n as f64;
        assert!((mean_abs - 1.0).abs() < 0.01, "{mean_abs}");
    }
}
