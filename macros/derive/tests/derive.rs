//! The derives as a downstream crate uses them: the default path `::tessera_codegen`, another path
//! through `crate = "..."`, renamed CUDA types, raw identifiers, and crates that deny unsafe code.

#![deny(unsafe_code)]

use tessera_codegen::params::{Declarations, DeviceEnum, DevicePtr, DevicePtrMut, DeviceType, KernelParams};

/// Where a downstream crate might re-export tessera-codegen.
mod reexport {
    pub use tessera_codegen as codegen;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, tessera_codegen::params::DeviceEnum)]
#[repr(u32)]
#[device_enum(crate = "crate::reexport::codegen", cuda = "Layout", prefix = "LAYOUT_")]
enum Layout {
    RowMajor = 0,
    ColMajor = 1,
}

/// A table entry.
#[derive(Clone, Copy, Debug, tessera_codegen::params::KernelParams)]
#[repr(C)]
#[kernel_params(crate = "crate::reexport::codegen", cuda = "entry_t")]
struct Entry {
    data: DevicePtrMut<f32>,
    layout: Layout,
    r#type: i32,
}

#[derive(Clone, Copy, Debug, KernelParams)]
#[repr(C, align(16))]
struct Params {
    entries: DevicePtr<Entry>,
    count: u32,
    _pad: [u8; 4],
}

#[test]
fn derives_resolve_through_any_path() {
    assert_eq!(<Entry as KernelParams>::CUDA_NAME, "entry_t");
    assert_eq!(<Entry as DeviceType>::cuda_type(), "entry_t");
    let names: Vec<&str> = Entry::fields().iter().map(|f| f.name).collect();
    assert_eq!(names, ["data", "layout", "type"]);
    let text = Entry::cuda_declaration();
    assert!(
        text.starts_with(
            "// A table entry.\nstruct alignas(8) entry_t {\n    float* data;\n    Layout layout;\n    int type;\n};\n"
        ),
        "{text}"
    );
    assert!(text.contains("static_assert(TESSERA_OFFSETOF(entry_t, type) == 12, \"entry_t.type: the Rust struct has it at byte 12\");"), "{text}");
    assert_eq!(
        Layout::cuda_declaration(),
        "enum Layout : unsigned int { LAYOUT_ROW_MAJOR = 0u, LAYOUT_COL_MAJOR = 1u };\n"
    );
    assert_eq!(Layout::ColMajor.cuda_name(), "LAYOUT_COL_MAJOR");
}

#[test]
fn declarations_follow_pointers_and_alignment() {
    let decls = Declarations::of::<Params>();
    let heads: Vec<&str> = decls.iter().map(|d| d.lines().find(|l| !l.starts_with("//")).unwrap()).collect();
    assert_eq!(
        heads,
        [
            "enum Layout : unsigned int { LAYOUT_ROW_MAJOR = 0u, LAYOUT_COL_MAJOR = 1u };",
            "struct alignas(8) entry_t {",
            "struct alignas(16) Params {"
        ]
    );
    assert_eq!(std::mem::size_of::<Params>(), 16);
    let p = Params { entries: DevicePtr::new(0x100), count: 3, _pad: [0; 4] };
    assert_eq!(p.as_bytes(), [0, 1, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
}
