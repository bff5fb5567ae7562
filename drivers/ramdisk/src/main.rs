//! `ddf-ramdisk`: the driver behind `/ddf/ram0`. See the library
//! (`ddf_ramdisk`) for the parameters and the storage rules.

use std::process::ExitCode;

use ddf::driver;
use ddf_ramdisk::{chain, RamDisk};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    driver::run(|info| RamDisk::from_start(info).map_err(|e| chain(&e)))
}
