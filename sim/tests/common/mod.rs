//! Helpers shared by the integration tests.
#![allow(dead_code)]

use tessera_sim::{launch, GlobalMemory, LaunchConfig, LaunchStats, Module, SimError, SimOptions};

/// Reads a checked-in PTX file of `tests/ptx/`.
pub fn ptx(name: &str) -> String {
    let path = format!("{}/tests/ptx/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A module with one entry `k`, built from a body (registers declared by the caller).
pub fn kernel(params: &str, body: &str) -> String {
    format!(".version 9.0\n.target sm_80\n.address_size 64\n\n.visible .entry k({params})\n{{\n{body}\n}}\n")
}

pub fn u32s(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

pub fn bytes_of_u32(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Runs `k` with the given u64 parameters on one CTA of `threads` threads.
pub fn run1(module: &Module, params: &[u64], threads: u32, smem: u32, memory: &GlobalMemory, options: &SimOptions) -> Result<LaunchStats, SimError> {
    let p: Vec<u8> = params.iter().flat_map(|x| x.to_le_bytes()).collect();
    let config = LaunchConfig { grid: [1, 1, 1], block: [threads, 1, 1], dynamic_shared_bytes: smem };
    launch(module, "k", &config, &p, memory, options)
}

pub fn read_u32s(memory: &GlobalMemory, addr: u64, n: usize) -> Vec<u32> {
    let mut out = vec![0u8; 4 * n];
    memory.read(addr, &mut out).expect("read");
    u32s(&out)
}

/// Small deterministic PRNG (xorshift).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}
