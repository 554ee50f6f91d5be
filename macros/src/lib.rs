//! Attribute macros that declare Tessera kernels in a downstream crate. Use them through the
//! `tessera` crate (`#[tessera::attention(...)]` etc.), whose re-exports carry the documentation
//! and examples; the expansions refer to `::tessera`.
//!
//! Every macro validates its spec while the crate compiles: an unsupported value fails the build
//! with an error at the offending argument that lists the allowed values.

mod args;
mod elementwise;
mod elementwise_macro;
mod specs;

use proc_macro::TokenStream;
use proc_macro2::Span;
use syn::parse_macro_input;

fn parse_args(args: TokenStream) -> Result<args::Args, syn::Error> {
    let mut parsed = args::Args::default();
    let parser = syn::meta::parser(|meta| parsed.parse(meta, ""));
    syn::parse::Parser::parse(parser, args)?;
    Ok(parsed)
}

fn expand(
    args: TokenStream,
    item: TokenStream,
    f: impl FnOnce(args::Args, syn::ItemStruct, Span) -> syn::Result<proc_macro2::TokenStream>,
) -> TokenStream {
    let call = Span::call_site();
    let item = parse_macro_input!(item as syn::ItemStruct);
    match parse_args(args).and_then(|a| f(a, item, call)) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Declares an attention forward kernel. See `tessera::attention`.
#[proc_macro_attribute]
pub fn attention(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(args, item, specs::attention)
}

/// Declares a GEMM kernel. See `tessera::gemm`.
#[proc_macro_attribute]
pub fn gemm(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(args, item, specs::gemm)
}

/// Declares a fused LoRA (or bottleneck-adapter) kernel. See `tessera::lora`.
#[proc_macro_attribute]
pub fn lora(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(args, item, specs::lora)
}

/// Turns a Rust function over scalars into an elementwise kernel and an epilogue step. See
/// `tessera::elementwise`.
#[proc_macro_attribute]
pub fn elementwise(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = parse_macro_input!(item as syn::ItemFn);
    match parse_args(args).and_then(|a| elementwise_macro::expand(a, item)) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}
