use tessera_codegen::params::DeviceEnum;

#[derive(Clone, Copy, DeviceEnum)]
enum Activation {
    None = 0,
    Relu = 1,
}

fn main() {}
