//! `ddf-vbus`: the driver behind `/ddf/vbus`. See the library (`ddf_vbus`)
//! for the control file and what its devices read.

use std::process::ExitCode;

use ddf::driver;
use ddf_vbus::{Params, VBus};

fn main() -> ExitCode {
    driver::init_logging();
    driver::run(|info| Params::from_start(info).map(VBus::with_params))
}
