use tessera_codegen::params::KernelParams;

#[derive(Clone, Copy, KernelParams)]
struct Params {
    n: i32,
    scale: f32,
}

fn main() {}
