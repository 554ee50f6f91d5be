//! The tuner: every candidate compiled (in parallel), run once and verified against the default
//! tile's output (by the family's own [`Agreement`]), then timed; the fastest verified candidate
//! wins. A candidate that fails to compile, launch or verify is reported and never chosen.

use rayon::prelude::*;
use tessera_codegen::TileChoice;

use crate::common::error::Result;
use crate::reference::accuracy::compare;

/// One family's problem instance, as the tuner sees it.
pub trait TuneTarget: Sync {
    /// Compiles (and loads) the kernel with `tile`; called in parallel.
    fn compile(&self, tile: &TileChoice) -> Result<()>;
    /// Runs once and returns the output widened to f32 (the output buffer poisoned first).
    fn run(&self, tile: &TileChoice) -> Result<Vec<f32>>;
    /// Milliseconds of `reps` launches after `warmup`, rotating between input copies.
    fn time(&self, tile: &TileChoice, warmup: usize, reps: usize) -> Result<Vec<f32>>;
    /// FLOPs (or bytes) of one launch, for the throughput column.
    fn work(&self) -> f64;
    /// "TFLOP/s" or "GB/s".
    fn unit(&self) -> &'static str;
    /// How closely a candidate's output must reproduce the default tile's.
    fn agreement(&self) -> Agreement;
}

/// How closely a candidate must reproduce the default tile's output: each family's own rule, so a
/// family whose kernels compute every element the same way whatever the tile is held to its bits
/// and an f32-output matmul to f32 accumulation-order differences, not a shared loose bound.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Agreement {
    /// Bit for bit (as f32 widened from the output type).
    BitExact,
    /// At most this relative L2 error ([`compare`]; a non-finite value never passes).
    RelL2(f64),
}

impl Agreement {
    /// Whether `out` reproduces `reference` (the default tile's output); otherwise why not.
    pub fn check(&self, out: &[f32], reference: &[f32]) -> std::result::Result<(), String> {
        if out.len() != reference.len() {
            return Err(format!("{} elements, the default tile's {}", out.len(), reference.len()));
        }
        match *self {
            Agreement::BitExact => match out.iter().zip(reference).position(|(a, b)| a.to_bits() != b.to_bits()) {
                None => Ok(()),
                Some(i) => Err(format!(
                    "element {i} is {} ({:#010x}), the default tile's {} ({:#010x}); this family must agree bit for bit",
                    out[i],
                    out[i].to_bits(),
                    reference[i],
                    reference[i].to_bits()
                )),
            },
            Agreement::RelL2(tolerance) => {
                let r64: Vec<f64> = reference.iter().map(|&v| f64::from(v)).collect();
                let cmp = compare(out, &r64);
                if cmp.passes(tolerance) {
                    Ok(())
                } else {
                    Err(format!("differs from the default tile beyond rel L2 {tolerance:e}: {cmp:?}"))
                }
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum CandidateStatus {
    Timed { median_ms: f64, throughput: f64 },
    /// Compiled and verified; not timed (no GPU, or a dry run).
    Compiled,
    CompileFailed(String),
    LaunchFailed(String),
    VerifyFailed(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct CandidateResult {
    pub tile: TileChoice,
    pub status: CandidateStatus,
}

#[derive(Clone, Copy, Debug)]
pub struct TuneOptions {
    pub warmup: usize,
    pub reps: usize,
    /// Time candidates (needs a GPU); `false` only compiles and verifies.
    pub timing: bool,
}

impl Default for TuneOptions {
    fn default() -> Self {
        TuneOptions { warmup: 5, reps: 20, timing: true }
    }
}

#[derive(Clone, Debug)]
pub struct TuneReport {
    pub results: Vec<CandidateResult>,
    /// Index of the winner in `results`.
    pub best: Option<usize>,
}

impl TuneReport {
    pub fn winner(&self) -> Option<&CandidateResult> {
        self.best.map(|i| &self.results[i])
    }
}

fn median(mut v: Vec<f32>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    v.sort_by(f32::total_cmp);
    v.get(v.len() / 2).map(|&m| f64::from(m))
}

/// Tunes `candidates` (the first is the reference configuration: its output is what every other
/// candidate must reproduce). `progress(done, total, result)` is called after each candidate.
pub fn tune(
    target: &dyn TuneTarget,
    candidates: &[TileChoice],
    opts: &TuneOptions,
    progress: &(dyn Fn(usize, usize, &CandidateResult) + Sync),
) -> TuneReport {
    let compiled: Vec<std::result::Result<(), String>> =
        candidates.par_iter().map(|t| target.compile(t).map_err(|e| e.to_string())).collect();
    let reference = candidates.first().and_then(|t| target.run(t).ok());
    let mut results = Vec::with_capacity(candidates.len());
    for (i, (tile, compiled)) in candidates.iter().zip(compiled).enumerate() {
        let status = match compiled {
            Err(e) => CandidateStatus::CompileFailed(e),
            Ok(()) => match target.run(tile) {
                Err(e) => CandidateStatus::LaunchFailed(e.to_string()),
                Ok(out) => {
                    let verified = match &reference {
                        None => Err("the reference configuration did not run".to_string()),
                        Some(r) => target.agreement().check(&out, r),
                    };
                    match verified {
                        Err(e) => CandidateStatus::VerifyFailed(e),
                        Ok(()) if !opts.timing => CandidateStatus::Compiled,
                        Ok(()) => match target.time(tile, opts.warmup, opts.reps).map(median) {
                            Ok(Some(ms)) => {
                                let scale = if target.unit() == "GB/s" { 1e9 } else { 1e12 };
                                CandidateStatus::Timed { median_ms: ms, throughput: target.work() / (ms * 1e-3) / scale }
                            }
                            Ok(None) => CandidateStatus::LaunchFailed("no finite timings".into()),
                            Err(e) => CandidateStatus::LaunchFailed(e.to_string()),
                        },
                    }
                }
            },
        };
        let result = CandidateResult { tile: *tile, status };
        progress(i + 1, candidates.len(), &result);
        results.push(result);
    }
    let best = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r.status {
            CandidateStatus::Timed { median_ms, .. } => Some((i, median_ms)),
            _ => None,
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i);
    TuneReport { results, best }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::error::RuntimeError;
    use tessera_codegen::ElementwiseTile;

    /// A fake target: candidate i takes `times[i]` ms; some fail to compile, launch or verify.
    struct Fake {
        times: Vec<f32>,
        compile_fails: usize,
        launch_fails: usize,
        wrong_output: usize,
        /// What `wrong_output` computes instead of [1, 2, 3].
        wrong: [f32; 3],
        agreement: Agreement,
    }

    const RIGHT: [f32; 3] = [1.0, 2.0, 3.0];

    fn tile(i: usize) -> TileChoice {
        TileChoice::Elementwise(ElementwiseTile::new(128, 4, 1 + i as u32))
    }

    fn index(t: &TileChoice) -> usize {
        match t {
            TileChoice::Elementwise(e) => e.vector as usize - 1,
            _ => unreachable!(),
        }
    }

    impl TuneTarget for Fake {
        fn compile(&self, t: &TileChoice) -> Result<()> {
            if index(t) == self.compile_fails {
                return Err(RuntimeError::invalid("tile", "does not compile"));
            }
            Ok(())
        }
        fn run(&self, t: &TileChoice) -> Result<Vec<f32>> {
            if index(t) == self.launch_fails {
                return Err(RuntimeError::invalid("tile", "launch failed"));
            }
            Ok(if index(t) == self.wrong_output { self.wrong.to_vec() } else { RIGHT.to_vec() })
        }
        fn time(&self, t: &TileChoice, _: usize, reps: usize) -> Result<Vec<f32>> {
            // Noisy samples around the true time; the median must see through one outlier.
            let base = self.times[index(t)];
            let mut v = vec![base; reps];
            v[0] = base * 100.0;
            Ok(v)
        }
        fn work(&self) -> f64 {
            1e9
        }
        fn unit(&self) -> &'static str {
            "TFLOP/s"
        }
        fn agreement(&self) -> Agreement {
            self.agreement
        }
    }

    #[test]
    fn picks_the_fastest_verified_candidate_and_never_a_failed_one() {
        // Candidate 1 is fastest but computes a wrong result; 2 does not compile; 3 fails to launch.
        let fake = Fake {
            times: vec![5.0, 1.0, 0.5, 0.7, 2.0],
            compile_fails: 2,
            launch_fails: 3,
            wrong_output: 1,
            wrong: [1.0, 2.0, 4.0],
            agreement: Agreement::RelL2(1e-2),
        };
        let candidates: Vec<TileChoice> = (0..5).map(tile).collect();
        let seen = std::sync::atomic::AtomicUsize::new(0);
        let report = tune(&fake, &candidates, &TuneOptions { reps: 5, ..TuneOptions::default() }, &|done, total, _| {
            assert_eq!(total, 5);
            seen.fetch_max(done, std::sync::atomic::Ordering::Relaxed);
        });
        assert_eq!(seen.into_inner(), 5);
        assert_eq!(report.winner().map(|r| r.tile), Some(tile(4)), "{:?}", report.results);
        assert!(matches!(report.results[1].status, CandidateStatus::VerifyFailed(_)));
        assert!(matches!(report.results[2].status, CandidateStatus::CompileFailed(_)));
        assert!(matches!(report.results[3].status, CandidateStatus::LaunchFailed(_)));
        assert!(matches!(report.results[4].status, CandidateStatus::Timed { median_ms, .. } if median_ms == 2.0));
    }

    #[test]
    fn without_timing_nothing_is_chosen() {
        let fake = Fake { times: vec![1.0; 3], compile_fails: 9, launch_fails: 9, wrong_output: 9, wrong: RIGHT, agreement: Agreement::BitExact };
        let report = tune(&fake, &[tile(0), tile(1), tile(2)], &TuneOptions { timing: false, ..TuneOptions::default() }, &|_, _, _| {});
        assert!(report.best.is_none());
        assert!(report.results.iter().all(|r| r.status == CandidateStatus::Compiled));
    }

    #[test]
    fn a_bit_exact_family_rejects_a_one_ulp_difference() {
        // The fastest candidate is off by one ulp in one element: within any relative L2 bound a
        // 16-bit family would allow, and wrong for a family that must agree bit for bit.
        let one_ulp = f32::from_bits(3.0f32.to_bits() + 1);
        let candidates: Vec<TileChoice> = (0..3).map(tile).collect();
        let run = |agreement| {
            let fake = Fake { times: vec![2.0, 0.5, 1.0], compile_fails: 9, launch_fails: 9, wrong_output: 1, wrong: [1.0, 2.0, one_ulp], agreement };
            tune(&fake, &candidates, &TuneOptions { reps: 3, ..TuneOptions::default() }, &|_, _, _| {})
        };
        let exact = run(Agreement::BitExact);
        assert!(matches!(&exact.results[1].status, CandidateStatus::VerifyFailed(e) if e.contains("element 2")), "{:?}", exact.results);
        assert_eq!(exact.winner().map(|r| r.tile), Some(tile(2)));
        // The loose rule every family used to share would have chosen it.
        assert_eq!(run(Agreement::RelL2(1e-2)).winner().map(|r| r.tile), Some(tile(1)));
        // Under a relative bound a NaN never agrees, even with a NaN.
        assert!(Agreement::RelL2(1e-2).check(&[f32::NAN], &[f32::NAN]).is_err());
        assert!(Agreement::BitExact.check(&[1.0, 2.0], &[1.0]).is_err());
    }
}
