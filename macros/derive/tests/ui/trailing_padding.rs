use tessera_codegen::params::{DevicePtr, KernelParams};

#[derive(Clone, Copy, KernelParams)]
#[repr(C)]
struct Params {
    x: DevicePtr<f32>,
    n: i32,
}

fn main() {}
