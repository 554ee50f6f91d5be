use tessera_codegen::params::KernelParams;

#[derive(Clone, Copy, KernelParams)]
#[repr(C)]
struct Params(i32, f32);

fn main() {}
