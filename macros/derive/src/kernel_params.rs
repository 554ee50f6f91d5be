//! `#[derive(KernelParams)]`: the trait impls and the compile-time layout checks.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Error, Fields, LitStr, Path, Result};

use crate::attrs::{check_cuda_ident, crate_path, default_crate_path, doc_text, string_value, Repr};

const WHAT: &str = "#[derive(KernelParams)]";

struct Options {
    cuda: Option<LitStr>,
    krate: Path,
}

fn options(input: &DeriveInput) -> Result<Options> {
    let mut opts = Options { cuda: None, krate: default_crate_path() };
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("kernel_params")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("cuda") {
                opts.cuda = Some(string_value(&meta)?);
            } else if meta.path.is_ident("crate") {
                opts.krate = crate_path(&string_value(&meta)?)?;
            } else {
                return Err(
                    meta.error("unknown kernel_params option; expected `cuda = \"Name\"` or `crate = \"path\"`")
                );
            }
            Ok(())
        })?;
    }
    Ok(opts)
}

pub fn expand(input: &DeriveInput) -> Result<TokenStream> {
    let name = &input.ident;
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(f) => f,
            Fields::Unnamed(f) => {
                return Err(Error::new(
                    f.span(),
                    format!("{WHAT} needs named fields: the CUDA struct declares every field by its name"),
                ))
            }
            Fields::Unit => {
                return Err(Error::new(name.span(), format!("{WHAT} needs at least one field (a unit struct has none)")))
            }
        },
        Data::Enum(e) => {
            return Err(Error::new(
                e.enum_token.span,
                format!("{WHAT} is for #[repr(C)] structs with named fields; constants shared with CUDA are #[derive(DeviceEnum)]"),
            ))
        }
        Data::Union(u) => {
            return Err(Error::new(
                u.union_token.span,
                format!("{WHAT} is for #[repr(C)] structs with named fields, not unions"),
            ))
        }
    };
    if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
        return Err(Error::new(
            input.generics.span(),
            format!(
                "{WHAT} does not support generics: a CUDA struct has one fixed layout; declare one struct per layout"
            ),
        ));
    }
    let repr = Repr::parse(&input.attrs)?;
    if let Some(span) = repr.packed {
        return Err(Error::new(
            span,
            format!("{WHAT} does not support repr(packed): CUDA aligns every field; use repr(C) with explicit padding fields"),
        ));
    }
    if let Some(span) = repr.transparent.or(repr.int.as_ref().map(|i| i.1)) {
        return Err(Error::new(span, format!("{WHAT} needs #[repr(C)] (optionally with align(N))")));
    }
    if !repr.c {
        return Err(Error::new(
            name.span(),
            format!(
                "{WHAT} needs #[repr(C)] (optionally #[repr(C, align(N))]): without it Rust may reorder the fields \
                 and the CUDA struct would not match"
            ),
        ));
    }
    let Options { cuda, krate } = options(input)?;
    let (cuda_name, cuda_span) = match &cuda {
        Some(lit) => (lit.value(), lit.span()),
        None => (name.to_string(), name.span()),
    };
    check_cuda_ident(&cuda_name, cuda_span, "CUDA struct name")?;
    if fields.named.is_empty() {
        return Err(Error::new(fields.span(), format!("{WHAT} needs at least one field")));
    }

    let p = quote!(#krate::params);
    let mut field_infos = Vec::new();
    let mut checks = Vec::new();
    let mut previous: Option<(&syn::Ident, &syn::Type)> = None;
    for field in &fields.named {
        let ident = field.ident.as_ref().expect("named field");
        let ty = &field.ty;
        if let Some(attr) = field.attrs.iter().find(|a| a.path().is_ident("kernel_params")) {
            return Err(Error::new(attr.span(), "kernel_params options go on the struct, not on a field"));
        }
        let field_name = ident.to_string();
        let field_name = field_name.strip_prefix("r#").unwrap_or(&field_name).to_string();
        check_cuda_ident(&field_name, ident.span(), "field name")?;
        let doc = doc_text(&field.attrs);
        // The one place that needs `#ty: DeviceType`, so a field of another type is one error,
        // at the field's type.
        let of = quote_spanned! {ty.span()=> #p::Field::of::<#ty> };
        field_infos.push(quote! {
            #of(#field_name, ::core::mem::offset_of!(#name, #ident), #doc)
        });
        if let Some((prev, prev_ty)) = previous {
            let msg = format!(
                "`{name}` has implicit padding before field `{field_name}`: add an explicit padding field \
                 (e.g. `_pad: [u8; N]`) before it, so that every byte of the struct is a field"
            );
            checks.push(quote_spanned! {ident.span()=>
                const _: () = ::core::assert!(
                    ::core::mem::offset_of!(#name, #ident)
                        == ::core::mem::offset_of!(#name, #prev) + ::core::mem::size_of::<#prev_ty>(),
                    #msg
                );
            });
        }
        previous = Some((ident, ty));
    }
    if let Some((last, last_ty)) = previous {
        let msg = format!(
            "`{name}` has implicit padding after its last field `{last}` (its size is rounded up to its alignment): \
             add an explicit trailing padding field (e.g. `_pad: [u8; N]`), so that every byte of the struct is a field"
        );
        checks.push(quote_spanned! {name.span()=>
            const _: () = ::core::assert!(
                ::core::mem::size_of::<#name>()
                    == ::core::mem::offset_of!(#name, #last) + ::core::mem::size_of::<#last_ty>(),
                #msg
            );
        });
    }
    let doc = doc_text(&input.attrs);

    Ok(quote! {
        const _: () = {
            #(#checks)*

            // SAFETY: `#[repr(C)]` with named fields, checked by the derive; every field is a
            // `DeviceType` (no padding inside) and the assertions above prove there is none between
            // the fields or at the end, so every byte of a value is initialised.
            #[automatically_derived]
            #[allow(unsafe_code)]
            unsafe impl #p::KernelParams for #name {
                const CUDA_NAME: &'static str = #cuda_name;
                const DOC: &'static str = #doc;
                fn fields() -> ::std::vec::Vec<#p::Field> {
                    ::std::vec![#(#field_infos),*]
                }
            }

            // SAFETY: as above.
            #[automatically_derived]
            #[allow(unsafe_code)]
            unsafe impl #p::DeviceType for #name {
                fn cuda_type() -> ::std::string::String {
                    ::std::string::String::from(#cuda_name)
                }
                fn declarations(out: &mut #p::Declarations) {
                    out.declare::<Self>(
                        |out| {
                            for field in <Self as #p::KernelParams>::fields() {
                                field.add_declarations(out);
                            }
                        },
                        <Self as #p::KernelParams>::cuda_declaration,
                    );
                }
            }

            #[automatically_derived]
            impl #p::Pointee for #name {
                fn cuda_type() -> ::std::string::String {
                    ::std::string::String::from(#cuda_name)
                }
                fn declarations(out: &mut #p::Declarations) {
                    <Self as #p::DeviceType>::declarations(out);
                }
            }
        };
    })
}
