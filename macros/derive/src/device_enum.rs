//! `#[derive(DeviceEnum)]`: a fieldless enum whose variants are CUDA constants.

use std::collections::BTreeMap;

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Error, Fields, LitStr, Path, Result};

use crate::attrs::{check_cuda_ident, crate_path, default_crate_path, doc_text, string_value, Repr};

const WHAT: &str = "#[derive(DeviceEnum)]";

struct Options {
    prefix: String,
    cuda: Option<LitStr>,
    krate: Path,
}

fn options(input: &DeriveInput) -> Result<Options> {
    let mut opts = Options { prefix: String::new(), cuda: None, krate: default_crate_path() };
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("device_enum")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("prefix") {
                opts.prefix = string_value(&meta)?.value();
            } else if meta.path.is_ident("cuda") {
                opts.cuda = Some(string_value(&meta)?);
            } else if meta.path.is_ident("crate") {
                opts.krate = crate_path(&string_value(&meta)?)?;
            } else if meta.path.is_ident("name") {
                return Err(meta.error("`name = \"...\"` goes on a variant; on the enum: `prefix`, `cuda` or `crate`"));
            } else {
                return Err(meta.error(
                    "unknown device_enum option; expected `prefix = \"PREFIX_\"`, `cuda = \"Name\"` or `crate = \"path\"`",
                ));
            }
            Ok(())
        })?;
    }
    Ok(opts)
}

/// `#[device_enum(name = "...")]` on a variant.
fn variant_name(variant: &syn::Variant) -> Result<Option<LitStr>> {
    let mut name = None;
    for attr in variant.attrs.iter().filter(|a| a.path().is_ident("device_enum")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                name = Some(string_value(&meta)?);
                Ok(())
            } else {
                Err(meta.error("unknown device_enum option on a variant; expected `name = \"NAME\"`"))
            }
        })?;
    }
    Ok(name)
}

/// `GeluTanh` -> `GELU_TANH`, `SplitKV` -> `SPLIT_KV`, `BF16` -> `BF16`, `E4M3` -> `E4M3`: a word
/// starts at a capital that follows a lower-case letter, or that follows a capital and is followed
/// by a lower-case letter; digits never start a word.
pub fn screaming_snake_case(ident: &str) -> String {
    let chars: Vec<char> = ident.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if i > 0 && c.is_uppercase() {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || (prev.is_uppercase() && next_lower) {
                out.push('_');
            }
        }
        out.extend(c.to_uppercase());
    }
    out
}

pub fn expand(input: &DeriveInput) -> Result<TokenStream> {
    let name = &input.ident;
    let Data::Enum(data) = &input.data else {
        let span = match &input.data {
            Data::Struct(s) => s.struct_token.span,
            Data::Union(u) => u.union_token.span,
            Data::Enum(_) => unreachable!(),
        };
        return Err(Error::new(
            span,
            format!("{WHAT} is for fieldless enums with explicit discriminants; parameter structs are #[derive(KernelParams)]"),
        ));
    };
    if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
        return Err(Error::new(input.generics.span(), format!("{WHAT} does not support generics")));
    }
    let repr = Repr::parse(&input.attrs)?;
    let underlying =
        match &repr.int {
            Some((int, _)) if int == "i32" => "int",
            Some((int, _)) if int == "u32" => "unsigned int",
            Some((int, span)) => {
                return Err(Error::new(
                    *span,
                    format!("{WHAT} needs #[repr(i32)] or #[repr(u32)] (CUDA `int` / `unsigned int`), not repr({int})"),
                ))
            }
            None => return Err(Error::new(
                name.span(),
                format!(
                    "{WHAT} needs #[repr(i32)] or #[repr(u32)]: the enum is an `int` or `unsigned int` on the device"
                ),
            )),
        };
    let Options { prefix, cuda, krate } = options(input)?;
    let cuda_name = match &cuda {
        Some(lit) => {
            check_cuda_ident(&lit.value(), lit.span(), "CUDA enum name")?;
            Some(lit.value())
        }
        None => None,
    };
    if data.variants.is_empty() {
        return Err(Error::new(name.span(), format!("{WHAT} needs at least one variant")));
    }
    let mut seen: BTreeMap<String, Span> = BTreeMap::new();
    let mut entries = Vec::new();
    for variant in &data.variants {
        if !matches!(variant.fields, Fields::Unit) {
            return Err(Error::new(
                variant.fields.span(),
                format!("{WHAT} variants carry no data: each one is a CUDA integer constant"),
            ));
        }
        if variant.discriminant.is_none() {
            return Err(Error::new(
                variant.ident.span(),
                format!(
                    "{WHAT} needs an explicit discriminant on every variant (`{} = 0`): its value is part of the \
                     host/device contract",
                    variant.ident
                ),
            ));
        }
        let (suffix, span) = match variant_name(variant)? {
            Some(lit) => (lit.value(), lit.span()),
            None => (screaming_snake_case(&variant.ident.to_string()), variant.ident.span()),
        };
        let constant = format!("{prefix}{suffix}");
        check_cuda_ident(&constant, span, "CUDA constant")?;
        if seen.insert(constant.clone(), span).is_some() {
            return Err(Error::new(span, format!("two variants are both named `{constant}` in CUDA")));
        }
        let ident = &variant.ident;
        entries.push(quote!((#constant, #name::#ident as i64)));
    }
    let p = quote!(#krate::params);
    let cuda_name_tokens = match &cuda_name {
        Some(n) => quote!(::core::option::Option::Some(#n)),
        None => quote!(::core::option::Option::None),
    };
    let cuda_type = cuda_name.as_deref().unwrap_or(underlying);
    let doc = doc_text(&input.attrs);

    Ok(quote! {
        const _: () = {
            #[automatically_derived]
            impl #p::DeviceEnum for #name {
                const CUDA_NAME: ::core::option::Option<&'static str> = #cuda_name_tokens;
                const UNDERLYING: &'static str = #underlying;
                const DOC: &'static str = #doc;
                const VARIANTS: &'static [(&'static str, i64)] = &[#(#entries),*];
                fn value(self) -> i64 {
                    self as i64
                }
            }

            // SAFETY: `#[repr(i32)]` / `#[repr(u32)]` (checked by the derive): four initialised bytes.
            #[automatically_derived]
            #[allow(unsafe_code)]
            unsafe impl #p::DeviceType for #name {
                fn cuda_type() -> ::std::string::String {
                    ::std::string::String::from(#cuda_type)
                }
                fn declarations(out: &mut #p::Declarations) {
                    out.declare::<Self>(|_| {}, <Self as #p::DeviceEnum>::cuda_declaration);
                }
            }

            #[automatically_derived]
            impl #p::Pointee for #name {
                fn cuda_type() -> ::std::string::String {
                    ::std::string::String::from(#cuda_type)
                }
                fn declarations(out: &mut #p::Declarations) {
                    <Self as #p::DeviceType>::declarations(out);
                }
            }
        };
    })
}

#[cfg(test)]
mod tests {
    use super::screaming_snake_case as s;

    #[test]
    fn screaming_snake_case_splits_words_not_digits() {
        assert_eq!(s("None"), "NONE");
        assert_eq!(s("GeluTanh"), "GELU_TANH");
        assert_eq!(s("SplitKV"), "SPLIT_KV");
        assert_eq!(s("HTTPServer"), "HTTP_SERVER");
        assert_eq!(s("BF16"), "BF16");
        assert_eq!(s("Bf16"), "BF16");
        assert_eq!(s("E4M3"), "E4M3");
        assert_eq!(s("F32"), "F32");
        assert_eq!(s("Relu"), "RELU");
    }
}
