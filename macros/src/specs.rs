//! `#[tessera::attention]`, `#[tessera::gemm]`, `#[tessera::lora]`: a struct declaration becomes a
//! validated kernel with a typed `run` method, its source, and a registry entry.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::ItemStruct;
use tessera_codegen::{Activation, AdapterMode, Arch, AttentionSpec, ElemType, Epilogue, GemmSpec, GemmTile, Layout, LoraSpec, LoraVariant, SpecError, TileConfig};

use crate::args::Args;

/// The architecture the macros validate against and render `SOURCE` for: every supported GPU
/// runs what fits sm_80 (sm_86 / sm_89 have less shared memory; the runtime re-checks there).
const ARCH: Arch = Arch::SM80;

const DTYPES: [(&str, ElemType); 2] = [("f16", ElemType::F16), ("bf16", ElemType::BF16)];
const OUTS: [(&str, ElemType); 3] = [("f16", ElemType::F16), ("bf16", ElemType::BF16), ("f32", ElemType::F32)];
const LAYOUTS: [(&str, Layout); 2] = [("row", Layout::RowMajor), ("col", Layout::ColMajor)];
const ACTIVATIONS: [(&str, Activation); 4] = [
    ("none", Activation::None),
    ("relu", Activation::Relu),
    ("gelu_tanh", Activation::GeluTanh),
    ("silu", Activation::Silu),
];
const ADAPTERS: [(&str, AdapterMode); 2] = [("single", AdapterMode::Single), ("per_row", AdapterMode::PerRow)];

/// Points a spec error at the argument it names (`tile.block_n`, `head_dim`, ...), else at the
/// attribute as a whole.
fn spec_error(e: SpecError, args: &Args, call: Span) -> syn::Error {
    let key = match &e {
        SpecError::Unsupported { field, .. } => Some(field.to_string()),
        SpecError::HeadsNotDivisible { .. } => Some("heads_kv".into()),
        SpecError::BlockMismatch { .. } => Some("tile.block_m".into()),
        SpecError::SharedMemory { .. } | SpecError::Registers { .. } => Some("tile".into()),
    };
    // An epilogue error points at the first epilogue argument given.
    let epilogue_span = || ["bias", "activation", "epilogue", "residual"].iter().find_map(|k| args.span(k));
    let span = key
        .and_then(|k| {
            args.span(&k)
                .or_else(|| (k == "tile" || k.starts_with("tile.")).then_some(args.tile_span).flatten())
                .or_else(|| (k == "epilogue").then(epilogue_span).flatten())
        })
        .unwrap_or(call);
    syn::Error::new(span, e.to_string())
}

/// The `ElemType` variant and the host element type a generated wrapper uses for
/// it (fp8 travels as its raw byte; the DSL only admits the MMA types today).
fn elem_tokens(e: ElemType) -> (TokenStream, TokenStream) {
    match e {
        ElemType::F16 => (quote!(::tessera::ElemType::F16), quote!(::tessera::half::f16)),
        ElemType::BF16 => (quote!(::tessera::ElemType::BF16), quote!(::tessera::half::bf16)),
        ElemType::F32 => (quote!(::tessera::ElemType::F32), quote!(f32)),
        ElemType::E4M3 => (quote!(::tessera::ElemType::E4M3), quote!(u8)),
        ElemType::E5M2 => (quote!(::tessera::ElemType::E5M2), quote!(u8)),
    }
}

fn dtype_tokens(d: ElemType) -> TokenStream {
    elem_tokens(d).0
}

fn elem16_tokens(d: ElemType) -> TokenStream {
    elem_tokens(d).1
}

fn layout_tokens(l: Layout) -> TokenStream {
    match l {
        Layout::RowMajor => quote!(::tessera::codegen::Layout::RowMajor),
        Layout::ColMajor => quote!(::tessera::codegen::Layout::ColMajor),
    }
}

fn activation_tokens(a: Activation) -> TokenStream {
    match a {
        Activation::None => quote!(::tessera::codegen::Activation::None),
        Activation::Relu => quote!(::tessera::codegen::Activation::Relu),
        Activation::GeluTanh => quote!(::tessera::codegen::Activation::GeluTanh),
        Activation::Silu => quote!(::tessera::codegen::Activation::Silu),
    }
}

/// `impl` items and the registry entry every declared kernel gets.
fn common(item: &ItemStruct, spec_type: TokenStream, spec: TokenStream, variant: TokenStream, source: Option<String>) -> TokenStream {
    let name = &item.ident;
    let name_str = name.to_string();
    let source_const = source.map(|s| {
        quote! {
            /// The generated CUDA C++ for sm_80, rendered when this crate was compiled.
            pub const SOURCE: &'static str = #s;
        }
    });
    quote! {
        #item

        impl #name {
            /// The spec, validated at compile time.
            pub const SPEC: #spec_type = #spec;
            /// The name this kernel is registered under.
            pub const NAME: &'static str = #name_str;
            #source_const

            /// Renders the CUDA C++ for `arch`.
            pub fn source(arch: ::tessera::Arch) -> ::std::result::Result<::tessera::KernelSource, ::tessera::SpecError> {
                Self::SPEC.render(arch)
            }
        }

        ::tessera::inventory::submit! {
            ::tessera::registry::Registration {
                name: #name_str,
                module: ::core::module_path!(),
                spec: ::tessera::codegen::KernelSpec::#variant(#name::SPEC),
            }
        }
    }
}

pub fn attention(args: Args, item: ItemStruct, call: Span) -> syn::Result<TokenStream> {
    args.only("attention", &["dtype", "head_dim", "causal", "heads_q", "heads_kv", "tile.block_m", "tile.block_n", "tile.warps", "tile.stages"])?;
    let dtype = args.choice("dtype", &DTYPES)?.ok_or_else(|| syn::Error::new(call, "missing `dtype = f16 | bf16`"))?;
    let head_dim = args.required_int("head_dim", call)?;
    let heads_q = args.required_int("heads_q", call)?;
    let heads_kv = args.int("heads_kv")?.unwrap_or(heads_q);
    let causal = args.flag("causal")?;
    let mut spec = AttentionSpec::new(dtype, head_dim, causal, heads_q, heads_kv);
    if args.tile_span.is_some() {
        let d = AttentionSpec::default_tile(head_dim, ARCH);
        let warps = args.int("tile.warps")?.unwrap_or(d.warps);
        spec.tile = Some(TileConfig {
            block_m: args.int("tile.block_m")?.unwrap_or(16 * warps),
            block_n: args.int("tile.block_n")?.unwrap_or(d.block_n),
            warps,
            stages: args.int("tile.stages")?.unwrap_or(d.stages),
        });
    }
    spec.validate(ARCH).map_err(|e| spec_error(e, &args, call))?;
    let source = spec.render(ARCH).map_err(|e| spec_error(e, &args, call))?.cuda_src;
    let d = dtype_tokens(dtype);
    let tile = match spec.tile {
        Some(t) => {
            let (m, n, w, s) = (t.block_m, t.block_n, t.warps, t.stages);
            quote!(::core::option::Option::Some(::tessera::TileConfig { block_m: #m, block_n: #n, warps: #w, stages: #s }))
        }
        None => quote!(::core::option::Option::None),
    };
    let spec_tokens = quote! {
        ::tessera::AttentionSpec { dtype: #d, head_dim: #head_dim, causal: #causal, heads_q: #heads_q, heads_kv: #heads_kv, tile: #tile, features: ::tessera::codegen::AttentionFeatures::PLAIN, hopper_tile: ::core::option::Option::None }
    };
    let elem = elem16_tokens(dtype);
    let name = &item.ident;
    let mut out = common(&item, quote!(::tessera::AttentionSpec), spec_tokens, quote!(Attention), Some(source));
    out.extend(quote! {
        impl #name {
            /// Runs the kernel on host tensors: Q `[batch, seq_q, heads_q, head_dim]`, K and V
            /// `[batch, seq_k, heads_kv, head_dim]`, returning O in Q's shape, with the default
            /// softmax scale 1/sqrt(head_dim).
            #[allow(clippy::too_many_arguments)]
            pub fn run(
                backend: &dyn ::tessera::runtime::Backend,
                compiler: &::tessera::runtime::Compiler,
                batch: usize,
                seq_q: usize,
                seq_k: usize,
                q: &[#elem],
                k: &[#elem],
                v: &[#elem],
            ) -> ::std::result::Result<::std::vec::Vec<#elem>, ::tessera::TesseraError> {
                ::tessera::typed::attention(&Self::SPEC, backend, compiler, batch, seq_q, seq_k, q, k, v)
            }
        }
    });
    Ok(out)
}

/// The GEMM / LoRA tile from `tile(...)`, defaults from `default`.
fn gemm_tile(args: &Args, default: GemmTile) -> syn::Result<Option<GemmTile>> {
    if args.tile_span.is_none() {
        return Ok(None);
    }
    Ok(Some(GemmTile {
        block_m: args.int("tile.block_m")?.unwrap_or(default.block_m),
        block_n: args.int("tile.block_n")?.unwrap_or(default.block_n),
        block_k: args.int("tile.block_k")?.unwrap_or(default.block_k),
        warps: args.int("tile.warps")?.unwrap_or(default.warps),
        stages: args.int("tile.stages")?.unwrap_or(default.stages),
        split_k: args.int("tile.split_k")?.unwrap_or(default.split_k),
    }))
}

fn gemm_tile_tokens(tile: Option<GemmTile>) -> TokenStream {
    match tile {
        Some(t) => {
            let (m, n, k, w, s, x) = (t.block_m, t.block_n, t.block_k, t.warps, t.stages, t.split_k);
            quote!(::core::option::Option::Some(::tessera::codegen::GemmTile { block_m: #m, block_n: #n, block_k: #k, warps: #w, stages: #s, split_k: #x }))
        }
        None => quote!(::core::option::Option::None),
    }
}

/// The epilogue fields shared by GEMM and LoRA; a user epilogue is a path to an
/// `#[tessera::elementwise]` function whose one-input arity is asserted at compile time.
fn epilogue(args: &Args) -> syn::Result<(Epilogue, TokenStream, TokenStream)> {
    let e = Epilogue {
        bias: args.flag("bias")?,
        activation: args.choice("activation", &ACTIVATIONS)?.unwrap_or(Activation::None),
        residual: args.flag("residual")?,
        user: None,
    };
    let (bias, act, res) = (e.bias, activation_tokens(e.activation), e.residual);
    let (user, check) = match args.path("epilogue")? {
        Some((path, span)) => (
            quote_spanned!(span=> ::core::option::Option::Some(#path::FUNCTION)),
            quote_spanned! {span=>
                const _: () = ::core::assert!(
                    #path::FUNCTION.inputs.len() == 1,
                    "an epilogue must be an #[tessera::elementwise] function of exactly one input"
                );
            },
        ),
        None => (quote!(::core::option::Option::None), quote!()),
    };
    let tokens = quote!(::tessera::codegen::Epilogue { bias: #bias, activation: #act, residual: #res, user: #user });
    Ok((e, tokens, check))
}

const EPILOGUE_KEYS: [&str; 4] = ["bias", "activation", "residual", "epilogue"];
const TILE_KEYS: [&str; 6] = ["tile.block_m", "tile.block_n", "tile.block_k", "tile.warps", "tile.stages", "tile.split_k"];

pub fn gemm(args: Args, item: ItemStruct, call: Span) -> syn::Result<TokenStream> {
    let mut known = vec!["dtype", "out", "layout_x", "layout_w", "unaligned"];
    known.extend(EPILOGUE_KEYS);
    known.extend(TILE_KEYS);
    args.only("gemm", &known)?;
    let dtype = args.choice("dtype", &DTYPES)?.ok_or_else(|| syn::Error::new(call, "missing `dtype = f16 | bf16`"))?;
    let out = args.choice("out", &OUTS)?.unwrap_or(dtype);
    let (e, e_tokens, e_check) = epilogue(&args)?;
    let mut spec = GemmSpec {
        layout_x: args.choice("layout_x", &LAYOUTS)?.unwrap_or(Layout::RowMajor),
        layout_w: args.choice("layout_w", &LAYOUTS)?.unwrap_or(Layout::RowMajor),
        epilogue: e,
        aligned: !args.flag("unaligned")?,
        ..GemmSpec::new(dtype, out)
    };
    spec.tile = gemm_tile(&args, GemmSpec::default_tile(ARCH))?;
    spec.validate(ARCH).map_err(|e| spec_error(e, &args, call))?;
    let has_user = args.path("epilogue")?.is_some();
    let source = (!has_user).then(|| spec.render(ARCH).map(|s| s.cuda_src)).transpose().map_err(|e| spec_error(e, &args, call))?;
    let (d, (o, out_elem), lx, lw, aligned, tile) = (
        dtype_tokens(dtype),
        elem_tokens(out),
        layout_tokens(spec.layout_x),
        layout_tokens(spec.layout_w),
        spec.aligned,
        gemm_tile_tokens(spec.tile),
    );
    let spec_tokens = quote! {
        ::tessera::codegen::GemmSpec { dtype: #d, out: #o, layout_x: #lx, layout_w: #lw, epilogue: #e_tokens, aligned: #aligned, tile: #tile, hopper_tile: ::core::option::Option::None }
    };
    let elem = elem16_tokens(dtype);
    let name = &item.ident;
    let mut tokens = common(&item, quote!(::tessera::codegen::GemmSpec), spec_tokens, quote!(Gemm), source);
    tokens.extend(e_check);
    tokens.extend(quote! {
        impl #name {
            /// Runs `Y = act(alpha X W + beta C + bias) + residual` on host tensors: X `[m, k]`
            /// (column-major spec: `[k, m]`), W `[k, n]` (column-major: `[n, k]`), C and residual
            /// `[m, n]`, bias `[n]`; returns Y `[m, n]`.
            #[allow(clippy::too_many_arguments)]
            pub fn run(
                backend: &dyn ::tessera::runtime::Backend,
                compiler: &::tessera::runtime::Compiler,
                (m, n, k): (usize, usize, usize),
                x: &[#elem],
                w: &[#elem],
                c: ::core::option::Option<&[#out_elem]>,
                bias: ::core::option::Option<&[#out_elem]>,
                residual: ::core::option::Option<&[#out_elem]>,
                alpha: f32,
                beta: f32,
            ) -> ::std::result::Result<::std::vec::Vec<#out_elem>, ::tessera::TesseraError> {
                ::tessera::typed::gemm(&Self::SPEC, backend, compiler, (m, n, k), x, w, c, bias, residual, alpha, beta)
            }
        }
    });
    Ok(tokens)
}

pub fn lora(args: Args, item: ItemStruct, call: Span) -> syn::Result<TokenStream> {
    let mut known = vec!["dtype", "out", "rank", "adapters", "bottleneck", "layout_x", "layout_w", "unaligned"];
    known.extend(EPILOGUE_KEYS);
    known.extend(TILE_KEYS);
    args.only("lora", &known)?;
    let dtype = args.choice("dtype", &DTYPES)?.ok_or_else(|| syn::Error::new(call, "missing `dtype = f16 | bf16`"))?;
    let out = args.choice("out", &OUTS)?.unwrap_or(dtype);
    let rank = args.required_int("rank", call)?;
    let (e, e_tokens, e_check) = epilogue(&args)?;
    let variant = match args.choice("bottleneck", &ACTIVATIONS)? {
        Some(a) => LoraVariant::Bottleneck { activation: a },
        None => LoraVariant::Lora,
    };
    let mut spec = LoraSpec {
        layout_x: args.choice("layout_x", &LAYOUTS)?.unwrap_or(Layout::RowMajor),
        layout_w: args.choice("layout_w", &LAYOUTS)?.unwrap_or(Layout::RowMajor),
        adapters: args.choice("adapters", &ADAPTERS)?.unwrap_or(AdapterMode::Single),
        variant,
        epilogue: e,
        aligned: !args.flag("unaligned")?,
        ..LoraSpec::new(dtype, out, rank)
    };
    spec.tile = gemm_tile(&args, spec.default_tile(ARCH))?;
    spec.validate(ARCH).map_err(|e| spec_error(e, &args, call))?;
    let has_user = args.path("epilogue")?.is_some();
    let source = (!has_user).then(|| spec.render(ARCH).map(|s| s.cuda_src)).transpose().map_err(|e| spec_error(e, &args, call))?;
    let (d, (o, out_elem), lx, lw, aligned, tile) = (
        dtype_tokens(dtype),
        elem_tokens(out),
        layout_tokens(spec.layout_x),
        layout_tokens(spec.layout_w),
        spec.aligned,
        gemm_tile_tokens(spec.tile),
    );
    let variant_tokens = match variant {
        LoraVariant::Lora => quote!(::tessera::codegen::LoraVariant::Lora),
        LoraVariant::Bottleneck { activation } => {
            let a = activation_tokens(activation);
            quote!(::tessera::codegen::LoraVariant::Bottleneck { activation: #a })
        }
    };
    let adapters = match spec.adapters {
        AdapterMode::Single => quote!(::tessera::codegen::AdapterMode::Single),
        AdapterMode::PerRow => quote!(::tessera::codegen::AdapterMode::PerRow),
    };
    let spec_tokens = quote! {
        ::tessera::codegen::LoraSpec {
            dtype: #d, out: #o, layout_x: #lx, layout_w: #lw, rank: #rank, variant: #variant_tokens,
            adapters: #adapters, epilogue: #e_tokens, aligned: #aligned, tile: #tile,
        }
    };
    let elem = elem16_tokens(dtype);
    let name = &item.ident;
    let mut tokens = common(&item, quote!(::tessera::codegen::LoraSpec), spec_tokens, quote!(Lora), source);
    tokens.extend(e_check);
    tokens.extend(quote! {
        impl #name {
            /// Runs the kernel on host tensors: X `[m, k]`, W `[k, n]` (none for the bottleneck),
            /// A `[k, r]` / B `[r, n]` (stacked `[adapters, ..]` with per-row ids, -1 = none),
            /// bias `[n]`, residual `[m, n]`; returns Y `[m, n]`.
            #[allow(clippy::too_many_arguments)]
            pub fn run(
                backend: &dyn ::tessera::runtime::Backend,
                compiler: &::tessera::runtime::Compiler,
                problem: ::tessera::runtime::LoraProblem,
                x: &[#elem],
                w: ::core::option::Option<&[#elem]>,
                a: &[#elem],
                b: &[#elem],
                ids: ::core::option::Option<&[i64]>,
                bias: ::core::option::Option<&[#out_elem]>,
                residual: ::core::option::Option<&[#out_elem]>,
                scale: f32,
            ) -> ::std::result::Result<::std::vec::Vec<#out_elem>, ::tessera::TesseraError> {
                ::tessera::typed::lora(&Self::SPEC, backend, compiler, problem, x, w, a, b, ids, bias, residual, scale)
            }
        }
    });
    Ok(tokens)
}
