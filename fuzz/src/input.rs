//! The keyboard's decoders: evdev records ([`ddf::input`], what
//! `/dev/input/event*` and a raw-mode reader give) and i8042 scancode set 1
//! streams ([`ddf_keyboard::i8042`], what the controller's data port gives).

use ddf::input::evdev::looks_like_keyboard;
use ddf::input::evio::{AbsInfo, InputId, InputMask, Request};
use ddf::input::keyboard::{Mode, Stats};
use ddf::input::{text_to_events, Decoder, InputError, InputEvent, KeyAction, Layout, EVENT_SIZE, EV_KEY};
use ddf::io::PortSpace;
use ddf_keyboard::i8042::{EmulatedI8042, Set1Decoder, EMULATED_QUEUE_MAX, I8042};

/// The most bytes of an input that [`evdev`] also types as text.
const TEXT_MAX: usize = 256;

/// Checks that the text `typed` by a [`Decoder`] of `layout` is what that
/// layout can type: UTF-8 (ASCII for the US layout), and
/// [`Layout::text_to_events`] of it decodes to it again.
fn types_back(layout: Layout, typed: &[u8]) {
    let Ok(text) = std::str::from_utf8(typed) else {
        panic!("the {layout:?} decoder typed bytes that are not UTF-8: {typed:?}");
    };
    assert!(layout != Layout::Us || text.is_ascii(), "the US decoder typed {text:?}, beyond ASCII");
    match layout.text_to_events(text) {
        Ok(events) => {
            assert_eq!(Decoder::new(layout).decode(&events), typed, "{layout:?}: {text:?} typed again types otherwise")
        }
        Err(e) => panic!("the {layout:?} decoder typed {text:?}, which text_to_events cannot type: {e}"),
    }
}

/// `evdev`: a byte stream of `struct input_event` records, as read(2) of an
/// event device gives it (and a raw-mode reader of `/ddf/keyboard0`, and a
/// virtual keyboard's writer, send it).
///
/// Whole records decode and encode back to the same bytes; a partial record
/// is refused. The text a US and a German decoder make of the events types
/// back to itself, and any text typed is decoded back to that text. The
/// ioctl data (modes, loss counters, an evdev node's ioctl numbers and
/// structures) and the capability bitmaps decode without fault, and the
/// structures encode back.
pub fn evdev(data: &[u8]) {
    let whole = &data[..data.len() - data.len() % EVENT_SIZE];
    let events = match InputEvent::parse_records(whole) {
        Ok(ev) => ev,
        Err(e) => panic!("{} bytes of whole records refused: {e}", whole.len()),
    };
    assert_eq!(events.len(), whole.len() / EVENT_SIZE);
    assert_eq!(InputEvent::encode_records(&events), whole, "records do not encode back to their bytes");
    if whole.len() != data.len() {
        assert_eq!(InputEvent::parse_records(data), Err(InputError::PartialRecord { len: data.len() }));
    }
    for ev in &events {
        match ev.key_action() {
            Some((code, action)) => {
                assert_eq!((ev.ev_type, code, action.value()), (EV_KEY, ev.code, ev.value));
                assert_eq!(InputEvent::key(code, action).key_action(), Some((code, action)));
            }
            None => assert!(ev.ev_type != EV_KEY || KeyAction::from_value(ev.value).is_none()),
        }
    }
    for layout in [Layout::Us, Layout::De] {
        types_back(layout, &Decoder::new(layout).decode(&events));
    }

    // The first bytes as text to type (a few hundred: each character is
    // eight events or more): ASCII types and decodes back to itself;
    // anything else is refused at its first character beyond.
    let prefix = &data[..data.len().min(TEXT_MAX)];
    if let Ok(text) = std::str::from_utf8(prefix) {
        match text_to_events(text) {
            Ok(events) => {
                assert!(text.is_ascii(), "text_to_events typed {text:?}");
                assert_eq!(Decoder::us().decode(&events), prefix, "{text:?} typed decodes otherwise");
            }
            Err(InputError::Untypeable { ch, at, .. }) => {
                assert!(!ch.is_ascii(), "ASCII {ch:?} refused");
                assert!(text[..at].is_ascii() && text[at..].starts_with(ch), "{ch:?} is not at {at}");
            }
            Err(e) => panic!("text_to_events: {e}"),
        }
    }

    for chunk in data.chunks_exact(Stats::SIZE) {
        let Ok(bytes) = <&[u8; Stats::SIZE]>::try_from(chunk) else {
            continue;
        };
        let stats = Stats::from_bytes(bytes);
        assert_eq!(&stats.to_bytes(), bytes, "loss counters do not encode back");
    }
    for word in data.chunks_exact(4) {
        let value = u32::from_ne_bytes([word[0], word[1], word[2], word[3]]);
        if let Some(mode) = Mode::from_u32(value) {
            assert_eq!(mode.as_u32(), value);
        }
    }
    let split = data.len().min(4);
    let _ = looks_like_keyboard(&data[..split], &data[split..]);

    // What a client of an evdev node (/ddf/input/eventN) sends: ioctl
    // numbers, matched as the kernel does, and their structures.
    for word in data.chunks_exact(4) {
        let _ = Request::decode(u32::from_ne_bytes([word[0], word[1], word[2], word[3]]));
    }
    for chunk in data.chunks_exact(InputId::SIZE) {
        if let Ok(bytes) = <&[u8; InputId::SIZE]>::try_from(chunk) {
            assert_eq!(&InputId::from_bytes(bytes).to_bytes(), bytes, "an input id does not encode back");
        }
    }
    for chunk in data.chunks(AbsInfo::SIZE) {
        let info = AbsInfo::from_bytes(chunk);
        if chunk.len() == AbsInfo::SIZE {
            assert_eq!(&info.to_bytes()[..], chunk, "an axis does not encode back");
        }
    }
    for chunk in data.chunks(InputMask::SIZE) {
        let _ = InputMask::from_bytes(chunk);
    }
}

/// `i8042`: the bytes a PS/2 keyboard sends, as the controller's data port
/// gives them.
///
/// The set-1 decoder reports a key state that holds together (a press of
/// a key that is up, a repeat or release of a key that is down, key codes
/// below 128); the driver's whole path, the emulated controller on the
/// emulated port space polled by [`I8042::poll`], gives the same events in
/// polls of at most 64 bytes; and the text they type types back.
pub fn i8042(data: &[u8]) {
    // The emulated controller holds at most this much (the rest is refused,
    // as its own tests show).
    let data = &data[..data.len().min(EMULATED_QUEUE_MAX)];
    let mut decoder = Set1Decoder::new();
    let mut down = [false; 128];
    let mut events = Vec::new();
    for &byte in data {
        let Some(ev) = decoder.feed(byte) else {
            continue;
        };
        let Some((code, action)) = ev.key_action() else {
            panic!("the set-1 decoder made {ev:?}, not a key event");
        };
        assert_eq!((ev.sec, ev.usec), (0, 0), "the decoder stamps events");
        let Some(held) = down.get_mut(usize::from(code)).filter(|_| code != 0) else {
            panic!("the set-1 decoder made key code {code}");
        };
        match action {
            KeyAction::Press => assert!(!*held, "press of key {code}, which is down"),
            KeyAction::Repeat | KeyAction::Release => assert!(*held, "{action:?} of key {code}, which is up"),
        }
        *held = action != KeyAction::Release;
        events.push(ev);
    }

    let mut space = PortSpace::new();
    let keyboard = match EmulatedI8042::install(&mut space) {
        Ok(k) => k,
        Err(e) => panic!("installing the emulated controller: {e}"),
    };
    let pushed = keyboard.lock().map(|mut k| k.push(data)).unwrap_or_default();
    assert_eq!(pushed, data.len(), "the emulated controller refused bytes");
    let mut controller = match I8042::probe(&mut space) {
        Ok(c) => c,
        Err(e) => panic!("the emulated controller does not answer: {e}"),
    };
    let mut polled = Vec::new();
    let mut taken = 0;
    loop {
        match controller.poll(&mut polled) {
            Ok(0) => break,
            Ok(n) => {
                assert!(n <= 64, "one poll took {n} bytes");
                taken += n;
            }
            Err(e) => panic!("polling the emulated controller: {e}"),
        }
    }
    assert_eq!(taken, data.len(), "the poller did not drain the controller");
    let unstamped: Vec<InputEvent> = polled.iter().map(|e| InputEvent { sec: 0, usec: 0, ..*e }).collect();
    assert_eq!(unstamped, events, "the poller decodes otherwise than the decoder");

    types_back(Layout::Us, &Decoder::us().decode(&events));
}
