//! The wire: frames ([`ddf::ipc`]) and the messages they carry
//! ([`ddf::proto`]), in both directions of both links.
//!
//! A driver sends [`DriverToDdm`] to ddm and ddm sends [`DdmToDriver`] back;
//! `ddmctl` (any local user) sends [`ControlRequest`] and ddm answers
//! [`ControlResponse`]; every link opens with a [`Hello`] each way. Each is
//! decoded by [`decode_exact`] from a frame's header; the frame itself by
//! [`Frame::parse`] after [`Channel::recv`].

use std::cell::RefCell;
use std::fmt::Debug;

use ddf::ipc::{decode_exact, encode_frame, Channel, Frame, IpcError, RecvBuf, FRAME_MAX};
use ddf::proto::{ControlRequest, ControlResponse, DdmToDriver, DriverToDdm, Hello, PROTOCOL_MAGIC, PROTOCOL_VERSION};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A header type of the protocol.
pub trait Message: Serialize + DeserializeOwned + PartialEq + Debug {}

impl<T: Serialize + DeserializeOwned + PartialEq + Debug> Message for T {}

/// Decodes `header` as exactly one `T`, as every reader does; if it decodes,
/// checks the round trip: the value encodes, the encoding decodes to the
/// same value, and encoding is a function of the value (the same bytes
/// again).
pub fn message<T: Message>(header: &[u8]) -> Option<T> {
    let value: T = decode_exact(header).ok()?;
    let bytes = match postcard::to_stdvec(&value) {
        Ok(b) => b,
        Err(e) => panic!("{value:?} was decoded but does not encode: {e}"),
    };
    let again: T = match decode_exact(&bytes) {
        Ok(v) => v,
        Err(e) => panic!("{value:?} encodes to {bytes:?}, which does not decode: {e}"),
    };
    assert_eq!(again, value, "decode(encode(v)) != v for the encoding {bytes:?}");
    assert_eq!(postcard::to_stdvec(&again).ok().as_deref(), Some(&bytes[..]), "{value:?} encodes two ways");
    // The encoding is canonical where the input was shorter or equal: a
    // decoder never makes up bytes.
    assert!(bytes.len() <= header.len(), "{value:?} decoded from {} bytes encodes to {}", header.len(), bytes.len());
    Some(value)
}

/// `ddm_to_driver`: what a driver's runtime decodes from its DDM, and a
/// direct client's calls (`DdmToDriver::Call` on an attached socket).
pub fn ddm_to_driver(data: &[u8]) {
    message::<DdmToDriver>(data);
}

/// `driver_to_ddm`: what ddm decodes from every driver it runs.
pub fn driver_to_ddm(data: &[u8]) {
    message::<DriverToDdm>(data);
}

/// `control_request`: what ddm decodes from any local user on its control
/// socket.
pub fn control_request(data: &[u8]) {
    message::<ControlRequest>(data);
}

/// `control_response`: what `ddmctl` and libDDM clients decode from ddm.
pub fn control_response(data: &[u8]) {
    message::<ControlResponse>(data);
}

/// The two ends of a real `SOCK_SEQPACKET` link, and a receive buffer, made
/// once per fuzzing thread (a buffer is 256 KiB: not one per input).
struct Link {
    near: Channel,
    far: Channel,
    buf: RecvBuf,
}

thread_local! {
    static LINK: RefCell<Option<Link>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's link, making it first if need be.
fn with_link<R>(f: impl FnOnce(&mut Link) -> R) -> R {
    LINK.with(|cell| {
        let mut slot = cell.borrow_mut();
        let link = slot.get_or_insert_with(|| {
            let (near, far) = Channel::pair().unwrap_or_else(|e| panic!("socketpair: {e}"));
            Link { near, far, buf: RecvBuf::default() }
        });
        f(link)
    })
}

/// `hello`: a link's first frame, as [`Channel::handshake`] reads it. The
/// fuzzer's bytes are the peer's whole first datagram, sent over a real
/// socket pair; the handshake must succeed exactly when they are a frame
/// whose header is our magic and version, and fail cleanly otherwise.
pub fn hello(data: &[u8]) {
    let expected = Frame::parse(data, Vec::new()).ok().and_then(|f| message::<Hello>(header_of(data, &f)));
    with_link(|link| {
        if data.is_empty() || data.len() > FRAME_MAX {
            // A zero-length datagram is how a closed peer reads (a handshake
            // that sees one fails as closed, tested in libddf); `send_raw`
            // refuses frames over the limit.
            return;
        }
        if let Err(e) = link.far.send_raw(data, &[], true) {
            panic!("sending {} bytes on an empty socket: {e}", data.len());
        }
        let got = link.near.handshake(&mut link.buf);
        // Take our own Hello off the other end, so the next input starts clean.
        match link.far.try_recv(&mut link.buf) {
            Ok(f) => assert_eq!(f.decode::<Hello>().ok(), Some(Hello::ours()), "the handshake sent something else"),
            Err(e) => panic!("the handshake sent no Hello: {e}"),
        }
        let ours = expected.is_some_and(|h| h.magic == PROTOCOL_MAGIC && h.version == PROTOCOL_VERSION);
        match got {
            Ok(()) => assert!(ours, "handshake accepted {data:?}"),
            Err(IpcError::Version { magic, theirs, .. }) => {
                assert!(!ours, "handshake refused our own hello");
                assert_eq!(expected.map(|h| (h.magic, h.version)), Some((magic, theirs)));
            }
            Err(IpcError::Malformed { .. } | IpcError::Decode(_) | IpcError::Trailing(_)) => {
                assert!(expected.is_none(), "handshake refused a hello that decodes: {data:?}")
            }
            Err(e) => panic!("handshake failed in an unexpected way on {data:?}: {e}"),
        }
    });
}

/// The header bytes of `frame`, parsed from `data`: what lies between the
/// length prefix and the payload.
fn header_of<'a>(data: &'a [u8], frame: &Frame<'_>) -> &'a [u8] {
    data.get(4..data.len() - frame.payload.len()).unwrap_or_default()
}

/// Decodes `frame`'s header as `T` and, if it decodes, checks that the
/// frame made again from the value and the payload reads back the same.
fn reframe<T: Message>(frame: &Frame<'_>) {
    let Ok(value) = frame.decode::<T>() else {
        return;
    };
    let bytes = match encode_frame(&value, frame.payload) {
        Ok(b) => b,
        Err(e) => panic!("{value:?} was decoded but does not encode: {e}"),
    };
    let again = match Frame::parse(&bytes, Vec::new()) {
        Ok(f) => f,
        Err(e) => panic!("the frame of {value:?} does not parse: {e}"),
    };
    assert_eq!(again.payload, frame.payload, "the payload of {value:?} moved");
    assert_eq!(again.decode::<T>().ok().as_ref(), Some(&value), "the frame of {value:?} decodes to something else");
}

/// `frame`: one datagram as a reader receives it ([`Channel::recv`] on a
/// real socket pair, then [`Frame::parse`]), with its header decoded as each
/// message type; what decodes is framed again and must read back the same.
pub fn frame(data: &[u8]) {
    let parsed = Frame::parse(data, Vec::new());
    if let Ok(f) = &parsed {
        assert!(f.payload.len() + 4 <= data.len());
        assert_eq!(f.payload, &data[data.len() - f.payload.len()..], "the payload is not the frame's tail");
    }
    with_link(|link| {
        match link.far.send_raw(data, &[], true) {
            Ok(()) => {}
            Err(IpcError::TooLarge { .. }) if data.len() > FRAME_MAX => return,
            Err(e) => panic!("sending {} bytes on an empty socket: {e}", data.len()),
        }
        match (link.near.try_recv(&mut link.buf), &parsed) {
            (Err(IpcError::Closed), _) => assert!(data.is_empty(), "a frame of {} bytes read as closed", data.len()),
            (Ok(got), Ok(want)) => assert_eq!(got.payload, want.payload),
            (Err(IpcError::Malformed { .. }), Err(IpcError::Malformed { .. })) => {}
            (got, want) => panic!("recv says {got:?}, parse says {want:?} of {data:?}"),
        }
    });
    let Ok(f) = parsed else {
        return;
    };
    message::<Hello>(header_of(data, &f));
    message::<DdmToDriver>(header_of(data, &f));
    message::<DriverToDdm>(header_of(data, &f));
    message::<ControlRequest>(header_of(data, &f));
    message::<ControlResponse>(header_of(data, &f));
    reframe::<Hello>(&f);
    reframe::<DdmToDriver>(&f);
    reframe::<DriverToDdm>(&f);
    reframe::<ControlRequest>(&f);
    reframe::<ControlResponse>(&f);
}
