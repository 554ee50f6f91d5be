use tessera_codegen::params::DeviceEnum;

#[derive(Clone, Copy, DeviceEnum)]
#[repr(i32)]
enum Activation {
    None = 0,
    Scaled(f32) = 1,
}

fn main() {}
