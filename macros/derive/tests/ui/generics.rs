use tessera_codegen::params::{DevicePtr, KernelParams};

#[derive(Clone, Copy, KernelParams)]
#[repr(C)]
struct Params<T: Copy + 'static> {
    x: DevicePtr<T>,
}

fn main() {}
