use tessera_codegen::params::{DevicePtr, KernelParams};

#[derive(Clone, Copy, KernelParams)]
#[repr(C)]
struct Params {
    rows: DevicePtr<[f32; 4]>,
}

fn main() {}
