//! The driver of the ddf-driver(7) tutorial: `/ddf/hello` reads `hello`
//! and then end of file, so `cat /ddf/hello` prints one line and ends.

use std::collections::HashMap;
use std::convert::Infallible;

use ddf::driver::{self, Context, Driver, ReadReply};
use ddf::proto::{DeviceClass, DeviceId, Errno, Handle, OpenFlags};

const TEXT: &[u8] = b"hello\n";

#[derive(Debug, Default)]
struct Hello {
    /// How far each open file has read.
    read: HashMap<Handle, usize>,
    next: u64,
}

impl Driver for Hello {
    fn init(&mut self, ctx: &mut Context) -> Result<(), Errno> {
        ctx.add_device("hello", DeviceClass::Char, 0)?;
        Ok(())
    }

    fn open(&mut self, _: &mut Context, _: DeviceId, _: OpenFlags) -> Result<Handle, Errno> {
        self.next += 1;
        self.read.insert(Handle(self.next), 0);
        Ok(Handle(self.next))
    }

    fn close(&mut self, _: &mut Context, handle: Handle) {
        self.read.remove(&handle);
    }

    fn read(&mut self, _: &mut Context, handle: Handle, _: u64, len: u32, reply: ReadReply) {
        let Some(pos) = self.read.get_mut(&handle) else {
            return reply.error(Errno::EBADF);
        };
        let start = *pos;
        *pos = (start + len as usize).min(TEXT.len());
        // Empty once everything was read: end of file.
        reply.data(&TEXT[start..*pos]);
    }
}

fn main() -> std::process::ExitCode {
    driver::init_logging();
    driver::run(|_| Ok::<_, Infallible>(Hello::default()))
}
