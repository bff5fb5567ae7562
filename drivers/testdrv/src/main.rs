//! `ddf-testdrv`: a driver that misbehaves on purpose, for tests.
//!
//! It is not started by default; a test (or a user checking the DDM) loads it
//! with a manifest. Its device `stall` (name set by the `name` parameter)
//! parks every read and never answers it: only a cancel (the reader was
//! signalled) or the close of the handle ends such a read. It shows that one
//! stuck driver holds up nothing else.

use std::collections::HashMap;
use std::process::ExitCode;

use ddf::driver::{self, Context, Driver, ReadReply, WriteReply};
use ddf::proto::{DeviceClass, DeviceId, Errno, Handle, RequestId};

#[derive(Debug, Default)]
struct TestDriver {
    stall: DeviceId,
    next_handle: Handle,
    /// Reads parked forever, by request id, with the handle they belong to.
    parked: HashMap<RequestId, (Handle, ReadReply)>,
}

impl Driver for TestDriver {
    fn init(&mut self, ctx: &mut Context) -> Result<(), Errno> {
        let name = ctx.param("name").unwrap_or("stall").to_owned();
        self.stall = ctx.add_device(&name, DeviceClass::Char, 0)?;
        Ok(())
    }

    fn open(&mut self, _ctx: &mut Context, device: DeviceId, _flags: i32) -> Result<Handle, Errno> {
        if device != self.stall {
            return Err(Errno::ENXIO);
        }
        self.next_handle += 1;
        Ok(self.next_handle)
    }

    fn close(&mut self, _ctx: &mut Context, handle: Handle) {
        let ids: Vec<RequestId> = self
            .parked
            .iter()
            .filter(|(_, (h, _))| *h == handle)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some((_, reply)) = self.parked.remove(&id) {
                reply.error(Errno::EBADF);
            }
        }
    }

    fn read(&mut self, _ctx: &mut Context, handle: Handle, _offset: u64, _len: u32, reply: ReadReply) {
        log::debug!("parking read {} of handle {handle}", reply.id().0);
        self.parked.insert(reply.id(), (handle, reply));
    }

    fn write(&mut self, _ctx: &mut Context, _handle: Handle, _offset: u64, data: &[u8], reply: WriteReply) {
        reply.written(data.len() as u32);
    }

    fn cancel(&mut self, _ctx: &mut Context, id: RequestId) {
        if let Some((_, reply)) = self.parked.remove(&id) {
            reply.error(Errno::EINTR);
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    driver::run(|_| Ok(TestDriver::default()))
}
