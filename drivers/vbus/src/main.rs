//! `ddf-vbus`: the driver behind `/ddf/vbus`. See the library (`ddf_vbus`)
//! for the control file and what its devices read.

use std::process::ExitCode;

use ddf::driver;
use ddf_vbus::VBus;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    driver::run(|_| Ok(VBus::new()))
}
