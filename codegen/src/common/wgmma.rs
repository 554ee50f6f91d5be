//! Inline-assembly wrappers for `wgmma.mma_async` (sm_90a), generated per kernel so that the
//! accumulator count (N / 2 registers of `m64nNk16`) and the operand numbering match the tile.
//!
//! The sm_90a templates take these wrappers as a `struct TesseraWgmmaOps` template parameter: CUDA
//! C++ cannot spell a brace list of N registers generically, so Rust writes each method out.

use crate::common::ElemType;

/// Where the A operand of one `wgmma.mma_async` comes from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum WgmmaA<'a> {
    /// Shared memory through the matrix descriptor parameter `desc`; `trans` is `imm-trans-a`
    /// (false: K-major, true: MN-major).
    Shared { desc: &'a str, trans: bool },
    /// Four registers of 16-bit pairs (`const tessera::u32 (&a)[4]`), always K-major.
    Registers,
}

/// One static method of the ops struct: `D (64 x n) {+}= A B` for one 16-deep k-step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WgmmaMethod<'a> {
    /// The comment line above the method (without `// `).
    pub comment: &'a str,
    pub name: &'a str,
    /// N of `m64nNk16`: a multiple of 8 in 8..=256.
    pub n: u32,
    pub dtype: ElemType,
    pub a: WgmmaA<'a>,
    /// The name of B's descriptor parameter.
    pub b_desc: &'a str,
    /// `imm-trans-b` (false: K-major B, true: MN-major B).
    pub trans_b: bool,
    /// Whether the method takes `bool accumulate` (false starts D at 0); without it D always
    /// accumulates.
    pub accumulate_param: bool,
}

/// The PTX type of a `wgmma` operand: the element type's name (a spec's validation admits only
/// [`ElemType::MMA_INPUTS`] here).
fn type_name(dtype: ElemType) -> &'static str {
    dtype.name()
}

/// `{%first, ..., %first+count-1}`.
fn register_list(first: usize, count: usize) -> String {
    let regs: Vec<String> = (first..first + count).map(|i| format!("%{i}")).collect();
    format!("{{{}}}", regs.join(", "))
}

/// `"+f"(d[0]), ...` for `count` accumulators.
fn accumulators(count: usize) -> String {
    (0..count).map(|i| format!("\"+f\"(d[{i}])")).collect::<Vec<_>>().join(", ")
}

impl WgmmaMethod<'_> {
    /// The method's C++ text, indented for the struct body. Operands are numbered: the N / 2
    /// accumulators first, then A (a descriptor or 4 registers), B's descriptor, and the scale-d
    /// flag the asm turns into its predicate.
    pub(crate) fn render(&self) -> String {
        let ty = type_name(self.dtype);
        let acc = self.n as usize / 2;
        let (a_param, a_asm, a_inputs, next) = match self.a {
            WgmmaA::Shared { desc, .. } => {
                (format!("tessera::u64 {desc}"), format!("%{acc}"), format!("\"l\"({desc})"), acc + 1)
            }
            WgmmaA::Registers => (
                "const tessera::u32 (&a)[4]".to_string(),
                register_list(acc, 4),
                "\"r\"(a[0]), \"r\"(a[1]), \"r\"(a[2]), \"r\"(a[3])".to_string(),
                acc + 4,
            ),
        };
        let b = next;
        let flag = next + 1;
        let trans = match self.a {
            WgmmaA::Shared { trans, .. } => format!("{}, {}", trans as u8, self.trans_b as u8),
            WgmmaA::Registers => format!("{}", self.trans_b as u8),
        };
        let (flag_param, flag_input) =
            if self.accumulate_param { (", bool accumulate", "(int)accumulate") } else { ("", "1") };
        format!(
            "\x20   // {comment}\n\
             \x20   static TESSERA_DEVICE void {name}(float (&d)[{acc}], {a_param}, tessera::u64 {b_desc}{flag_param}) {{\n\
             \x20       asm volatile(\"{{\\n.reg .pred p;\\nsetp.ne.b32 p, %{flag}, 0;\\n\"\n\
             \x20                    \"wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{ty}.{ty} {dregs}, {a_asm}, %{b}, p, 1, 1, {trans};\\n}}\\n\"\n\
             \x20                    : {dacc}\n\
             \x20                    : {a_inputs}, \"l\"({b_desc}), \"r\"({flag_input}));\n\
             \x20   }}\n",
            comment = self.comment,
            name = self.name,
            b_desc = self.b_desc,
            n = self.n,
            dregs = register_list(0, acc),
            dacc = accumulators(acc),
        )
    }
}

/// `struct TesseraWgmmaOps { ... };` with `methods` in order.
pub(crate) fn wgmma_ops_struct(methods: &[WgmmaMethod<'_>]) -> String {
    let body: String = methods.iter().map(WgmmaMethod::render).collect();
    format!("struct TesseraWgmmaOps {{\n{body}}};\n")
}

/// The `extern "C"` entry point of an sm_90a kernel: the ops struct, then a 384-thread kernel
/// `name` taking `params_type` as a `__grid_constant__` parameter (its tensor maps stay in parameter
/// memory) and calling `call(params)`, where `call` is the instantiated template
/// (`tessera::gemm_hopper<..., TesseraWgmmaOps>`).
pub(crate) fn hopper_entry_point(ops: &str, threads: u32, name: &str, params_type: &str, call: &str) -> String {
    format!(
        "{ops}\n\
         extern \"C\" __global__ void __launch_bounds__({threads}, 1)\n\
         {name}(const __grid_constant__ tessera::{params_type} params) {{\n    {call}(params);\n}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_a_with_both_transposes() {
        let m = WgmmaMethod {
            comment: "test",
            name: "mma",
            n: 16,
            dtype: ElemType::F16,
            a: WgmmaA::Shared { desc: "desc_a", trans: true },
            b_desc: "desc_b",
            trans_b: true,
            accumulate_param: true,
        };
        let s = wgmma_ops_struct(&[m]);
        assert!(s.contains("void mma(float (&d)[8], tessera::u64 desc_a, tessera::u64 desc_b, bool accumulate)"), "{s}");
        assert!(s.contains("m64n16k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, p, 1, 1, 1, 1;"), "{s}");
        assert!(s.contains("setp.ne.b32 p, %10, 0;"), "{s}");
        assert!(s.contains(": \"l\"(desc_a), \"l\"(desc_b), \"r\"((int)accumulate));"), "{s}");
    }
}
