use tessera_codegen::params::KernelParams;

#[derive(Clone, Copy, KernelParams)]
#[repr(C)]
struct Params {
    n: i32,
    class: i32,
}

fn main() {}
