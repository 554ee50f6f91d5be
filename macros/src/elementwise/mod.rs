//! Translation of a Rust function over scalars (`#[tessera::elementwise]`) into a typed IR, a CUDA
//! C++ device function and a Rust function with the same semantics.
//!
//! # The subset
//!
//! - Signature: a plain `fn` (no generics, `const`, `async`, `unsafe`, `extern`, `self`, patterns)
//!   with at least one parameter; parameter and return types are `f32`, `f16` or `bf16` (any path
//!   ending in those names, e.g. `half::bf16`). The return type is required.
//! - Body: `let name = expr;` / `let name: T = expr;` (shadowing allowed) and a final expression,
//!   or a final `return expr;`.
//! - Expressions: float literals (`1.0`, `2.5e-3`, `1.0f32`, `2`), names, parentheses, blocks
//!   `{ let ..; expr }`, unary `-`, `+ - * /`, `< <= > >= == !=`, `&& || !` on bools,
//!   `if c { .. } else { .. }` (and `else if`), `expr as f32|f16|bf16`, the methods `min`, `max`,
//!   `abs`, `exp`, `tanh`, `sqrt` (also as `f32::max(a, b)` etc.), and `true` / `false`.
//! - Anything else is a compile error at its span.
//!
//! # Typing
//!
//! Every float expression has a type f32, f16 or bf16. Both operands of an arithmetic operation,
//! `min` / `max` or a comparison have the same type, which is the result type; `if` branches agree.
//! An unsuffixed literal takes the type of the other operand, of the `let` annotation or of the
//! function result it initialises; with nothing to take a type from it is f32. Conversions are
//! explicit with `as`.
//!
//! # Semantics (both emitters implement exactly this)
//!
//! - f32 operations are single IEEE binary32 operations, round to nearest even, no FMA contraction.
//! - f16 / bf16 values are exactly values of their type. An operation on them widens the operands
//!   to f32 (exact), does the f32 operation and rounds the result to the type, nearest even (what
//!   the `half` crate's operators do).
//! - `as` rounds to nearest even when narrowing (f32 -> f16/bf16, f16 <-> bf16) and is exact when
//!   widening. Literals are rounded once from their decimal value to their type; one that
//!   overflows its type is an error.
//! - Comparisons compare the values. `min` / `max` are IEEE 754-2019 minimumNumber / maximumNumber:
//!   a NaN operand yields the other operand, and -0 is below +0 (Rust's `f32::min` and CUDA's
//!   `fminf` leave the sign of a zero result open, so both emitters spell the operation out).
//!   `abs` clears the sign; `-x` flips it.
//! - `sqrt` is correctly rounded on both sides. `exp` and `tanh` are the only operations that are
//!   not bit-exact between the two: the Rust function uses `f32::exp` / `f32::tanh` (the platform's
//!   libm), CUDA `expf` / `tanhf` (max 2 ulp error), each rounded to the type afterwards. NaN
//!   payloads are not specified.
//!
//! # Output
//!
//! CUDA: `__device__ __forceinline__ float tessera_user_<name>(float p0, ...)`, parameters arriving
//! already rounded to their declared types, the result rounded to the return type. It uses
//! `tessera::{add_rn, sub_rn, mul_rn, div_rn, sqrt_rn, round_f16, round_bf16}` from the kernel
//! prelude and otherwise only operators and `fabsf`, `expf`, `tanhf`.
//!
//! Rust: the user's function (attributes, visibility, signature) with a generated body that follows
//! the same steps in f32 locals, rounding through `::tessera::half`.

mod emit_cuda;
mod emit_rust;
pub mod ir;
mod parse;

#[cfg(test)]
mod tests;

pub use ir::Scalar;

/// A translated elementwise function.
#[allow(dead_code)] // not every consumer reads every field
pub struct Translated {
    /// The function's name.
    pub name: syn::Ident,
    pub vis: syn::Visibility,
    /// Parameters in order: name and type (f32, f16 or bf16).
    pub params: Vec<(syn::Ident, Scalar)>,
    /// The result type (f32, f16 or bf16).
    pub ret: Scalar,
    /// `tessera_user_<name>`.
    pub cuda_name: String,
    /// The complete CUDA C++ device function (see the module docs).
    pub cuda: String,
    /// The replacement Rust function.
    pub rust: proc_macro2::TokenStream,
    /// The typed IR both were emitted from.
    pub ir: ir::Function,
}

/// Translates `item`, or returns the errors of everything outside the subset (combined).
pub fn translate(item: &syn::ItemFn) -> syn::Result<Translated> {
    let parsed = parse::parse(item)?;
    let name = item.sig.ident.clone();
    let plain_name = name.to_string().trim_start_matches("r#").to_string();
    let cuda_name = format!("tessera_user_{plain_name}");
    let param_names: Vec<String> = parsed.params.iter().map(|(n, _)| n.to_string()).collect();
    let cuda = emit_cuda::emit(&parsed.function, &cuda_name, &plain_name, &param_names);
    let rust = emit_rust::emit(item, &parsed.function);
    Ok(Translated {
        name,
        vis: item.vis.clone(),
        params: parsed.params,
        ret: parsed.ret,
        cuda_name,
        cuda,
        rust,
        ir: parsed.function,
    })
}
