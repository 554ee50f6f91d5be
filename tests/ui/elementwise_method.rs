#[tessera::elementwise]
fn wave(x: f32) -> f32 {
    x.sin()
}

fn main() {}
