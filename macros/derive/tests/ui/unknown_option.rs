use tessera_codegen::params::KernelParams;

#[derive(Clone, Copy, KernelParams)]
#[repr(C)]
#[kernel_params(cuda = "Params", name = "P")]
struct Params {
    n: i32,
}

fn main() {}
