//! `ddf-pci`: the driver behind `/ddf/pci`. See the library (`ddf_pci`) for
//! the parameters, the nodes and their metadata.

use std::process::ExitCode;

use ddf::driver;
use ddf_pci::PciBus;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    driver::run(|info| PciBus::from_start(info).map_err(|e| e.to_string()))
}
