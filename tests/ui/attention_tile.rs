#[tessera::attention(dtype = bf16, head_dim = 64, heads_q = 8, tile(block_n = 48))]
struct Attention;

fn main() {}
