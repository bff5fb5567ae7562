//! `ddf-pci`: the driver behind `/ddf/pci`. See the library (`ddf_pci`) for
//! the parameters, the nodes and their metadata.

use std::process::ExitCode;

use ddf::driver;
use ddf_pci::PciBus;

fn main() -> ExitCode {
    driver::init_logging();
    driver::run(PciBus::from_start)
}
