//! A user-defined scalar function, translated from Rust by `#[tessera::elementwise]` (crate
//! tessera-macros): its CUDA C++ device function and its signature. It runs as an elementwise
//! kernel of its own ([`MapSpec`](crate::MapSpec)) or, with one input, as a GEMM / LoRA epilogue
//! step ([`Epilogue::user`](crate::Epilogue::user)).

use crate::common::{ElemType, SpecError};

/// Most inputs a user function may take.
pub const MAX_USER_INPUTS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UserFunction {
    /// The Rust function's name (kernel names and the registry show it).
    pub name: &'static str,
    /// The device function's name in `cuda`.
    pub cuda_name: &'static str,
    /// `__device__ float <cuda_name>(float, ...)`: inputs arrive as f32 values already rounded to
    /// their types, the result is returned rounded to `output`. Uses only the prelude's helpers.
    pub cuda: &'static str,
    pub inputs: &'static [ElemType],
    pub output: ElemType,
}

impl UserFunction {
    pub fn validate(&self) -> Result<(), SpecError> {
        let float = |t: &ElemType| ElemType::FLOAT.contains(t);
        if self.inputs.is_empty() || self.inputs.len() > MAX_USER_INPUTS {
            return Err(SpecError::unsupported("function.inputs", self.inputs.len(), format!("1 to {MAX_USER_INPUTS} inputs")));
        }
        if let Some(t) = self.inputs.iter().find(|t| !float(t)) {
            return Err(SpecError::unsupported("function.inputs", t, "f32, f16, bf16"));
        }
        if !float(&self.output) {
            return Err(SpecError::unsupported("function.output", self.output, "f32, f16, bf16"));
        }
        if !self.cuda_name.starts_with("tessera_user_") || !self.cuda.contains(self.cuda_name) {
            return Err(SpecError::unsupported("function.cuda", self.cuda_name, "a device function named tessera_user_<name> defined in `cuda`"));
        }
        Ok(())
    }

    /// As a GEMM / LoRA epilogue step the function maps one f32 value to one value.
    pub fn validate_as_epilogue(&self) -> Result<(), SpecError> {
        self.validate()?;
        if self.inputs.len() != 1 {
            return Err(SpecError::unsupported(
                "epilogue.user",
                format!("{} ({} inputs)", self.name, self.inputs.len()),
                "functions of exactly one input",
            ));
        }
        Ok(())
    }

    /// The CUDA text that makes this function the epilogue step of a GEMM-shaped template
    /// (`tessera::UserEpilogue`, declared in gemm.cuh).
    pub fn epilogue_definition(&self) -> String {
        format!(
            "{}\nnamespace tessera {{\ntemplate <typename T> struct UserEpilogue {{\n    \
             static TESSERA_DEVICE float apply(float x) {{ return {}(x); }}\n}};\n}}\n",
            self.cuda, self.cuda_name
        )
    }
}
