//! Keyboard layouts: which character each key types, and back.
//!
//! A [`Layout`] is a table of keys, each with what it types plain, with
//! Shift and with AltGr. Two are built in: [`Layout::Us`] (the US layout
//! every ddf keyboard used so far) and [`Layout::De`] (German QWERTZ, with
//! `ä ö ü ß`, AltGr for `@ € { [ ] } \ ~ |` and the dead keys `^`, `´` and
//! `` ` ``).
//!
//! - [`Decoder`] turns one keyboard's key events into text (UTF-8 bytes),
//!   keeping the state that spans events: Shift, Ctrl, AltGr, Caps Lock,
//!   Num Lock and a pending dead key.
//! - [`Layout::text_to_events`] is its reverse: the key presses that type a
//!   text on that layout (what `ddmctl type` sends to a virtual keyboard),
//!   so that decoding them with the same layout gives the text back.
//!
//! # How keys type
//!
//! - **Shift** (either) selects a key's second symbol; **Caps Lock**
//!   (toggled by each press) inverts Shift for letters only (keys whose
//!   shifted symbol is the upper case of the plain one: `a`/`A`, `ä`/`Ä`,
//!   not `ß`/`?`).
//! - **AltGr** (Right Alt, on layouts that have it: German) selects the
//!   third symbol; Shift does not change it, and a key without one types
//!   nothing. On the US layout Right Alt is a plain Alt.
//! - **Ctrl** (either) turns the character into its ASCII control code, as
//!   a terminal does: letters give 0x01-0x1a (`Ctrl-C` is 0x03),
//!   `@ [ \ ] ^ _` give 0x00 and 0x1b-0x1f, `?` gives DEL (0x7f), Space
//!   gives NUL. Ctrl with any other key gives the plain character.
//! - **Alt** and the Meta keys are tracked but change nothing.
//! - **Num Lock** (toggled by each press, off at first) makes the keypad's
//!   digits and its decimal key type (`.` on US, `,` on German keypads);
//!   the keypad's `/ * - + Enter` always type.
//! - **Dead keys** (German `^`, `´`, and `` ` `` on Shift-`´`) type nothing
//!   themselves; the next character is combined with the accent (`´` then
//!   `e` is `é`), as the Linux console does: a space or the same dead key
//!   again types the accent alone, a character with no accented form types
//!   the accent and then the character, and a second dead key types the
//!   first accent and waits with the second. With Ctrl held a dead key is an
//!   ordinary key typing its accent (so Ctrl-`^` is 0x1e).
//! - Enter gives `\n`, Tab `\t`, Backspace 0x08, Escape 0x1b.
//!
//! A press and an autorepeat type; a release only updates modifiers. Keys
//! with no character (arrows, function keys, ...) and events other than
//! [`EV_KEY`] give nothing.

use super::*;

/// A keyboard layout. See the module documentation. As a driver
/// parameter ([`crate::params`]) it is its [`Layout::name`]: `us` or `de`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// US English (ANSI, 104 keys). The default.
    #[default]
    Us,
    /// German QWERTZ (ISO, 105 keys), with dead keys.
    De,
}

/// What a key types at one level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sym {
    /// Nothing.
    None,
    /// A character.
    Char(char),
    /// A dead key with this accent.
    Dead(char),
}

use Sym::{Char as C, Dead as D, None as N};

/// One key of a layout: (key code, plain, with Shift, with AltGr).
type KeyDef = (u16, Sym, Sym, Sym);

/// Keys every layout shares: control keys and the keypad's operators.
/// They come after the main block, so that [`Layout::text_to_events`]
/// prefers the main block (`+` is Shift-`=` on US, not the keypad's `+`).
const COMMON_KEYS: &[KeyDef] = &[
    (KEY_SPACE, C(' '), C(' '), N),
    (KEY_TAB, C('\t'), C('\t'), N),
    (KEY_ENTER, C('\n'), C('\n'), N),
    (KEY_BACKSPACE, C('\x08'), C('\x08'), N),
    (KEY_ESC, C('\x1b'), C('\x1b'), N),
    (KEY_KPENTER, C('\n'), C('\n'), N),
    (KEY_KPSLASH, C('/'), C('/'), N),
    (KEY_KPASTERISK, C('*'), C('*'), N),
    (KEY_KPMINUS, C('-'), C('-'), N),
    (KEY_KPPLUS, C('+'), C('+'), N),
];

/// The US layout's main block.
const US_KEYS: &[KeyDef] = &[
    (KEY_A, C('a'), C('A'), N),
    (KEY_B, C('b'), C('B'), N),
    (KEY_C, C('c'), C('C'), N),
    (KEY_D, C('d'), C('D'), N),
    (KEY_E, C('e'), C('E'), N),
    (KEY_F, C('f'), C('F'), N),
    (KEY_G, C('g'), C('G'), N),
    (KEY_H, C('h'), C('H'), N),
    (KEY_I, C('i'), C('I'), N),
    (KEY_J, C('j'), C('J'), N),
    (KEY_K, C('k'), C('K'), N),
    (KEY_L, C('l'), C('L'), N),
    (KEY_M, C('m'), C('M'), N),
    (KEY_N, C('n'), C('N'), N),
    (KEY_O, C('o'), C('O'), N),
    (KEY_P, C('p'), C('P'), N),
    (KEY_Q, C('q'), C('Q'), N),
    (KEY_R, C('r'), C('R'), N),
    (KEY_S, C('s'), C('S'), N),
    (KEY_T, C('t'), C('T'), N),
    (KEY_U, C('u'), C('U'), N),
    (KEY_V, C('v'), C('V'), N),
    (KEY_W, C('w'), C('W'), N),
    (KEY_X, C('x'), C('X'), N),
    (KEY_Y, C('y'), C('Y'), N),
    (KEY_Z, C('z'), C('Z'), N),
    (KEY_1, C('1'), C('!'), N),
    (KEY_2, C('2'), C('@'), N),
    (KEY_3, C('3'), C('#'), N),
    (KEY_4, C('4'), C('$'), N),
    (KEY_5, C('5'), C('%'), N),
    (KEY_6, C('6'), C('^'), N),
    (KEY_7, C('7'), C('&'), N),
    (KEY_8, C('8'), C('*'), N),
    (KEY_9, C('9'), C('('), N),
    (KEY_0, C('0'), C(')'), N),
    (KEY_MINUS, C('-'), C('_'), N),
    (KEY_EQUAL, C('='), C('+'), N),
    (KEY_LEFTBRACE, C('['), C('{'), N),
    (KEY_RIGHTBRACE, C(']'), C('}'), N),
    (KEY_SEMICOLON, C(';'), C(':'), N),
    (KEY_APOSTROPHE, C('\''), C('"'), N),
    (KEY_GRAVE, C('`'), C('~'), N),
    (KEY_BACKSLASH, C('\\'), C('|'), N),
    (KEY_COMMA, C(','), C('<'), N),
    (KEY_DOT, C('.'), C('>'), N),
    (KEY_SLASH, C('/'), C('?'), N),
    // Not on a US keyboard, but a 105-key board sends it: `\` as on UK/ISO.
    (KEY_102ND, C('\\'), C('|'), N),
];

/// The German layout's main block (Linux `de`, xkb `de` basic).
const DE_KEYS: &[KeyDef] = &[
    (KEY_A, C('a'), C('A'), N),
    (KEY_B, C('b'), C('B'), N),
    (KEY_C, C('c'), C('C'), N),
    (KEY_D, C('d'), C('D'), N),
    (KEY_E, C('e'), C('E'), C('€')),
    (KEY_F, C('f'), C('F'), N),
    (KEY_G, C('g'), C('G'), N),
    (KEY_H, C('h'), C('H'), N),
    (KEY_I, C('i'), C('I'), N),
    (KEY_J, C('j'), C('J'), N),
    (KEY_K, C('k'), C('K'), N),
    (KEY_L, C('l'), C('L'), N),
    (KEY_M, C('m'), C('M'), C('µ')),
    (KEY_N, C('n'), C('N'), N),
    (KEY_O, C('o'), C('O'), N),
    (KEY_P, C('p'), C('P'), N),
    (KEY_Q, C('q'), C('Q'), C('@')),
    (KEY_R, C('r'), C('R'), N),
    (KEY_S, C('s'), C('S'), N),
    (KEY_T, C('t'), C('T'), N),
    (KEY_U, C('u'), C('U'), N),
    (KEY_V, C('v'), C('V'), N),
    (KEY_W, C('w'), C('W'), N),
    (KEY_X, C('x'), C('X'), N),
    // QWERTZ: Y and Z trade places.
    (KEY_Y, C('z'), C('Z'), N),
    (KEY_Z, C('y'), C('Y'), N),
    (KEY_1, C('1'), C('!'), C('¹')),
    (KEY_2, C('2'), C('"'), C('²')),
    (KEY_3, C('3'), C('§'), C('³')),
    (KEY_4, C('4'), C('$'), N),
    (KEY_5, C('5'), C('%'), N),
    (KEY_6, C('6'), C('&'), N),
    (KEY_7, C('7'), C('/'), C('{')),
    (KEY_8, C('8'), C('('), C('[')),
    (KEY_9, C('9'), C(')'), C(']')),
    (KEY_0, C('0'), C('='), C('}')),
    (KEY_MINUS, C('ß'), C('?'), C('\\')),
    (KEY_EQUAL, D('´'), D('`'), N),
    (KEY_LEFTBRACE, C('ü'), C('Ü'), N),
    (KEY_RIGHTBRACE, C('+'), C('*'), C('~')),
    (KEY_SEMICOLON, C('ö'), C('Ö'), N),
    (KEY_APOSTROPHE, C('ä'), C('Ä'), N),
    (KEY_GRAVE, D('^'), C('°'), N),
    (KEY_BACKSLASH, C('#'), C('\''), N),
    (KEY_COMMA, C(','), C(';'), N),
    (KEY_DOT, C('.'), C(':'), N),
    (KEY_SLASH, C('-'), C('_'), N),
    (KEY_102ND, C('<'), C('>'), C('|')),
];

/// Keypad keys that type only while Num Lock is on (the decimal key is
/// the layout's: see [`Layout::keypad_decimal`]).
const KEYPAD_DIGITS: &[(u16, char)] = &[
    (KEY_KP0, '0'),
    (KEY_KP1, '1'),
    (KEY_KP2, '2'),
    (KEY_KP3, '3'),
    (KEY_KP4, '4'),
    (KEY_KP5, '5'),
    (KEY_KP6, '6'),
    (KEY_KP7, '7'),
    (KEY_KP8, '8'),
    (KEY_KP9, '9'),
];

/// Accented letters a dead key makes: (accent, base, result).
const COMPOSE: &[(char, char, char)] = &[
    ('^', 'a', 'â'),
    ('^', 'e', 'ê'),
    ('^', 'i', 'î'),
    ('^', 'o', 'ô'),
    ('^', 'u', 'û'),
    ('^', 'A', 'Â'),
    ('^', 'E', 'Ê'),
    ('^', 'I', 'Î'),
    ('^', 'O', 'Ô'),
    ('^', 'U', 'Û'),
    ('´', 'a', 'á'),
    ('´', 'e', 'é'),
    ('´', 'i', 'í'),
    ('´', 'o', 'ó'),
    ('´', 'u', 'ú'),
    ('´', 'y', 'ý'),
    ('´', 'A', 'Á'),
    ('´', 'E', 'É'),
    ('´', 'I', 'Í'),
    ('´', 'O', 'Ó'),
    ('´', 'U', 'Ú'),
    ('´', 'Y', 'Ý'),
    ('`', 'a', 'à'),
    ('`', 'e', 'è'),
    ('`', 'i', 'ì'),
    ('`', 'o', 'ò'),
    ('`', 'u', 'ù'),
    ('`', 'A', 'À'),
    ('`', 'E', 'È'),
    ('`', 'I', 'Ì'),
    ('`', 'O', 'Ò'),
    ('`', 'U', 'Ù'),
];

/// The keys of a US (ANSI, 104-key) keyboard: what a virtual keyboard
/// with the US layout says it has (`EVIOCGBIT(EV_KEY)`).
const US_PHYSICAL: &[u16] = &[
    KEY_ESC,
    KEY_1,
    KEY_2,
    KEY_3,
    KEY_4,
    KEY_5,
    KEY_6,
    KEY_7,
    KEY_8,
    KEY_9,
    KEY_0,
    KEY_MINUS,
    KEY_EQUAL,
    KEY_BACKSPACE,
    KEY_TAB,
    KEY_Q,
    KEY_W,
    KEY_E,
    KEY_R,
    KEY_T,
    KEY_Y,
    KEY_U,
    KEY_I,
    KEY_O,
    KEY_P,
    KEY_LEFTBRACE,
    KEY_RIGHTBRACE,
    KEY_ENTER,
    KEY_LEFTCTRL,
    KEY_A,
    KEY_S,
    KEY_D,
    KEY_F,
    KEY_G,
    KEY_H,
    KEY_J,
    KEY_K,
    KEY_L,
    KEY_SEMICOLON,
    KEY_APOSTROPHE,
    KEY_GRAVE,
    KEY_LEFTSHIFT,
    KEY_BACKSLASH,
    KEY_Z,
    KEY_X,
    KEY_C,
    KEY_V,
    KEY_B,
    KEY_N,
    KEY_M,
    KEY_COMMA,
    KEY_DOT,
    KEY_SLASH,
    KEY_RIGHTSHIFT,
    KEY_KPASTERISK,
    KEY_LEFTALT,
    KEY_SPACE,
    KEY_CAPSLOCK,
    KEY_F1,
    KEY_F2,
    KEY_F3,
    KEY_F4,
    KEY_F5,
    KEY_F6,
    KEY_F7,
    KEY_F8,
    KEY_F9,
    KEY_F10,
    KEY_NUMLOCK,
    KEY_SCROLLLOCK,
    KEY_KP7,
    KEY_KP8,
    KEY_KP9,
    KEY_KPMINUS,
    KEY_KP4,
    KEY_KP5,
    KEY_KP6,
    KEY_KPPLUS,
    KEY_KP1,
    KEY_KP2,
    KEY_KP3,
    KEY_KP0,
    KEY_KPDOT,
    KEY_F11,
    KEY_F12,
    KEY_KPENTER,
    KEY_RIGHTCTRL,
    KEY_KPSLASH,
    KEY_SYSRQ,
    KEY_RIGHTALT,
    KEY_HOME,
    KEY_UP,
    KEY_PAGEUP,
    KEY_LEFT,
    KEY_RIGHT,
    KEY_END,
    KEY_DOWN,
    KEY_PAGEDOWN,
    KEY_INSERT,
    KEY_DELETE,
    KEY_PAUSE,
    KEY_LEFTMETA,
    KEY_RIGHTMETA,
    KEY_COMPOSE,
];

impl Layout {
    /// Every built-in layout.
    pub const ALL: [Layout; 2] = [Layout::Us, Layout::De];

    /// The layout a manifest names: `us` or `de`.
    pub fn parse(name: &str) -> Option<Layout> {
        match name {
            "us" => Some(Layout::Us),
            "de" => Some(Layout::De),
            _ => None,
        }
    }

    /// Its manifest name (`us`, `de`).
    pub fn name(self) -> &'static str {
        match self {
            Layout::Us => "us",
            Layout::De => "de",
        }
    }

    /// Its name in a sentence (`US`, `German`).
    pub fn describe(self) -> &'static str {
        match self {
            Layout::Us => "US",
            Layout::De => "German",
        }
    }

    /// Its number in the keyboard ioctl ABI ([`super::keyboard::GET_LAYOUT`]).
    pub fn as_u32(self) -> u32 {
        match self {
            Layout::Us => 0,
            Layout::De => 1,
        }
    }

    /// The layout with ioctl number `n`.
    pub fn from_u32(n: u32) -> Option<Layout> {
        Layout::ALL.into_iter().find(|l| l.as_u32() == n)
    }

    /// The key codes of a keyboard with this layout: 104 keys for US,
    /// 105 (with [`KEY_102ND`]) for German.
    pub fn physical_keys(self) -> Vec<u16> {
        let mut keys = US_PHYSICAL.to_vec();
        if self == Layout::De {
            keys.push(KEY_102ND);
            keys.sort_unstable();
        }
        keys
    }

    fn main_block(self) -> &'static [KeyDef] {
        match self {
            Layout::Us => US_KEYS,
            Layout::De => DE_KEYS,
        }
    }

    /// Every key definition, main block first.
    fn keys(self) -> impl Iterator<Item = &'static KeyDef> {
        self.main_block().iter().chain(COMMON_KEYS)
    }

    fn key(self, code: u16) -> Option<&'static KeyDef> {
        self.keys().find(|k| k.0 == code)
    }

    /// Whether Right Alt is AltGr (a third level) on this layout.
    fn has_altgr(self) -> bool {
        match self {
            Layout::Us => false,
            Layout::De => true,
        }
    }

    /// What the keypad's decimal key types with Num Lock on.
    fn keypad_decimal(self) -> char {
        match self {
            Layout::Us => '.',
            Layout::De => ',',
        }
    }

    /// The key events that type `text` with this layout, Caps Lock off:
    /// for each character a press and a release of its key, each followed
    /// by a `SYN_REPORT`, inside presses and releases of Left Ctrl, Left
    /// Shift and AltGr as it needs them (in that order); an accented letter
    /// is its dead key and then its base letter, a lone accent its dead key
    /// and Space. `\n` is Enter, `\t` Tab, 0x08 Backspace, 0x1b Escape,
    /// and other ASCII control codes are typed with Ctrl as [`Decoder`]
    /// reads them, so that decoding the events with this layout gives
    /// `text` back. Events carry no time stamp. Fails on the first
    /// character the layout cannot type, producing nothing.
    pub fn text_to_events(self, text: &str) -> Result<Vec<InputEvent>, InputError> {
        let mut events = Vec::with_capacity(text.len() * 4);
        for (at, ch) in text.char_indices() {
            let strokes = self.strokes_for(ch).ok_or(InputError::Untypeable { ch, at, layout: self })?;
            for stroke in strokes.iter().flatten() {
                stroke.push_events(&mut events);
            }
        }
        Ok(events)
    }

    /// The one or two strokes that type `ch`.
    fn strokes_for(self, ch: char) -> Option<[Option<Stroke>; 2]> {
        if let Some(s) = self.direct(ch) {
            return Some([Some(s), None]);
        }
        // A lone accent: its dead key, then Space.
        if let Some(dead) = self.dead_key(ch) {
            return Some([Some(dead), self.direct(' ')]);
        }
        // An accented letter: the dead key, then the letter.
        if let Some(&(accent, base, _)) = COMPOSE.iter().find(|(_, _, out)| *out == ch) {
            let dead = self.dead_key(accent)?;
            let base = self.direct(base)?;
            return Some([Some(dead), Some(base)]);
        }
        // Control codes, through Ctrl: 0x01 is Ctrl-a, 0x1c Ctrl-\, 0x00
        // Ctrl-@, 0x7f Ctrl-?.
        let plain = match u8::try_from(ch).ok()? {
            b @ 0x01..=0x1a => char::from(b | 0x60),
            b @ (0x00 | 0x1b..=0x1f) => char::from(b | 0x40),
            0x7f => '?',
            _ => return None,
        };
        let stroke = self.direct(plain).or_else(|| self.dead_key(plain))?;
        Some([Some(Stroke { ctrl: true, ..stroke }), None])
    }

    /// The key and level that type `ch` directly, main block first.
    fn direct(self, ch: char) -> Option<Stroke> {
        self.keys().find_map(|&(code, plain, shift, altgr)| {
            if plain == C(ch) {
                Some(Stroke::new(code, false, false))
            } else if shift == C(ch) {
                Some(Stroke::new(code, true, false))
            } else if altgr == C(ch) && self.has_altgr() {
                Some(Stroke::new(code, false, true))
            } else {
                None
            }
        })
    }

    /// The dead key with accent `accent`.
    fn dead_key(self, accent: char) -> Option<Stroke> {
        self.keys().find_map(|&(code, plain, shift, altgr)| {
            if plain == D(accent) {
                Some(Stroke::new(code, false, false))
            } else if shift == D(accent) {
                Some(Stroke::new(code, true, false))
            } else if altgr == D(accent) && self.has_altgr() {
                Some(Stroke::new(code, false, true))
            } else {
                None
            }
        })
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// One key typed with modifiers.
#[derive(Debug, Clone, Copy)]
struct Stroke {
    key: u16,
    ctrl: bool,
    shift: bool,
    altgr: bool,
}

impl Stroke {
    fn new(key: u16, shift: bool, altgr: bool) -> Stroke {
        Stroke { key, ctrl: false, shift, altgr }
    }

    fn push_events(&self, events: &mut Vec<InputEvent>) {
        let mut tap = |code, action| {
            events.push(InputEvent::key(code, action));
            events.push(InputEvent::syn());
        };
        let mods = [(self.ctrl, KEY_LEFTCTRL), (self.shift, KEY_LEFTSHIFT), (self.altgr, KEY_RIGHTALT)];
        for &(on, key) in &mods {
            if on {
                tap(key, KeyAction::Press);
            }
        }
        tap(self.key, KeyAction::Press);
        tap(self.key, KeyAction::Release);
        for &(on, key) in mods.iter().rev() {
            if on {
                tap(key, KeyAction::Release);
            }
        }
    }
}

/// The control code Ctrl turns `ch` into, as a terminal does: `@`, the
/// letters (either case) and `[ \ ] ^ _` become 0x00-0x1f, `?` becomes DEL
/// (0x7f) and space NUL. Anything else is left alone.
fn with_ctrl(ch: char) -> char {
    match ch {
        'a'..='z' | '@'..='_' => char::from(u8::try_from(ch).unwrap_or(0) & 0x1f),
        '?' => '\x7f',
        ' ' => '\0',
        other => other,
    }
}

/// Turns one keyboard's key events into text with a layout. See the
/// module documentation for what each key does.
///
/// Feed it every event of one keyboard, in order ([`Decoder::feed`]).
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    layout: Layout,
    left_shift: bool,
    right_shift: bool,
    left_ctrl: bool,
    right_ctrl: bool,
    left_alt: bool,
    right_alt: bool,
    caps_lock: bool,
    num_lock: bool,
    /// The accent of a dead key pressed last.
    dead: Option<char>,
}

impl Decoder {
    /// A decoder for `layout` with no key held and both locks off.
    pub fn new(layout: Layout) -> Decoder {
        Decoder { layout, ..Decoder::default() }
    }

    /// A decoder for the US layout.
    pub fn us() -> Decoder {
        Decoder::new(Layout::Us)
    }

    /// Its layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Takes one event; appends what it types (UTF-8) to `out`.
    pub fn feed(&mut self, event: &InputEvent, out: &mut Vec<u8>) {
        let Some((code, action)) = event.key_action() else {
            return;
        };
        let down = action != KeyAction::Release;
        match code {
            KEY_LEFTSHIFT => self.left_shift = down,
            KEY_RIGHTSHIFT => self.right_shift = down,
            KEY_LEFTCTRL => self.left_ctrl = down,
            KEY_RIGHTCTRL => self.right_ctrl = down,
            KEY_LEFTALT => self.left_alt = down,
            KEY_RIGHTALT => self.right_alt = down,
            KEY_CAPSLOCK if action == KeyAction::Press => self.caps_lock = !self.caps_lock,
            KEY_NUMLOCK if action == KeyAction::Press => self.num_lock = !self.num_lock,
            _ if down => self.type_key(code, out),
            _ => {}
        }
    }

    /// Feeds every event; returns what they type.
    pub fn decode(&mut self, events: &[InputEvent]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in events {
            self.feed(e, &mut out);
        }
        out
    }

    fn type_key(&mut self, code: u16, out: &mut Vec<u8>) {
        let sym = match self.layout.key(code) {
            Some(&(_, plain, shift, altgr)) => {
                if self.altgr() {
                    altgr
                } else {
                    let is_letter = match (plain, shift) {
                        (C(p), C(s)) => p.is_alphabetic() && p.to_uppercase().eq([s]),
                        _ => false,
                    };
                    if self.shift() != (is_letter && self.caps_lock) {
                        shift
                    } else {
                        plain
                    }
                }
            }
            None if self.num_lock && code == KEY_KPDOT => C(self.layout.keypad_decimal()),
            None if self.num_lock => match KEYPAD_DIGITS.iter().find(|(k, _)| *k == code) {
                Some(&(_, ch)) => C(ch),
                None => N,
            },
            None => N,
        };
        let ch = match sym {
            N => return,
            // With Ctrl, a dead key is an ordinary key typing its accent.
            D(accent) if self.ctrl() => accent,
            D(accent) => {
                match self.dead.take() {
                    // Twice the same accent: the accent.
                    Some(pending) if pending == accent => push_char(out, accent),
                    // Another accent: the first, and wait with the second.
                    Some(pending) => {
                        push_char(out, pending);
                        self.dead = Some(accent);
                    }
                    None => self.dead = Some(accent),
                }
                return;
            }
            C(ch) => ch,
        };
        let ch = if self.ctrl() { with_ctrl(ch) } else { ch };
        if let Some(accent) = self.dead.take() {
            if ch == ' ' {
                push_char(out, accent);
                return;
            }
            match COMPOSE.iter().find(|(a, base, _)| *a == accent && *base == ch) {
                Some(&(_, _, composed)) => {
                    push_char(out, composed);
                    return;
                }
                None => push_char(out, accent),
            }
        }
        push_char(out, ch);
    }

    /// Whether either Shift is held.
    pub fn shift(&self) -> bool {
        self.left_shift || self.right_shift
    }

    /// Whether either Ctrl is held.
    pub fn ctrl(&self) -> bool {
        self.left_ctrl || self.right_ctrl
    }

    /// Whether an Alt that is not AltGr is held.
    pub fn alt(&self) -> bool {
        self.left_alt || (self.right_alt && !self.layout.has_altgr())
    }

    /// Whether AltGr is held (only on layouts that have it).
    pub fn altgr(&self) -> bool {
        self.right_alt && self.layout.has_altgr()
    }

    /// Whether Caps Lock is on.
    pub fn caps_lock(&self) -> bool {
        self.caps_lock
    }

    /// Whether Num Lock is on.
    pub fn num_lock(&self) -> bool {
        self.num_lock
    }

    /// Sets Caps Lock (for example from a keyboard's LED state at start).
    pub fn set_caps_lock(&mut self, on: bool) {
        self.caps_lock = on;
    }

    /// Sets Num Lock.
    pub fn set_num_lock(&mut self, on: bool) {
        self.num_lock = on;
    }

    /// Sets which modifiers are held from a key state (after events were
    /// lost, so that no modifier stays stuck); a pending dead key is
    /// forgotten.
    pub fn resync(&mut self, down: impl Fn(u16) -> bool) {
        self.left_shift = down(KEY_LEFTSHIFT);
        self.right_shift = down(KEY_RIGHTSHIFT);
        self.left_ctrl = down(KEY_LEFTCTRL);
        self.right_ctrl = down(KEY_RIGHTCTRL);
        self.left_alt = down(KEY_LEFTALT);
        self.right_alt = down(KEY_RIGHTALT);
        self.dead = None;
    }
}

fn push_char(out: &mut Vec<u8>, ch: char) {
    let mut buf = [0u8; 4];
    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn keys(seq: &[(u16, i32)]) -> Vec<InputEvent> {
        seq.iter().map(|&(c, v)| InputEvent::new(EV_KEY, c, v)).collect()
    }

    fn de(text: &str) -> Vec<u8> {
        Decoder::new(Layout::De).decode(&Layout::De.text_to_events(text).unwrap())
    }

    #[test]
    fn names_and_numbers() {
        for l in Layout::ALL {
            assert_eq!(Layout::parse(l.name()), Some(l));
            assert_eq!(Layout::from_u32(l.as_u32()), Some(l));
        }
        assert_eq!(Layout::parse("fr"), None);
        assert_eq!(Layout::from_u32(9), None);
        // A manifest names a layout as `parse` reads it.
        #[derive(serde::Deserialize)]
        struct Params {
            layout: Layout,
        }
        for l in Layout::ALL {
            let p: Params = crate::params::from_params("k", &[("layout".into(), l.name().into())]).unwrap();
            assert_eq!(p.layout, l);
        }
        let e = crate::params::from_params::<Params>("k", &[("layout".into(), "fr".into())]).err().unwrap();
        assert!(e.to_string().contains("layout = \"fr\": unknown variant `fr`, expected `us` or `de`"), "{e}");
        assert_eq!(Layout::De.to_string(), "German");
        assert_eq!(Layout::Us.physical_keys().len(), 104);
        assert_eq!(Layout::De.physical_keys().len(), 105);
    }

    #[test]
    fn german_letters_and_symbols_round_trip() {
        let text = "Grüße aus Köln: Äpfel, Öl & Übermut? yz YZ @ € µ {[]} \\ ~ | <> ° § ² ³ # ' \"\n";
        assert_eq!(String::from_utf8(de(text)).unwrap(), text);
        // QWERTZ: y is the key US keyboards call Z.
        let y = Layout::De.text_to_events("y").unwrap();
        assert_eq!(y[0].key_action(), Some((KEY_Z, KeyAction::Press)));
        // The US layout reads those keys its own way.
        assert_eq!(Decoder::us().decode(&y), b"z");
    }

    #[test]
    fn every_ascii_character_round_trips_on_both_layouts() {
        let all: String = (0u8..0x80).map(char::from).collect();
        for layout in Layout::ALL {
            let events = layout.text_to_events(&all).unwrap();
            assert_eq!(Decoder::new(layout).decode(&events), all.as_bytes(), "{layout}");
        }
    }

    #[test]
    fn dead_keys_compose_as_the_console_does() {
        const P: i32 = KEY_PRESS;
        let mut d = Decoder::new(Layout::De);
        let typed = d.decode(&keys(&[
            (KEY_EQUAL, P), // ´
            (KEY_E, P),     // é
            (KEY_GRAVE, P), // ^
            (KEY_SPACE, P), // ^
            (KEY_LEFTSHIFT, P),
            (KEY_EQUAL, P), // `
            (KEY_A, P),     // À (Shift still held)
            (KEY_LEFTSHIFT, KEY_RELEASE),
            (KEY_GRAVE, P), // ^
            (KEY_X, P),     // ^x: no x with a circumflex
            (KEY_GRAVE, P),
            (KEY_GRAVE, P), // ^ twice: ^
            (KEY_GRAVE, P),
            (KEY_EQUAL, P), // ^ then ´ pending
            (KEY_F1, P),    // no character: still pending
            (KEY_O, P),     // ó
        ]));
        assert_eq!(String::from_utf8(typed).unwrap(), "é^À^x^^ó");
        // With Ctrl a dead key types its accent's control code.
        let ctrl = d.decode(&keys(&[(KEY_LEFTCTRL, P), (KEY_GRAVE, P)]));
        assert_eq!(ctrl, b"\x1e");
        assert_eq!(de("éèêÉ ^ ´ `"), "éèêÉ ^ ´ `".as_bytes());
    }

    #[test]
    fn altgr_caps_lock_and_the_keypad_on_german() {
        const P: i32 = KEY_PRESS;
        let mut d = Decoder::new(Layout::De);
        let typed = d.decode(&keys(&[
            (KEY_RIGHTALT, P),
            (KEY_Q, P), // @
            (KEY_A, P), // nothing at the AltGr level
            (KEY_RIGHTALT, KEY_RELEASE),
            (KEY_CAPSLOCK, P),
            (KEY_APOSTROPHE, P), // Ä
            (KEY_MINUS, P),      // ß: not a letter for Caps Lock
            (KEY_LEFTSHIFT, P),
            (KEY_SEMICOLON, P), // ö (Shift undoes Caps Lock)
            (KEY_LEFTSHIFT, KEY_RELEASE),
            (KEY_NUMLOCK, P),
            (KEY_KPDOT, P), // ,
            (KEY_KP5, P),
        ]));
        assert_eq!(String::from_utf8(typed).unwrap(), "@Äßö,5");
        assert!(!d.alt() && !d.altgr());
        // On US, Right Alt is a plain Alt.
        let mut us = Decoder::us();
        assert_eq!(us.decode(&keys(&[(KEY_RIGHTALT, P), (KEY_Q, P)])), b"q");
        assert!(us.alt() && !us.altgr());
    }

    #[test]
    fn untypeable_characters_name_the_layout() {
        assert_eq!(
            Layout::De.text_to_events("ok ñ"),
            Err(InputError::Untypeable { ch: 'ñ', at: 3, layout: Layout::De })
        );
        let e = Layout::Us.text_to_events("é").unwrap_err();
        assert_eq!(e.to_string(), "'é' (at byte 0) cannot be typed on a US keyboard");
    }

    #[test]
    fn resync_releases_stuck_modifiers() {
        let mut d = Decoder::us();
        d.decode(&keys(&[(KEY_LEFTSHIFT, KEY_PRESS)]));
        assert!(d.shift());
        d.resync(|k| k == KEY_RIGHTCTRL);
        assert!(!d.shift() && d.ctrl());
    }
}
