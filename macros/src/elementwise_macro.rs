//! `#[tessera::elementwise]`: the translated function (kept callable on the CPU, as its own
//! reference), plus a module of the same name holding its [`UserFunction`], the elementwise
//! kernel's spec, a typed `run`, and a registry entry.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use tessera_codegen::{ElementwiseTile, ElemType, MapSpec, UserFunction};

use crate::args::Args;
use crate::elementwise::{translate, Scalar};

fn elem(s: Scalar) -> Option<(ElemType, TokenStream, TokenStream)> {
    match s {
        Scalar::F32 => Some((ElemType::F32, quote!(::tessera::codegen::ElemType::F32), quote!(f32))),
        Scalar::F16 => Some((ElemType::F16, quote!(::tessera::codegen::ElemType::F16), quote!(::tessera::half::f16))),
        Scalar::Bf16 => Some((ElemType::BF16, quote!(::tessera::codegen::ElemType::BF16), quote!(::tessera::half::bf16))),
        Scalar::Bool => None,
    }
}

pub fn expand(args: Args, item: syn::ItemFn) -> syn::Result<TokenStream> {
    args.only("elementwise", &["tile.threads", "tile.elems_per_thread", "tile.vector"])?;
    let t = translate(&item)?;
    let sig_span = syn::spanned::Spanned::span(&item.sig);
    let mut input_types = Vec::new();
    let mut input_tokens = Vec::new();
    let mut input_rust = Vec::new();
    for (_, s) in &t.params {
        let (e, tok, rust) = elem(*s).ok_or_else(|| syn::Error::new(sig_span, "parameters must be f32, f16 or bf16"))?;
        input_types.push(e);
        input_tokens.push(tok);
        input_rust.push(rust);
    }
    let (ret_type, ret_tokens, ret_rust) = elem(t.ret).ok_or_else(|| syn::Error::new(sig_span, "the result must be f32, f16 or bf16"))?;

    // Validate the kernel now (inputs, tile), with the values the expansion will hold.
    let name_str = t.name.to_string();
    let inputs: &'static [ElemType] = Box::leak(input_types.into_boxed_slice());
    let function = UserFunction {
        name: Box::leak(name_str.clone().into_boxed_str()),
        cuda_name: Box::leak(t.cuda_name.clone().into_boxed_str()),
        cuda: Box::leak(t.cuda.clone().into_boxed_str()),
        inputs,
        output: ret_type,
    };
    let default = MapSpec::new(function).tile();
    let tile = if args.tile_span.is_some() {
        Some(ElementwiseTile {
            threads: args.int("tile.threads")?.unwrap_or(default.threads),
            elems_per_thread: args.int("tile.elems_per_thread")?.unwrap_or(default.elems_per_thread),
            vector: args.int("tile.vector")?.unwrap_or(default.vector),
        })
    } else {
        None
    };
    let spec = MapSpec { function, tile };
    spec.validate(tessera_codegen::Arch::SM80).map_err(|e| {
        let span = match &e {
            tessera_codegen::SpecError::Unsupported { field, .. } => args.span(field).or(args.tile_span),
            _ => None,
        };
        syn::Error::new(span.unwrap_or(sig_span), e.to_string())
    })?;

    let name = &t.name;
    let vis = &t.vis;
    let rust = &t.rust;
    let (cuda_name, cuda) = (&t.cuda_name, &t.cuda);
    let tile_tokens = match tile {
        Some(ElementwiseTile { threads, elems_per_thread, vector }) => quote! {
            ::core::option::Option::Some(::tessera::codegen::ElementwiseTile { threads: #threads, elems_per_thread: #elems_per_thread, vector: #vector })
        },
        None => quote!(::core::option::Option::None),
    };
    let params: Vec<_> = (0..t.params.len()).map(|i| format_ident!("in{i}")).collect();
    let doc = format!("The elementwise kernel and epilogue step generated from [`fn@{name_str}`].");
    Ok(quote! {
        #rust

        #[doc = #doc]
        #[allow(non_snake_case, dead_code)]
        #vis mod #name {
            /// The function as the kernels see it: CUDA C++ and signature.
            pub const FUNCTION: ::tessera::codegen::UserFunction = ::tessera::codegen::UserFunction {
                name: #name_str,
                cuda_name: #cuda_name,
                cuda: #cuda,
                inputs: &[#(#input_tokens),*],
                output: #ret_tokens,
            };
            /// The elementwise kernel `out[i] = f(in0[i], ...)`.
            pub const SPEC: ::tessera::codegen::MapSpec = ::tessera::codegen::MapSpec { function: FUNCTION, tile: #tile_tokens };

            /// Runs the elementwise kernel over equally long inputs.
            pub fn run(
                backend: &dyn ::tessera::runtime::Backend,
                compiler: &::tessera::runtime::Compiler,
                #(#params: &[#input_rust]),*
            ) -> ::std::result::Result<::std::vec::Vec<#ret_rust>, ::tessera::TesseraError> {
                ::tessera::typed::map(&SPEC, backend, compiler, &[#(&::tessera::typed::widen(#params)),*])
            }
        }

        ::tessera::inventory::submit! {
            ::tessera::registry::Registration {
                name: #name_str,
                module: ::core::module_path!(),
                spec: ::tessera::codegen::KernelSpec::Map(#name::SPEC),
            }
        }
    })
}
