//! `ddf-ramdisk`: the driver behind `/ddf/ram0`. See the library
//! (`ddf_ramdisk`) for the parameters and the storage rules.

use std::process::ExitCode;

use ddf::driver;
use ddf_ramdisk::RamDisk;

fn main() -> ExitCode {
    driver::init_logging();
    driver::run(RamDisk::from_start)
}
