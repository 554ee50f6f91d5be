#[tessera::elementwise]
fn sum_to(x: f32) -> f32 {
    let mut acc = 0.0;
    for _ in 0..3 {
        acc = acc + x;
    }
    acc
}

fn main() {}
