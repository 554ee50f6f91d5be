//! Every family's host/device contract is generated from its Rust definitions and enforced by
//! NVRTC: a rendered kernel compiles as it is, and the same source with two same-size fields of a
//! generated parameter struct swapped (what a hand-written twin that drifted would be) fails to
//! compile with the struct and the moved field named in the log. One case per parameter struct of
//! each family. Needs NVRTC; skipped with a note without it.

mod common;

use tessera_runtime::codegen::{Arch, ElemType, GemmSpec, KernelSource, LoraSpec, CONTRACT_MARKER};
use tessera_runtime::{Compiler, RuntimeError, Target};

/// The device size of a scalar or pointer field type; `None` for other types (structs, enums).
fn device_size(ty: &str) -> Option<usize> {
    match ty {
        _ if ty.ends_with('*') => Some(8),
        "long long" | "unsigned long long" | "double" => Some(8),
        "int" | "unsigned int" | "float" => Some(4),
        _ => None,
    }
}

/// `source` with the declarations of the fields `a` and `b` of the generated struct `name`
/// exchanged: the lines `<type> a;` and `<type> b;` (the same type, or two scalar / pointer types
/// of the same size, so the struct keeps its size and only the offsets move) inside
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
    let ty = |l: &str| l.trim().rsplit_once(' ').map(|(t, _)| t.to_string()).expect("a field declaration");
    let (ta, tb) = (ty(&lines[i]), ty(&lines[j]));
    assert!(
        ta == tb || device_size(&ta).is_some_and(|s| device_size(&tb) == Some(s)),
        "{name}.{a} ({ta}) and {name}.{b} ({tb}) must have the same size"
    );
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
    let spec = GemmSpec::new(ElemType::BF16, ElemType::BF16);
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
    let per_row = LoraSpec { adapters: tessera_runtime::codegen::AdapterMode::PerRow, ..LoraSpec::new(ElemType::F16, ElemType::F32, 16) };
    let sm80 = per_row.render(Arch::SM80).unwrap();
    assert_contract_enforced(&sm80, ptx(Arch::SM80), "LoraParams", "m", "n");
    let sm90a = LoraSpec::new(ElemType::BF16, ElemType::BF16, 32).render(Arch::SM90A).unwrap();
    assert!(sm90a.name.contains("_sm90a_"), "{}", sm90a.name);
    assert_contract_enforced(&sm90a, ptx(Arch::SM90A), "HopperLoraParams", "a_map", "b_map");
    assert_contract_enforced(&sm90a, ptx(Arch::SM90A), "LoraParams", "rank", "n_adapters");
}

#[test]
fn attention_params_are_enforced() {
    use tessera_runtime::codegen::{AttentionFeatures, AttentionSpec};
    if !common::nvrtc_available() {
        return;
    }
    let spec = AttentionSpec::new(ElemType::BF16, 64, true, 8, 2);
    let sm80 = spec.render(Arch::SM80).unwrap();
    assert_contract_enforced(&sm80, ptx(Arch::SM80), "AttentionParams", "q_batch_stride", "q_seq_stride");
    assert_contract_enforced(&sm80, ptx(Arch::SM80), "AttentionParams", "seq_q", "seq_k");
    // A variant kernel reads the variant fields (and tests the generated FEATURES bits).
    let split = spec.with_features(AttentionFeatures { split_kv: true, varlen: true, ..Default::default() });
    let split = split.render(Arch::SM80).unwrap();
    assert_contract_enforced(&split, ptx(Arch::SM80), "AttentionParams", "partial_o", "partial_lse");
    let sm90a = AttentionSpec::new(ElemType::BF16, 128, true, 16, 4).render(Arch::SM90A).unwrap();
    assert!(sm90a.name.contains("_sm90a_"), "{}", sm90a.name);
    assert_contract_enforced(&sm90a, ptx(Arch::SM90A), "HopperAttentionParams", "q_map", "k_map");
    assert_contract_enforced(&sm90a, ptx(Arch::SM90A), "AttentionParams", "seq_q", "seq_k");
}

#[test]
fn amp_params_are_enforced() {
    use tessera_runtime::codegen::{AdamWSpec, CastSpec, ElemType, ScaleUpdateSpec, UnscaleSpec};
    if !common::nvrtc_available() {
        return;
    }
    let target = ptx(Arch::SM80);
    let cast = CastSpec::to_fp8(ElemType::BF16, ElemType::E4M3).render(Arch::SM80).unwrap();
    assert_contract_enforced(&cast, target, "CastParams", "x", "y");
    assert_contract_enforced(&cast, target, "CastParams", "scale", "amax");
    // The table entries are enforced inside the kernels that read them.
    let unscale = UnscaleSpec::default().render(Arch::SM80).unwrap();
    assert_contract_enforced(&unscale, target, "UnscaleParams", "n_tensors", "reserved");
    assert_contract_enforced(&unscale, target, "UnscaleEntry", "len", "first_chunk");
    let adamw = AdamWSpec::default().render(Arch::SM80).unwrap();
    assert_contract_enforced(&adamw, target, "AdamWParams", "beta1", "beta2");
    assert_contract_enforced(&adamw, target, "AdamWEntry", "grad_dtype", "model_dtype");
    assert_contract_enforced(&adamw, target, "AdamWEntry", "master", "exp_avg");
    let loss_scale = ScaleUpdateSpec::LossScale.render(Arch::SM80).unwrap();
    assert_contract_enforced(&loss_scale, target, "LossScaleParams", "growth_factor", "backoff_factor");
    let fp8_scale = ScaleUpdateSpec::Fp8Scale.render(Arch::SM80).unwrap();
    assert_contract_enforced(&fp8_scale, target, "Fp8ScaleParams", "scale", "scale_inv");
}

#[test]
fn window_params_are_enforced() {
    use tessera_runtime::codegen::{ElemType, WindowOp, WindowSpec};
    if !common::nvrtc_available() {
        return;
    }
    let window = WindowSpec::new(WindowOp::Sum, ElemType::BF16).render(Arch::SM80).unwrap();
    assert_contract_enforced(&window, ptx(Arch::SM80), "WindowParams", "n", "k");
    assert_contract_enforced(&window, ptx(Arch::SM80), "WindowParams", "x", "ws");
}

#[test]
fn map_params_are_enforced() {
    use tessera_runtime::codegen::{ElemType, MapSpec, UserFunction};
    if !common::nvrtc_available() {
        return;
    }
    const AXPY: UserFunction = UserFunction {
        name: "axpy",
        cuda_name: "tessera_user_axpy",
        cuda: "__device__ __forceinline__ float tessera_user_axpy(float a, float x, float y) {\n    return a * x + y;\n}\n",
        inputs: &[ElemType::F32, ElemType::BF16, ElemType::F16],
        output: ElemType::BF16,
    };
    let map = MapSpec::new(AXPY).render(Arch::SM80).unwrap();
    // The only same-size pair: the output pointer and the element count.
    assert_contract_enforced(&map, ptx(Arch::SM80), "MapParams", "out", "n");
}
