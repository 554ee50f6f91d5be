//! The kernels a program declared with the tessera macros: every `#[tessera::attention]`,
//! `#[tessera::gemm]`, `#[tessera::lora]` and `#[tessera::elementwise]` item linked into the
//! program registers itself here (at link time, through the `inventory` crate), the way
//! TensorFlow's `tf_export` names API symbols. `tessera list` prints the registry of the CLI.

use tessera_codegen::KernelSpec;

/// One declared kernel.
#[derive(Clone, Copy, Debug)]
pub struct Registration {
    /// The declaring item's name.
    pub name: &'static str,
    /// `module_path!()` where it was declared.
    pub module: &'static str,
    pub spec: KernelSpec,
}

inventory::collect!(Registration);

/// Every registered kernel, sorted by module and name.
pub fn kernels() -> Vec<&'static Registration> {
    let mut all: Vec<&'static Registration> = inventory::iter::<Registration>.into_iter().collect();
    all.sort_by_key(|r| (r.module, r.name));
    all
}
