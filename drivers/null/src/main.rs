//! `ddf-null`: the driver behind `/ddf/null` and `/ddf/zero`.
//!
//! `null`: reads return end of file, writes take everything.
//! `zero`: reads return as many zero bytes as asked, writes take everything.
//! Both are character devices; neither keeps state per handle, so a handle
//! is just the device number.

use std::process::ExitCode;

use ddf::driver::{self, Context, Driver, ReadReply, WriteReply};
use ddf::proto::{DeviceClass, DeviceId, Errno, Handle, OpenFlags};

/// Zero bytes to answer reads of `zero` from (the largest read is one frame).
static ZEROS: [u8; ddf::ipc::PAYLOAD_MAX] = [0; ddf::ipc::PAYLOAD_MAX];

#[derive(Debug, Default)]
struct Null {
    null: DeviceId,
    zero: DeviceId,
}

impl Driver for Null {
    fn init(&mut self, ctx: &mut Context) -> Result<(), Errno> {
        self.null = ctx.add_device("null", DeviceClass::Char, 0)?;
        self.zero = ctx.add_device("zero", DeviceClass::Char, 0)?;
        Ok(())
    }

    fn open(&mut self, _ctx: &mut Context, device: DeviceId, _flags: OpenFlags) -> Result<Handle, Errno> {
        if device == self.null || device == self.zero {
            Ok(Handle(u64::from(device.0)))
        } else {
            Err(Errno::ENXIO)
        }
    }

    fn read(&mut self, _ctx: &mut Context, handle: Handle, _offset: u64, len: u32, reply: ReadReply) {
        if handle == Handle(u64::from(self.zero.0)) {
            reply.data(&ZEROS[..(len as usize).min(ZEROS.len())]);
        } else {
            reply.data(&[]);
        }
    }

    fn write(&mut self, _ctx: &mut Context, _handle: Handle, _offset: u64, data: &[u8], reply: WriteReply) {
        reply.written(data.len() as u32);
    }
}

fn main() -> ExitCode {
    driver::init_logging();
    driver::run(|_| Ok::<_, std::convert::Infallible>(Null::default()))
}
