//! tessera-sim: executes PTX on the CPU. (Being written.)
