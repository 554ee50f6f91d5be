//! Derives for the host/device contract of Tessera kernels.
//!
//! Use them through `tessera_codegen::params`, which re-exports each derive next to the trait it
//! implements (`KernelParams`, `DeviceEnum`) and documents both. The expansions name items of
//! tessera-codegen by the path `::tessera_codegen` unless `crate = "path"` says otherwise.
//!
//! - `#[derive(KernelParams)]` on a `#[repr(C)]` (optionally `align(N)`) struct with named fields
//!   whose types are all `DeviceType`s. Options: `#[kernel_params(cuda = "Name")]` (the CUDA
//!   struct's name; default the Rust name) and `#[kernel_params(crate = "path")]`. Field doc
//!   comments become comments in the CUDA declaration. The expansion asserts at compile time that
//!   the struct has no implicit padding (every byte is a field, so viewing it as bytes is sound).
//! - `#[derive(DeviceEnum)]` on a fieldless `#[repr(i32)]` / `#[repr(u32)]` enum whose variants all
//!   have explicit discriminants. Options: `#[device_enum(prefix = "ACT_")]`,
//!   `#[device_enum(cuda = "Name")]` (a named CUDA enum; default anonymous),
//!   `#[device_enum(crate = "path")]`, and per variant `#[device_enum(name = "SUFFIX")]` (replaces
//!   the SCREAMING_SNAKE_CASE of the variant's name; the prefix still applies).

mod attrs;
mod device_enum;
mod kernel_params;
mod tune_shape;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

/// Implements `KernelParams` (and `DeviceType`, `Pointee`) for a `#[repr(C)]` struct. See
/// `tessera_codegen::params::KernelParams`.
#[proc_macro_derive(KernelParams, attributes(kernel_params))]
pub fn derive_kernel_params(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    kernel_params::expand(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Implements `DeviceEnum` (and `DeviceType`, `Pointee`) for a fieldless `#[repr(i32)]` or
/// `#[repr(u32)]` enum. See `tessera_codegen::params::DeviceEnum`.
#[proc_macro_derive(DeviceEnum, attributes(device_enum))]
pub fn derive_device_enum(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    device_enum::expand(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Implements `TuneShape` for a struct of bucketed `usize` dimensions. See
/// `tessera_runtime::tuning::TuneShape`.
#[proc_macro_derive(TuneShape, attributes(tune_shape, bucket))]
pub fn derive_tune_shape(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    tune_shape::expand(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}
