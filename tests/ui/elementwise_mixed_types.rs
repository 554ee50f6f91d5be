#[tessera::elementwise]
fn mixed(x: f32, y: tessera::half::f16) -> f32 {
    x + y
}

fn main() {}
