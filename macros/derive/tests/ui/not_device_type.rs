use tessera_codegen::params::KernelParams;

#[derive(Clone, Copy, KernelParams)]
#[repr(C)]
struct Params {
    len: usize,
    n: i64,
}

fn main() {}
