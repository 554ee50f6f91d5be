use tessera_codegen::params::{DevicePtr, KernelParams};

#[derive(Clone, Copy, KernelParams)]
#[repr(C)]
struct Params {
    n: i32,
    x: DevicePtr<f32>,
}

fn main() {}
