#[tessera::elementwise]
fn scale(x: f32, n: i32) -> f32 {
    x * 2.0
}

fn main() {}
