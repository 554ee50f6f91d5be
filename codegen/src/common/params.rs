//! The host/device contract of kernel parameters: one Rust definition per parameter struct, from
//! which the CUDA declaration is generated together with static assertions that make NVRTC reject a
//! Rust/CUDA layout mismatch, naming the field.
//!
//! A kernel takes its arguments as one `#[repr(C)]` struct, copied byte for byte into parameter
//! memory. Writing that struct twice, in Rust and in CUDA, leaves only the total size to be
//! checked; two swapped fields of the same size are a silent wrong answer. Here the Rust struct is
//! the single definition:
//!
//! ```
//! use tessera_codegen::params::{DeviceEnum, DevicePtr, DevicePtrMut, KernelParams};
//!
//! /// What the kernel applies to each output.
//! #[derive(Clone, Copy, Debug, DeviceEnum)]
//! #[repr(i32)]
//! #[device_enum(prefix = "ACT_")]
//! enum Activation {
//!     None = 0,
//!     GeluTanh = 1,
//! }
//!
//! /// Arguments of `scale_kernel`.
//! #[derive(Clone, Copy, Debug, KernelParams)]
//! #[repr(C)]
//! struct ScaleParams {
//!     /// Input, `n` elements.
//!     x: DevicePtr<f32>,
//!     y: DevicePtrMut<f32>,
//!     n: i64,
//!     scale: f32,
//!     activation: Activation,
//! }
//!
//! assert_eq!(
//!     ScaleParams::cuda_declarations(),
//!     "// What the kernel applies to each output.
//! enum : int { ACT_NONE = 0, ACT_GELU_TANH = 1 };
//!
//! // Arguments of `scale_kernel`.
//! struct alignas(8) ScaleParams {
//!     // Input, `n` elements.
//!     const float* x;
//!     float* y;
//!     long long n;
//!     float scale;
//!     int activation;
//! };
//! #ifndef TESSERA_OFFSETOF
//! #if defined(__CUDACC_RTC__)
//! #define TESSERA_OFFSETOF(type, field) __INTADDR__(&(((type*)0)->field))
//! #else
//! #define TESSERA_OFFSETOF(type, field) __builtin_offsetof(type, field)
//! #endif
//! #endif
//! static_assert(sizeof(ScaleParams) == 32, \"ScaleParams: the Rust struct is 32 bytes\");
//! static_assert(alignof(ScaleParams) == 8, \"ScaleParams: the Rust struct is aligned to 8 bytes\");
//! static_assert(TESSERA_OFFSETOF(ScaleParams, x) == 0, \"ScaleParams.x: the Rust struct has it at byte 0\");
//! static_assert(TESSERA_OFFSETOF(ScaleParams, y) == 8, \"ScaleParams.y: the Rust struct has it at byte 8\");
//! static_assert(TESSERA_OFFSETOF(ScaleParams, n) == 16, \"ScaleParams.n: the Rust struct has it at byte 16\");
//! static_assert(TESSERA_OFFSETOF(ScaleParams, scale) == 24, \"ScaleParams.scale: the Rust struct has it at byte 24\");
//! static_assert(TESSERA_OFFSETOF(ScaleParams, activation) == 28, \"ScaleParams.activation: the Rust struct has it at byte 28\");
//! "
//! );
//! let p = ScaleParams {
//!     x: DevicePtr::new(0x1000),
//!     y: DevicePtrMut::new(0x2000),
//!     n: 7,
//!     scale: 0.5,
//!     activation: Activation::GeluTanh,
//! };
//! assert_eq!(p.as_bytes().len(), 32);
//! assert_eq!(&p.as_bytes()[28..], &1i32.to_le_bytes());
//! ```
//!
//! What the pieces are:
//!
//! - [`DeviceType`]: a type that can be a field, with its CUDA spelling; size and alignment come
//!   from Rust. Implemented for `i8`..`u64`, `f32`, `f64`, `half::f16` / `half::bf16` (the
//!   `tessera::f16` / `tessera::bf16` storage types of the prelude, `common/tessera.cuh`), arrays `[T; N]`
//!   (declared `T name[N]`), [`DevicePtr`] / [`DevicePtrMut`], [`TensorMap`], and every derived
//!   [`KernelParams`] struct (nested by value) and [`DeviceEnum`].
//! - [`KernelParams`] (`#[derive(KernelParams)]`, optionally `#[kernel_params(cuda = "Name")]` for
//!   another CUDA name): a `#[repr(C)]` (or `#[repr(C, align(N))]`) struct without implicit padding
//!   (asserted at compile time: the error asks for an explicit padding field), its field table,
//!   [`KernelParams::as_bytes`] for the launch, and [`KernelParams::cuda_declaration`]: the CUDA
//!   struct followed by `static_assert`s on its size, alignment and every field's offset, so that
//!   a CUDA struct that drifted from the Rust one fails NVRTC compilation with `Name.field` in the
//!   message.
//! - [`DeviceEnum`] (`#[derive(DeviceEnum)]`): constants shared with CUDA, as an `enum : int`.
//! - [`Declarations`]: the declarations a struct needs (the structs and enums it nests or points
//!   to), dependencies first, each once.
//!
//! The derives name this crate `::tessera_codegen`; a crate that reaches it under another path
//! says so with `#[kernel_params(crate = "path")]` / `#[device_enum(crate = "path")]`.
//!
//! The CUDA text spells types fully qualified (`tessera::f16`, `tessera::TensorMap`), so it can be
//! placed inside or outside `namespace tessera`, after the prelude (`PRELUDE`, `common/tessera.cuh`) when
//! it uses the 16-bit types and after `common/hopper.cuh` (`Template::Hopper`) when it uses [`TensorMap`].

use std::any::TypeId;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

pub use tessera_derive::{DeviceEnum, KernelParams};

/// A type that can be a field of a [`KernelParams`] struct: its CUDA spelling and the declarations
/// it needs. Its size and alignment are Rust's; the generated `static_assert`s check that CUDA
/// agrees.
///
/// # Safety
///
/// Every value of the type has all its bytes initialised (no padding, at any depth), so that a
/// struct made of such fields can be viewed as bytes.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a field of a kernel parameter struct",
    label = "not a `DeviceType`",
    note = "fields are i8..u64, f32, f64, half::f16/bf16, arrays of them, DevicePtr<T>, DevicePtrMut<T>, \
            TensorMap, or a type that derives KernelParams or DeviceEnum"
)]
pub unsafe trait DeviceType: Copy + 'static {
    /// The CUDA spelling of the type (`"int"`, `"const float*"`, `"AttentionParams"`); for an
    /// array, of its element type.
    fn cuda_type() -> String;

    /// Array extents, outermost first: `[[T; 3]; 2]` is `[2, 3]` (declared `T name[2][3]`); empty
    /// for a type that is not an array.
    fn array_dims() -> Vec<usize> {
        Vec::new()
    }

    /// Appends the declarations this type needs (itself, for a struct or enum, after its own
    /// dependencies), each once.
    fn declarations(out: &mut Declarations) {
        let _ = out;
    }
}

/// A type a [`DevicePtr`] / [`DevicePtrMut`] can point to: every [`DeviceType`] except arrays,
/// and [`Untyped`] (`void`).
#[diagnostic::on_unimplemented(
    message = "a device pointer cannot point to `{Self}`",
    note = "pointees are the scalar field types, device pointers, TensorMap, derived structs and enums, and \
            Untyped (void); point at an array's element type instead of the array"
)]
pub trait Pointee: 'static {
    /// The CUDA spelling of the pointed-to type.
    fn cuda_type() -> String;

    /// The declarations the pointed-to type needs.
    fn declarations(out: &mut Declarations) {
        let _ = out;
    }
}

/// One field of a [`KernelParams`] struct, in declaration order.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Field {
    /// The field's name, the same in Rust and CUDA.
    pub name: &'static str,
    /// The CUDA spelling of its type (of the element type for an array).
    pub cuda_type: String,
    /// Array extents, outermost first; empty when the field is not an array.
    pub array_dims: Vec<usize>,
    /// Byte offset in the struct (`core::mem::offset_of!`).
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
    /// The field's doc comment, without the `///` (empty when it has none).
    pub doc: &'static str,
    /// `DeviceType::declarations` of the field's type.
    declarations: fn(&mut Declarations),
}

/// Everything but the declaration function.
impl PartialEq for Field {
    fn eq(&self, other: &Field) -> bool {
        (self.name, &self.cuda_type, &self.array_dims, self.offset, self.size, self.doc)
            == (other.name, &other.cuda_type, &other.array_dims, other.offset, other.size, other.doc)
    }
}

impl Eq for Field {}

impl Field {
    /// The entry of a field of type `T` at `offset` (what the derive generates per field).
    pub fn of<T: DeviceType>(name: &'static str, offset: usize, doc: &'static str) -> Field {
        Field {
            name,
            cuda_type: T::cuda_type(),
            array_dims: T::array_dims(),
            offset,
            size: std::mem::size_of::<T>(),
            doc,
            declarations: T::declarations,
        }
    }

    /// Adds the declarations the field's type needs (see [`DeviceType::declarations`]).
    pub fn add_declarations(&self, out: &mut Declarations) {
        (self.declarations)(out);
    }

    /// The number of elements: the product of the array extents (1 for a non-array).
    pub fn array_len(&self) -> usize {
        self.array_dims.iter().product()
    }

    /// The CUDA member declaration without the semicolon: `const float* x`, `long long strides[4]`.
    pub fn cuda_declarator(&self) -> String {
        let mut text = format!("{} {}", self.cuda_type, self.name);
        for dim in &self.array_dims {
            text.push_str(&format!("[{dim}]"));
        }
        text
    }
}

/// A kernel parameter struct: `#[repr(C)]`, no implicit padding, every field a [`DeviceType`].
/// Derive it (`#[derive(KernelParams)]`, see the [module documentation](self)); the derive also
/// implements [`DeviceType`] and [`Pointee`], so the struct can be nested by value or pointed to.
///
/// # Safety
///
/// `Self` is `#[repr(C)]`, [`KernelParams::fields`] lists all its fields in declaration order with
/// their true offsets and sizes, and every byte of a value belongs to a field of a [`DeviceType`]
/// (there are no padding bytes), so [`KernelParams::as_bytes`] reads only initialised memory.
pub unsafe trait KernelParams: DeviceType {
    /// The name of the CUDA struct.
    const CUDA_NAME: &'static str;

    /// The struct's doc comment (a comment above the CUDA declaration).
    const DOC: &'static str = "";

    /// The field table, in declaration order.
    fn fields() -> Vec<Field>;

    /// The bytes the kernel receives: the struct as it lies in memory.
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: the trait's contract: every byte of `Self` is an initialised field byte.
        unsafe { std::slice::from_raw_parts((self as *const Self).cast::<u8>(), std::mem::size_of::<Self>()) }
    }

    /// The CUDA declaration of this struct alone (see [`KernelParams::cuda_declarations`] for the
    /// structs and enums it depends on): `struct alignas(A) Name { ... };` with the doc comments
    /// as `//` comments, then `static_assert`s on `sizeof`, `alignof` and the offset of every
    /// field, whose messages (`"Name.field: the Rust struct has it at byte 8"`) name what differs.
    fn cuda_declaration() -> String {
        let name = Self::CUDA_NAME;
        let size = std::mem::size_of::<Self>();
        let align = std::mem::align_of::<Self>();
        let fields = Self::fields();
        let mut text = comment(Self::DOC, "");
        text.push_str(&format!("struct alignas({align}) {name} {{\n"));
        for field in &fields {
            text.push_str(&comment(field.doc, "    "));
            text.push_str(&format!("    {};\n", field.cuda_declarator()));
        }
        text.push_str("};\n");
        text.push_str(OFFSETOF_MACRO);
        text.push_str(&format!(
            "static_assert(sizeof({name}) == {size}, \"{name}: the Rust struct is {size} bytes\");\n"
        ));
        text.push_str(&format!(
            "static_assert(alignof({name}) == {align}, \"{name}: the Rust struct is aligned to {align} bytes\");\n"
        ));
        for field in &fields {
            let (f, offset) = (field.name, field.offset);
            text.push_str(&format!(
                "static_assert(TESSERA_OFFSETOF({name}, {f}) == {offset}, \"{name}.{f}: the Rust struct has it at byte {offset}\");\n"
            ));
        }
        text
    }

    /// The declarations of this struct and of everything it nests or points to, dependencies
    /// first, each once: [`Declarations::of`] as text.
    fn cuda_declarations() -> String {
        Declarations::of::<Self>().to_string()
    }
}

/// Constants shared with CUDA: a fieldless `#[repr(i32)]` / `#[repr(u32)]` enum with explicit
/// discriminants. Derive it (`#[derive(DeviceEnum)]`):
///
/// - `#[device_enum(prefix = "ACT_")]`: each constant is the prefix followed by the variant's name
///   in SCREAMING_SNAKE_CASE (`GeluTanh` -> `ACT_GELU_TANH`; digits do not split words, so `BF16`
///   and `E4M3` stay whole);
/// - `#[device_enum(name = "SWISH")]` on a variant: replaces the SCREAMING_SNAKE_CASE part (the
///   prefix still applies);
/// - `#[device_enum(cuda = "ElemCode")]`: a named CUDA enum (`enum ElemCode : int { ... };`, and
///   fields of this type are declared `ElemCode`); without it the enum is anonymous and fields are
///   declared `int` / `unsigned int`.
///
/// The derive also implements [`DeviceType`] (a field of the enum's type is four bytes holding the
/// discriminant) and [`Pointee`].
pub trait DeviceEnum: DeviceType {
    /// The CUDA enum's name; `None` for an anonymous enum.
    const CUDA_NAME: Option<&'static str>;
    /// `"int"` (`#[repr(i32)]`) or `"unsigned int"` (`#[repr(u32)]`).
    const UNDERLYING: &'static str;
    /// The enum's doc comment (a comment above the CUDA declaration).
    const DOC: &'static str = "";
    /// Every variant's CUDA name and value, in declaration order.
    const VARIANTS: &'static [(&'static str, i64)];

    /// The discriminant.
    fn value(self) -> i64;

    /// The CUDA name of this variant's constant.
    fn cuda_name(self) -> &'static str {
        let value = self.value();
        Self::VARIANTS.iter().find(|(_, v)| *v == value).map(|(name, _)| *name).expect("every variant is listed")
    }

    /// `enum : int { ACT_NONE = 0, ACT_RELU = 1 };` (named: `enum Name : int { ... };`), after
    /// the doc comment.
    fn cuda_declaration() -> String {
        let unsigned = Self::UNDERLYING == "unsigned int";
        let values: Vec<String> = Self::VARIANTS
            .iter()
            .map(|&(name, value)| match value {
                _ if unsigned => format!("{name} = {value}u"),
                // -2147483648 would be the negation of a `long long` literal.
                v if v == i64::from(i32::MIN) => format!("{name} = (-2147483647 - 1)"),
                v => format!("{name} = {v}"),
            })
            .collect();
        let head = match Self::CUDA_NAME {
            Some(name) => format!("enum {name} : {}", Self::UNDERLYING),
            None => format!("enum : {}", Self::UNDERLYING),
        };
        format!("{}{head} {{ {} }};\n", comment(Self::DOC, ""), values.join(", "))
    }
}

/// `TESSERA_OFFSETOF(type, field)`, the `offsetof` of the generated `static_assert`s, defined once
/// (`#ifndef`) at the start of every struct's assertions: NVRTC has neither `<cstddef>` nor
/// `__builtin_offsetof`, but folds EDG's `__INTADDR__`; other compilers (a host build of a
/// template) get `__builtin_offsetof`.
pub const OFFSETOF_MACRO: &str = "\
#ifndef TESSERA_OFFSETOF
#if defined(__CUDACC_RTC__)
#define TESSERA_OFFSETOF(type, field) __INTADDR__(&(((type*)0)->field))
#else
#define TESSERA_OFFSETOF(type, field) __builtin_offsetof(type, field)
#endif
#endif
";

/// `text` as `//` comment lines with `indent`; empty for empty text.
fn comment(text: &str, indent: &str) -> String {
    let mut out = String::new();
    if text.is_empty() {
        return out;
    }
    for line in text.lines() {
        // A trailing backslash would splice the next line into the comment.
        let line = line.trim_end().trim_end_matches('\\').trim_end();
        if line.is_empty() {
            out.push_str(&format!("{indent}//\n"));
        } else {
            out.push_str(&format!("{indent}// {line}\n"));
        }
    }
    out
}

/// The CUDA declarations a set of types needs, in dependency order, each once (by Rust type).
///
/// ```
/// # use tessera_codegen::params::{Declarations, KernelParams};
/// # #[derive(Clone, Copy, KernelParams)] #[repr(C)] struct Inner { n: i32 }
/// # #[derive(Clone, Copy, KernelParams)] #[repr(C)] struct Outer { a: Inner, b: Inner }
/// let decls = Declarations::of::<Outer>();
/// assert_eq!(decls.iter().count(), 2); // Inner, then Outer
/// assert!(decls.is_declared::<Inner>());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Declarations {
    seen: HashSet<TypeId>,
    items: Vec<String>,
}

impl Declarations {
    pub fn new() -> Declarations {
        Declarations::default()
    }

    /// The declarations `T` needs, itself last.
    pub fn of<T: DeviceType>() -> Declarations {
        let mut out = Declarations::new();
        out.add::<T>();
        out
    }

    /// Adds what `T` needs that is not declared yet.
    pub fn add<T: DeviceType>(&mut self) -> &mut Declarations {
        T::declarations(self);
        self
    }

    /// Declares the type `T` once: when it is new, runs `dependencies` (which declare what `T`'s
    /// text refers to) and then appends `text()`; returns whether it was new. `T` counts as
    /// declared from the start, so a struct that points to itself does not recurse. This is what
    /// the derived [`DeviceType::declarations`] call.
    pub fn declare<T: 'static>(
        &mut self,
        dependencies: impl FnOnce(&mut Declarations),
        text: impl FnOnce() -> String,
    ) -> bool {
        if !self.seen.insert(TypeId::of::<T>()) {
            return false;
        }
        dependencies(self);
        self.items.push(text());
        true
    }

    /// Whether `T`'s declaration has been added.
    pub fn is_declared<T: 'static>(&self) -> bool {
        self.seen.contains(&TypeId::of::<T>())
    }

    /// The declarations, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.items.iter().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// All the declarations, separated by blank lines.
impl fmt::Display for Declarations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(item)?;
        }
        Ok(())
    }
}

/// The pointee of an untyped device pointer: `DevicePtr<Untyped>` (the default, `DevicePtr`) is a
/// `const void*`, `DevicePtrMut<Untyped>` a `void*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Untyped {}

impl Pointee for Untyped {
    fn cuda_type() -> String {
        "void".to_string()
    }
}

/// `const T*` (`T* const*` style for a pointee that is itself a pointer).
fn pointer_text(pointee: &str, mutable: bool) -> String {
    match (mutable, pointee.ends_with('*')) {
        (true, _) => format!("{pointee}*"),
        (false, true) => format!("{pointee} const*"),
        (false, false) => format!("const {pointee}*"),
    }
}

macro_rules! device_pointer {
    ($(#[$doc:meta])* $name:ident, mutable = $mutable:literal) => {
        $(#[$doc])*
        #[repr(transparent)]
        pub struct $name<T = Untyped> {
            addr: u64,
            pointee: PhantomData<fn() -> T>,
        }

        impl<T> $name<T> {
            /// The pointer to device address `addr`.
            pub const fn new(addr: u64) -> Self {
                $name { addr, pointee: PhantomData }
            }

            /// The null pointer.
            pub const fn null() -> Self {
                Self::new(0)
            }

            /// The device address.
            pub const fn addr(self) -> u64 {
                self.addr
            }

            pub const fn is_null(self) -> bool {
                self.addr == 0
            }

            /// The same address, seen as pointing to `U`.
            pub const fn cast<U>(self) -> $name<U> {
                $name::new(self.addr)
            }
        }

        impl<T> Clone for $name<T> {
            fn clone(&self) -> Self {
                *self
            }
        }

        impl<T> Copy for $name<T> {}

        impl<T> Default for $name<T> {
            fn default() -> Self {
                Self::null()
            }
        }

        impl<T> PartialEq for $name<T> {
            fn eq(&self, other: &Self) -> bool {
                self.addr == other.addr
            }
        }

        impl<T> Eq for $name<T> {}

        impl<T> Hash for $name<T> {
            fn hash<H: Hasher>(&self, state: &mut H) {
                self.addr.hash(state);
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:#x})", stringify!($name), self.addr)
            }
        }

        // SAFETY: a `u64`.
        unsafe impl<T: Pointee> DeviceType for $name<T> {
            fn cuda_type() -> String {
                pointer_text(&T::cuda_type(), $mutable)
            }

            fn declarations(out: &mut Declarations) {
                T::declarations(out);
            }
        }

        impl<T: Pointee> Pointee for $name<T> {
            fn cuda_type() -> String {
                <Self as DeviceType>::cuda_type()
            }

            fn declarations(out: &mut Declarations) {
                T::declarations(out);
            }
        }
    };
}

device_pointer!(
    /// A device pointer to read-only data, `const T*` in CUDA (`const void*` for the default
    /// [`Untyped`]): a device address (`u64`, `#[repr(transparent)]`) that remembers its pointee.
    DevicePtr,
    mutable = false
);

device_pointer!(
    /// A device pointer the kernel may write through, `T*` in CUDA (`void*` for the default
    /// [`Untyped`]): a device address (`u64`, `#[repr(transparent)]`) that remembers its pointee.
    DevicePtrMut,
    mutable = true
);

impl<T> DevicePtrMut<T> {
    /// The same address as a read-only pointer.
    pub const fn as_const(self) -> DevicePtr<T> {
        DevicePtr::new(self.addr)
    }
}

impl<T> From<DevicePtrMut<T>> for DevicePtr<T> {
    fn from(p: DevicePtrMut<T>) -> DevicePtr<T> {
        p.as_const()
    }
}

/// A CUDA tensor map (`CUtensorMap`: 128 opaque bytes, 64-byte aligned) passed by value in a
/// `__grid_constant__` parameter struct. Its CUDA type is `tessera::TensorMap` from the templates'
/// `common/hopper.cuh` (`Template::Hopper`), so it adds no declaration of its own. A struct holding one
/// is 64-byte aligned, and usually needs explicit padding up to a multiple of 64 after its last
/// field.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorMap {
    pub bytes: [u8; 128],
}

impl TensorMap {
    pub const fn new(bytes: [u8; 128]) -> TensorMap {
        TensorMap { bytes }
    }
}

impl Default for TensorMap {
    fn default() -> TensorMap {
        TensorMap::new([0; 128])
    }
}

impl From<[u8; 128]> for TensorMap {
    fn from(bytes: [u8; 128]) -> TensorMap {
        TensorMap::new(bytes)
    }
}

// SAFETY: 128 bytes, no padding.
unsafe impl DeviceType for TensorMap {
    fn cuda_type() -> String {
        "tessera::TensorMap".to_string()
    }
}

impl Pointee for TensorMap {
    fn cuda_type() -> String {
        <Self as DeviceType>::cuda_type()
    }
}

macro_rules! scalar {
    ($($t:ty => $cuda:literal),* $(,)?) => {
        $(
            // SAFETY: a primitive without padding.
            unsafe impl DeviceType for $t {
                fn cuda_type() -> String {
                    $cuda.to_string()
                }
            }

            impl Pointee for $t {
                fn cuda_type() -> String {
                    $cuda.to_string()
                }
            }
        )*
    };
}

scalar!(
    i8 => "signed char",
    u8 => "unsigned char",
    i16 => "short",
    u16 => "unsigned short",
    i32 => "int",
    u32 => "unsigned int",
    i64 => "long long",
    u64 => "unsigned long long",
    f32 => "float",
    f64 => "double",
    half::f16 => "tessera::f16",
    half::bf16 => "tessera::bf16",
);

// SAFETY: `N` elements without padding between them (the size of `T` is a multiple of its
// alignment) and none inside them.
unsafe impl<T: DeviceType, const N: usize> DeviceType for [T; N] {
    fn cuda_type() -> String {
        T::cuda_type()
    }

    fn array_dims() -> Vec<usize> {
        let mut dims = vec![N];
        dims.extend(T::array_dims());
        dims
    }

    fn declarations(out: &mut Declarations) {
        T::declarations(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};
    use std::mem::{align_of, offset_of, size_of};

    /// What the kernel applies to each output.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, DeviceEnum)]
    #[repr(i32)]
    #[device_enum(prefix = "ACT_")]
    enum Act {
        None = 0,
        Relu = 1,
        GeluTanh = 2,
        #[device_enum(name = "SWISH")]
        Silu = 3,
        Negative = -4,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, DeviceEnum)]
    #[repr(u32)]
    #[device_enum(cuda = "ElemCode", prefix = "ELEM_", crate = "crate")]
    enum Elem {
        F32 = 0,
        F16 = 1,
        BF16 = 2,
        E4M3 = 3,
        Big = 0xffff_fff0,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, DeviceEnum)]
    #[repr(i32)]
    enum Extreme {
        Min = i32::MIN,
        Max = i32::MAX,
    }

    /// Sample parameters.
    /// Second line.
    #[derive(Clone, Copy, Debug, PartialEq, KernelParams)]
    #[repr(C)]
    struct Sample {
        /// Input rows.
        x: DevicePtr<f32>,
        /// Output, written.
        ///
        /// Two paragraphs.
        y: DevicePtrMut<f16>,
        any: DevicePtr,
        out: DevicePtrMut,
        strides: [i64; 3],
        n: i32,
        scale: f32,
        flags: u32,
        act: Act,
        bias: f64,
        bytes: [u8; 6],
        half_scale: bf16,
        tiny: i16,
        small: u16,
        signed_byte: i8,
        last: u8,
        pad2: [u8; 2],
        elem: Elem,
        m: [[f32; 3]; 2],
        tail: i32,
        pp: DevicePtr<DevicePtr<f32>>,
        pmp: DevicePtrMut<DevicePtr<u64>>,
        uu: DevicePtr<u32>,
        ii: DevicePtrMut<i64>,
    }

    /// An entry of a device table.
    #[derive(Clone, Copy, Debug, PartialEq, KernelParams)]
    #[repr(C)]
    #[kernel_params(crate = "crate")]
    struct Entry {
        data: DevicePtrMut<f32>,
        len: i64,
    }

    #[derive(Clone, Copy, Debug, PartialEq, KernelParams)]
    #[repr(C, align(64))]
    #[kernel_params(cuda = "HopperSample")]
    struct Outer {
        map: TensorMap,
        maps: [TensorMap; 2],
        base: Sample,
        table: DevicePtr<Entry>,
        entries: [Entry; 2],
        batch: i32,
        tiles: i32,
        /// Up to a multiple of 64 \
        pad: [u8; 48],
    }

    /// Points to itself: declared once, without recursing.
    #[derive(Clone, Copy, Debug, KernelParams)]
    #[repr(C)]
    struct Node {
        next: DevicePtr<Node>,
        value: f64,
    }

    fn sample() -> Sample {
        Sample {
            x: DevicePtr::new(0x1111_2222_3333_4444),
            y: DevicePtrMut::new(0x10),
            any: DevicePtr::null(),
            out: DevicePtrMut::new(0xabc),
            strides: [1, -2, 3],
            n: -5,
            scale: 1.5,
            flags: 0xdead_beef,
            act: Act::GeluTanh,
            bias: -0.25,
            bytes: [1, 2, 3, 4, 5, 6],
            half_scale: bf16::from_f32(2.0),
            tiny: -3,
            small: 0xfedc,
            signed_byte: -1,
            last: 0x7f,
            pad2: [0; 2],
            elem: Elem::Big,
            m: [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
            tail: 9,
            pp: DevicePtr::new(0x20),
            pmp: DevicePtrMut::new(0x30),
            uu: DevicePtr::new(0x40),
            ii: DevicePtrMut::new(0x50),
        }
    }

    const SAMPLE_DECLARATION: &str = r#"// Sample parameters.
// Second line.
struct alignas(8) Sample {
    // Input rows.
    const float* x;
    // Output, written.
    //
    // Two paragraphs.
    tessera::f16* y;
    const void* any;
    void* out;
    long long strides[3];
    int n;
    float scale;
    unsigned int flags;
    int act;
    double bias;
    unsigned char bytes[6];
    tessera::bf16 half_scale;
    short tiny;
    unsigned short small;
    signed char signed_byte;
    unsigned char last;
    unsigned char pad2[2];
    ElemCode elem;
    float m[2][3];
    int tail;
    const float* const* pp;
    const unsigned long long** pmp;
    const unsigned int* uu;
    long long* ii;
};
#ifndef TESSERA_OFFSETOF
#if defined(__CUDACC_RTC__)
#define TESSERA_OFFSETOF(type, field) __INTADDR__(&(((type*)0)->field))
#else
#define TESSERA_OFFSETOF(type, field) __builtin_offsetof(type, field)
#endif
#endif
static_assert(sizeof(Sample) == 160, "Sample: the Rust struct is 160 bytes");
static_assert(alignof(Sample) == 8, "Sample: the Rust struct is aligned to 8 bytes");
static_assert(TESSERA_OFFSETOF(Sample, x) == 0, "Sample.x: the Rust struct has it at byte 0");
static_assert(TESSERA_OFFSETOF(Sample, y) == 8, "Sample.y: the Rust struct has it at byte 8");
static_assert(TESSERA_OFFSETOF(Sample, any) == 16, "Sample.any: the Rust struct has it at byte 16");
static_assert(TESSERA_OFFSETOF(Sample, out) == 24, "Sample.out: the Rust struct has it at byte 24");
static_assert(TESSERA_OFFSETOF(Sample, strides) == 32, "Sample.strides: the Rust struct has it at byte 32");
static_assert(TESSERA_OFFSETOF(Sample, n) == 56, "Sample.n: the Rust struct has it at byte 56");
static_assert(TESSERA_OFFSETOF(Sample, scale) == 60, "Sample.scale: the Rust struct has it at byte 60");
static_assert(TESSERA_OFFSETOF(Sample, flags) == 64, "Sample.flags: the Rust struct has it at byte 64");
static_assert(TESSERA_OFFSETOF(Sample, act) == 68, "Sample.act: the Rust struct has it at byte 68");
static_assert(TESSERA_OFFSETOF(Sample, bias) == 72, "Sample.bias: the Rust struct has it at byte 72");
static_assert(TESSERA_OFFSETOF(Sample, bytes) == 80, "Sample.bytes: the Rust struct has it at byte 80");
static_assert(TESSERA_OFFSETOF(Sample, half_scale) == 86, "Sample.half_scale: the Rust struct has it at byte 86");
static_assert(TESSERA_OFFSETOF(Sample, tiny) == 88, "Sample.tiny: the Rust struct has it at byte 88");
static_assert(TESSERA_OFFSETOF(Sample, small) == 90, "Sample.small: the Rust struct has it at byte 90");
static_assert(TESSERA_OFFSETOF(Sample, signed_byte) == 92, "Sample.signed_byte: the Rust struct has it at byte 92");
static_assert(TESSERA_OFFSETOF(Sample, last) == 93, "Sample.last: the Rust struct has it at byte 93");
static_assert(TESSERA_OFFSETOF(Sample, pad2) == 94, "Sample.pad2: the Rust struct has it at byte 94");
static_assert(TESSERA_OFFSETOF(Sample, elem) == 96, "Sample.elem: the Rust struct has it at byte 96");
static_assert(TESSERA_OFFSETOF(Sample, m) == 100, "Sample.m: the Rust struct has it at byte 100");
static_assert(TESSERA_OFFSETOF(Sample, tail) == 124, "Sample.tail: the Rust struct has it at byte 124");
static_assert(TESSERA_OFFSETOF(Sample, pp) == 128, "Sample.pp: the Rust struct has it at byte 128");
static_assert(TESSERA_OFFSETOF(Sample, pmp) == 136, "Sample.pmp: the Rust struct has it at byte 136");
static_assert(TESSERA_OFFSETOF(Sample, uu) == 144, "Sample.uu: the Rust struct has it at byte 144");
static_assert(TESSERA_OFFSETOF(Sample, ii) == 152, "Sample.ii: the Rust struct has it at byte 152");
"#;

    const OUTER_DECLARATION: &str = r#"struct alignas(64) HopperSample {
    tessera::TensorMap map;
    tessera::TensorMap maps[2];
    Sample base;
    const Entry* table;
    Entry entries[2];
    int batch;
    int tiles;
    // Up to a multiple of 64
    unsigned char pad[48];
};
#ifndef TESSERA_OFFSETOF
#if defined(__CUDACC_RTC__)
#define TESSERA_OFFSETOF(type, field) __INTADDR__(&(((type*)0)->field))
#else
#define TESSERA_OFFSETOF(type, field) __builtin_offsetof(type, field)
#endif
#endif
static_assert(sizeof(HopperSample) == 640, "HopperSample: the Rust struct is 640 bytes");
static_assert(alignof(HopperSample) == 64, "HopperSample: the Rust struct is aligned to 64 bytes");
static_assert(TESSERA_OFFSETOF(HopperSample, map) == 0, "HopperSample.map: the Rust struct has it at byte 0");
static_assert(TESSERA_OFFSETOF(HopperSample, maps) == 128, "HopperSample.maps: the Rust struct has it at byte 128");
static_assert(TESSERA_OFFSETOF(HopperSample, base) == 384, "HopperSample.base: the Rust struct has it at byte 384");
static_assert(TESSERA_OFFSETOF(HopperSample, table) == 544, "HopperSample.table: the Rust struct has it at byte 544");
static_assert(TESSERA_OFFSETOF(HopperSample, entries) == 552, "HopperSample.entries: the Rust struct has it at byte 552");
static_assert(TESSERA_OFFSETOF(HopperSample, batch) == 584, "HopperSample.batch: the Rust struct has it at byte 584");
static_assert(TESSERA_OFFSETOF(HopperSample, tiles) == 588, "HopperSample.tiles: the Rust struct has it at byte 588");
static_assert(TESSERA_OFFSETOF(HopperSample, pad) == 592, "HopperSample.pad: the Rust struct has it at byte 592");
"#;

    const ACT_DECLARATION: &str = "// What the kernel applies to each output.
enum : int { ACT_NONE = 0, ACT_RELU = 1, ACT_GELU_TANH = 2, ACT_SWISH = 3, ACT_NEGATIVE = -4 };
";

    const ELEM_DECLARATION: &str =
        "enum ElemCode : unsigned int { ELEM_F32 = 0u, ELEM_F16 = 1u, ELEM_BF16 = 2u, ELEM_E4M3 = 3u, ELEM_BIG = 4294967280u };\n";

    #[test]
    fn derived_struct_declares_every_field_type_and_its_offset() {
        assert_eq!(Sample::cuda_declaration(), SAMPLE_DECLARATION);
        assert_eq!(<Sample as KernelParams>::CUDA_NAME, "Sample");
        assert_eq!(<Sample as DeviceType>::cuda_type(), "Sample");
        assert_eq!(Sample::DOC, "Sample parameters.\nSecond line.");
    }

    #[test]
    fn field_table_matches_the_rust_layout() {
        let fields = Sample::fields();
        let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            [
                "x",
                "y",
                "any",
                "out",
                "strides",
                "n",
                "scale",
                "flags",
                "act",
                "bias",
                "bytes",
                "half_scale",
                "tiny",
                "small",
                "signed_byte",
                "last",
                "pad2",
                "elem",
                "m",
                "tail",
                "pp",
                "pmp",
                "uu",
                "ii"
            ]
        );
        let strides = &fields[4];
        assert_eq!(strides.offset, offset_of!(Sample, strides));
        assert_eq!((strides.cuda_type.as_str(), strides.array_dims.as_slice()), ("long long", &[3][..]));
        assert_eq!((strides.size, strides.array_len()), (24, 3));
        let m = &fields[18];
        assert_eq!((m.array_dims.as_slice(), m.array_len(), m.size), (&[2, 3][..], 6, 24));
        assert_eq!(m.cuda_declarator(), "float m[2][3]");
        assert_eq!(fields[0].doc, "Input rows.");
        assert_eq!(fields[1].doc, "Output, written.\n\nTwo paragraphs.");
        assert_eq!(fields[2].doc, "");
        // Contiguous: every byte is a field.
        let mut end = 0;
        for f in &fields {
            assert_eq!(f.offset, end, "{}", f.name);
            end += f.size;
        }
        assert_eq!(end, size_of::<Sample>());
        assert_eq!(size_of::<Sample>(), 160);
    }

    #[test]
    fn nested_struct_tensor_maps_and_explicit_padding() {
        assert_eq!((size_of::<Outer>(), align_of::<Outer>()), (640, 64));
        assert_eq!((size_of::<TensorMap>(), align_of::<TensorMap>()), (128, 64));
        assert_eq!(Outer::cuda_declaration(), OUTER_DECLARATION);
        let fields = Outer::fields();
        assert_eq!(fields[2].offset, offset_of!(Outer, base));
        assert_eq!(fields[2].size, size_of::<Sample>());
        assert_eq!(fields[7].doc, "Up to a multiple of 64 \\");
    }

    #[test]
    fn declarations_come_dependencies_first_each_once() {
        let decls = Declarations::of::<Outer>();
        let items: Vec<&str> = decls.iter().collect();
        assert_eq!(
            items,
            [ACT_DECLARATION, ELEM_DECLARATION, SAMPLE_DECLARATION, &Entry::cuda_declaration(), OUTER_DECLARATION]
        );
        assert!(decls.is_declared::<Entry>() && decls.is_declared::<Act>() && !decls.is_declared::<Node>());
        assert_eq!(Outer::cuda_declarations(), items.join("\n"));
        assert_eq!(decls.to_string(), items.join("\n"));
        // Adding what is already there changes nothing; adding a new type appends it alone.
        let mut more = decls.clone();
        more.add::<Sample>().add::<[Entry; 4]>().add::<DevicePtr<Outer>>();
        assert_eq!(more.to_string(), decls.to_string());
        more.add::<Node>();
        assert_eq!(more.iter().count(), 6);
        assert!(Declarations::new().is_empty());
        assert!(Declarations::of::<DevicePtr<TensorMap>>().is_empty(), "TensorMap is declared by hopper.cuh");
    }

    #[test]
    fn self_referencing_struct_is_declared_once() {
        let text = Node::cuda_declarations();
        assert!(text.starts_with("// Points to itself: declared once, without recursing.\nstruct alignas(8) Node {\n    const Node* next;\n"), "{text}");
        assert_eq!(text.matches("struct alignas").count(), 1);
    }

    #[test]
    fn as_bytes_is_the_struct_in_memory() {
        let s = sample();
        let bytes = s.as_bytes();
        assert_eq!(bytes.len(), 160);
        let at = |offset: usize, n: usize| bytes[offset..offset + n].to_vec();
        assert_eq!(at(0, 8), 0x1111_2222_3333_4444u64.to_le_bytes());
        assert_eq!(at(16, 8), [0; 8]);
        assert_eq!(at(40, 8), (-2i64).to_le_bytes());
        assert_eq!(at(56, 4), (-5i32).to_le_bytes());
        assert_eq!(at(60, 4), 1.5f32.to_le_bytes());
        assert_eq!(at(68, 4), 2i32.to_le_bytes());
        assert_eq!(at(80, 6), [1, 2, 3, 4, 5, 6]);
        assert_eq!(at(86, 2), bf16::from_f32(2.0).to_bits().to_le_bytes());
        assert_eq!(at(92, 2), [0xff, 0x7f]);
        assert_eq!(at(96, 4), 0xffff_fff0u32.to_le_bytes());
        assert_eq!(at(100 + 4 * 4, 4), 5.0f32.to_le_bytes());
        assert_eq!(at(152, 8), 0x50u64.to_le_bytes());

        let outer = Outer {
            map: TensorMap::new([7; 128]),
            maps: [TensorMap::default(), TensorMap::from([9; 128])],
            base: s,
            table: DevicePtr::new(0x60),
            entries: [Entry { data: DevicePtrMut::new(0x70), len: 3 }; 2],
            batch: 2,
            tiles: 11,
            pad: [0; 48],
        };
        let bytes = outer.as_bytes();
        assert_eq!(bytes.len(), 640);
        assert_eq!(&bytes[..128], &[7; 128]);
        assert_eq!(&bytes[256..384], &[9; 128]);
        assert_eq!(&bytes[384..544], s.as_bytes());
        assert_eq!(&bytes[568..576], &0x70u64.to_le_bytes());
        assert_eq!(&bytes[588..592], &11i32.to_le_bytes());
    }

    #[test]
    fn device_enums_declare_their_constants() {
        assert_eq!(Act::cuda_declaration(), ACT_DECLARATION);
        assert_eq!(Elem::cuda_declaration(), ELEM_DECLARATION);
        assert_eq!(Extreme::cuda_declaration(), "enum : int { MIN = (-2147483647 - 1), MAX = 2147483647 };\n");
        assert_eq!(
            Act::VARIANTS,
            &[("ACT_NONE", 0), ("ACT_RELU", 1), ("ACT_GELU_TANH", 2), ("ACT_SWISH", 3), ("ACT_NEGATIVE", -4)]
        );
        assert_eq!((Act::Silu.value(), Act::Silu.cuda_name()), (3, "ACT_SWISH"));
        assert_eq!((Elem::Big.value(), Elem::E4M3.cuda_name()), (0xffff_fff0, "ELEM_E4M3"));
        assert_eq!((<Act as DeviceEnum>::CUDA_NAME, Act::UNDERLYING), (None, "int"));
        assert_eq!((<Elem as DeviceEnum>::CUDA_NAME, Elem::UNDERLYING), (Some("ElemCode"), "unsigned int"));
        assert_eq!(<Act as DeviceType>::cuda_type(), "int");
        assert_eq!(<Elem as DeviceType>::cuda_type(), "ElemCode");
        assert_eq!(<DevicePtr<Elem> as DeviceType>::cuda_type(), "const ElemCode*");
        assert_eq!(Declarations::of::<DevicePtr<Act>>().to_string(), ACT_DECLARATION);
        assert_eq!(Act::DOC, "What the kernel applies to each output.");
    }

    #[test]
    fn device_pointers_are_typed_addresses() {
        assert_eq!((size_of::<DevicePtr<f32>>(), align_of::<DevicePtrMut>()), (8, 8));
        let p: DevicePtrMut<f32> = DevicePtrMut::new(0x1234);
        assert_eq!(p.addr(), 0x1234);
        assert!(!p.is_null() && DevicePtr::<f32>::default().is_null());
        assert_eq!(DevicePtr::<f32>::from(p), DevicePtr::new(0x1234));
        assert_eq!(p.as_const().cast::<Untyped>(), DevicePtr::new(0x1234));
        assert_eq!(format!("{p:?}"), "DevicePtrMut(0x1234)");
        assert_eq!(DevicePtr::<f32>::null(), DevicePtr::<f32>::new(0));
        let types = [
            <DevicePtr as DeviceType>::cuda_type(),
            <DevicePtrMut as DeviceType>::cuda_type(),
            <DevicePtr<f16> as DeviceType>::cuda_type(),
            <DevicePtrMut<DevicePtrMut<f64>> as DeviceType>::cuda_type(),
            <DevicePtr<DevicePtrMut<i8>> as DeviceType>::cuda_type(),
            <DevicePtr<TensorMap> as DeviceType>::cuda_type(),
            <DevicePtr<Sample> as DeviceType>::cuda_type(),
        ];
        assert_eq!(
            types,
            [
                "const void*",
                "void*",
                "const tessera::f16*",
                "double**",
                "signed char* const*",
                "const tessera::TensorMap*",
                "const Sample*"
            ]
        );
    }

    #[test]
    fn comments_cannot_splice_lines() {
        assert_eq!(comment("a \\\n\nb", "  "), "  // a\n  //\n  // b\n");
        assert_eq!(comment("", "  "), "");
    }
}
