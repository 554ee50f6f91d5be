//! Every family's host/device contract is generated from its Rust definitions and enforced by
//! NVRTC: a rendered kernel compiles as it is, and the same source with two same-size fields of a
//! generated parameter struct swapped (what a hand-written twin that drifted would be) fails to
//! compile with the struct and the moved field named in the log. One case per parameter struct of
//! each family. Needs NVRTC; skipped with a note without it.

mod common;

use tessera_runtime::codegen::{
    Arch, DType, GemmSpec, KernelSource, LoraSpec, OutType, CONTRACT_MARKER,
};
use tessera_runtime::{Compiler, RuntimeError, Target};

/// `source` with the declarations of the fields `a` and `b` of the generated struct `name`
/// exchanged: the lines `<type> a;` and `<type> b;` (same type, so the same size) inside
/// `struct ... name {`.
fn swap_fields(source: &KernelSource, name: &str, a: &str, b: &str) -> KernelSource {
    let src = &source.cuda_src;
    let contract = src.find(CONTRACT_MARKER).unwrap_or_else(|| panic!("{}: no generated contract", source.name));
    let open = src[contract..]
        .find(&format!(" {name} {{\n"))
        .map(|i| contract + i)
        .unwrap_or_else(|| panic!("{}: no generated struct {name}", source.name));
    let close = open + src[open..].find("\n};\n").expect("the struct ends");
    let mut lines: Vec<String> = src[open..close].lines().map(str::to_string).collect();
    let field = |f: &str| {
        let hits: Vec<usize> =
            lines.iter().enumerate().filter(|(_, l)| l.trim_end().ends_with(&format!(" {f};"))).map(|(i, _)| i).collect();
        assert_eq!(hits.len(), 1, "field `{f}` of {name} in\n{}", &src[open..close]);
        hits[0]
    };
    let (i, j) = (field(a), field(b));
    let ty = |l: &str| l.trim().rsplit_once(' ').map(|(t, _)| t.to_string());
    assert_eq!(ty(&lines[i]), ty(&lines[j]), "{name}.{a} and {name}.{b} must have the same type");
    lines.swap(i, j);
    let cuda_src = format!("{}{}{}", &src[..open], lines.join("\n"), &src[close..]);
    KernelSource::new(source.name.clone(), cuda_src, source.geometry)
}

/// Compiles `source` unchanged (it must compile) and with `name.a` and `name.b` swapped (it must
/// not: the log names `name.a`).
fn assert_contract_enforced(source: &KernelSource, target: Target, name: &str, a: &str, b: &str) {
    let compiler = Compiler::new();
    compiler.compile(source, target).unwrap_or_else(|e| panic!("{} does not compile as rendered: {e}", source.name));
    let swapped = swap_fields(source, name, a, b);
    let log = match compiler.compile(&swapped, target) {
        Ok(_) => panic!("{}: {name}.{a} and {name}.{b} swapped, and it still compiled", source.name),
        Err(RuntimeError::Compile { log, .. }) => log,
        Err(other) => panic!("expected a compile error, got {other}"),
    };
    let named = format!("{name}.{a}: the Rust struct has it at byte");
    assert!(log.contains("static assertion failed") && log.contains(&named), "{}: {log}", source.name);
}

fn ptx(arch: Arch) -> Target {
    Target::ptx(arch)
}

#[test]
fn gemm_params_are_enforced() {
    if !common::nvrtc_available() {
        return;
    }
    let spec = GemmSpec::new(DType::BF16, OutType::BF16);
    let sm80 = spec.render(Arch::SM80).unwrap();
    assert_contract_enforced(&sm80, ptx(Arch::SM80), "GemmParams", "ldx", "ldw");
    let sm90a = spec.render(Arch::SM90A).unwrap();
    assert!(sm90a.name.contains("_sm90a_"), "{}", sm90a.name);
    assert_contract_enforced(&sm90a, ptx(Arch::SM90A), "HopperGemmParams", "x_map", "w_map");
    assert_contract_enforced(&sm90a, ptx(Arch::SM90A), "GemmParams", "alpha", "beta");
}

#[test]
fn lora_params_are_enforced() {
    if !common::nvrtc_available() {
        return;
    }
    let per_row = LoraSpec { adapters: tessera_runtime::codegen::AdapterMode::PerRow, ..LoraSpec::new(DType::F16, OutType::F32, 16) };
    let sm80 = per_row.render(Arch::SM80).unwrap();
    assert_contract_enforced(&sm80, ptx(Arch::SM80), "LoraParams", "m", "n");
    let sm90a = LoraSpec::new(DType::BF16, OutType::BF16, 32).render(Arch::SM90A).unwrap();
    assert!(sm90a.name.contains("_sm90a_"), "{}", sm90a.name);
    assert_contract_enforced(&sm90a, ptx(Arch::SM90A), "HopperLoraParams", "a_map", "b_map");
    assert_contract_enforced(&sm90a, ptx(Arch::SM90A), "LoraParams", "rank", "n_adapters");
}
