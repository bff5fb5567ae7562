//! The parts of `ddf-keyboard` that stand on their own, for programs other
//! than the driver (the fuzz targets in `fuzz/`): the i8042 controller and
//! its scancode set 1 decoder. The driver itself is the `ddf-keyboard`
//! executable (`src/main.rs`).

pub mod i8042;
