//! JIT compilation of a rendered [`KernelSource`] with NVRTC, through the on-disk [`KernelCache`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tessera_codegen::KernelSource;

use crate::common::error::{Result, RuntimeError};
use crate::compile::cache::{CacheKey, KernelCache, Lookup};
use crate::compile::nvrtc::{nvrtc_version, Program};
use crate::compile::target::{CompiledModule, OutputKind, Target};

/// The NVRTC command line for `target`. It is part of the cache key, so every option that changes
/// the generated code must come from here.
pub fn nvrtc_options(target: Target, line_info: bool) -> Vec<String> {
    let mut options = vec![format!("--gpu-architecture={}", target.gpu_architecture()), "-std=c++17".to_string()];
    if line_info {
        // Source lines in the PTX/SASS, for profilers and sanitizers; does not change the code.
        options.push("-lineinfo".to_string());
    }
    options
}

/// Compiles kernel sources with NVRTC, optionally through an on-disk [`KernelCache`], and memoises
/// results for the life of the `Compiler` so that repeated launches of one spec compile once.
///
/// ```no_run
/// # use tessera_runtime::{Compiler, KernelCache, Target};
/// # use tessera_codegen::{Arch, AttentionSpec, ElemType};
/// let compiler = Compiler::new().with_cache(KernelCache::open_default()?);
/// let source = AttentionSpec::new(ElemType::BF16, 128, true, 8, 2).render(Arch::SM80)?;
/// let module = compiler.compile(&source, Target::ptx(Arch::SM80))?;
/// # Ok::<(), tessera_runtime::RuntimeError>(())
/// ```
#[derive(Debug)]
pub struct Compiler {
    cache: Option<KernelCache>,
    line_info: bool,
    memo: Mutex<HashMap<CacheKey, CompiledModule>>,
}

impl Default for Compiler {
    fn default() -> Self {
        Compiler::new()
    }
}

impl Compiler {
    /// No disk cache, `-lineinfo` on.
    pub fn new() -> Compiler {
        Compiler { cache: None, line_info: true, memo: Mutex::new(HashMap::new()) }
    }

    pub fn with_cache(mut self, cache: KernelCache) -> Compiler {
        self.cache = Some(cache);
        self
    }

    /// A compiler with the default on-disk cache ([`KernelCache::open_default`]).
    pub fn with_default_cache() -> Result<Compiler> {
        Ok(Compiler::new().with_cache(KernelCache::open_default()?))
    }

    pub fn with_line_info(mut self, line_info: bool) -> Compiler {
        self.line_info = line_info;
        self
    }

    pub fn cache(&self) -> Option<&KernelCache> {
        self.cache.as_ref()
    }

    pub fn options(&self, target: Target) -> Vec<String> {
        nvrtc_options(target, self.line_info)
    }

    /// Compiles `source` for `target`, or returns the cached image.
    pub fn compile(&self, source: &KernelSource, target: Target) -> Result<CompiledModule> {
        let options = self.options(target);
        let key = CacheKey::new(&source.hash, target, nvrtc_version()?, &options);
        if let Some(module) = self.memo.lock().ok().and_then(|memo| memo.get(&key).cloned()) {
            return Ok(CompiledModule { from_cache: true, log: String::new(), compile_time: Duration::ZERO, ..module });
        }

        let cached = self.cache.as_ref().map(|cache| cache.get(&key));
        let module = match cached {
            Some(Lookup::Hit(image)) => CompiledModule {
                name: source.name.clone(),
                source_hash: source.hash.clone(),
                arch: target.arch,
                output: target.output,
                image,
                log: String::new(),
                from_cache: true,
                compile_time: Duration::ZERO,
            },
            other => {
                if let Some(Lookup::Corrupt { path, reason }) = &other {
                    eprintln!(
                        "tessera: warning: discarded corrupt kernel cache entry {} ({reason}); recompiling",
                        path.display()
                    );
                }
                let module = compile_uncached(source, target, &options)?;
                if let Some(cache) = &self.cache {
                    // A read-only or full cache folder must not stop compilation.
                    if let Err(e) = cache.put(&key, &module.image) {
                        eprintln!("tessera: warning: could not write the kernel cache: {e}");
                    }
                }
                module
            }
        };
        if let Ok(mut memo) = self.memo.lock() {
            memo.insert(key, module.clone());
        }
        Ok(module)
    }
}

fn compile_uncached(source: &KernelSource, target: Target, options: &[String]) -> Result<CompiledModule> {
    let program = Program::new(&source.cuda_src, &format!("{}.cu", source.name))?;
    let started = Instant::now();
    let compiled = program.compile(options)?;
    let compile_time = started.elapsed();
    let log = program.log()?;
    if !compiled {
        let excerpts = error_lines(&log)
            .into_iter()
            .map(|line| (line, source.line(line).unwrap_or("<past the end of the source>").trim_end().to_string()))
            .collect();
        return Err(RuntimeError::Compile { kernel: source.name.clone(), target: target.to_string(), log, excerpts });
    }
    let image = match target.output {
        OutputKind::Ptx => program.ptx()?,
        OutputKind::Cubin => program.cubin()?,
    };
    Ok(CompiledModule {
        name: source.name.clone(),
        source_hash: source.hash.clone(),
        arch: target.arch,
        output: target.output,
        image,
        log,
        from_cache: false,
        compile_time,
    })
}

/// The line numbers of `file(LINE): error ...` diagnostics, first occurrence order, no repeats.
pub(crate) fn error_lines(log: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    for text in log.lines() {
        let Some(close) = text.find("): ") else { continue };
        let rest = &text[close + 3..];
        if !(rest.starts_with("error") || rest.starts_with("catastrophic error")) {
            continue;
        }
        let Some(open) = text[..close].rfind('(') else { continue };
        if let Ok(line) = text[open + 1..close].parse::<usize>() {
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_codegen::Arch;

    #[test]
    fn options_depend_on_output_kind() {
        let ptx = nvrtc_options(Target::ptx(Arch::SM90), true);
        assert_eq!(ptx, ["--gpu-architecture=compute_90", "-std=c++17", "-lineinfo"]);
        let cubin = nvrtc_options(Target::cubin(Arch::SM86), false);
        assert_eq!(cubin, ["--gpu-architecture=sm_86", "-std=c++17"]);
    }

    #[test]
    fn finds_error_lines_in_an_nvrtc_log() {
        let log = "k.cu(12): warning #177-D: variable \"x\" was declared but never referenced\n\
                   k.cu(40): error: identifier \"y\" is undefined\n\
                   k.cu(40): error: expected a \";\"\n\
                   k.cu(7): catastrophic error: cannot open source file \"z.h\"\n\
                   3 errors detected in the compilation of \"k.cu\".\n";
        assert_eq!(error_lines(log), [40, 7]);
    }
}
