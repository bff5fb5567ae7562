//! The virtual bus's decoders ([`ddf_vbus`]): the command lines any writer
//! of `/ddf/vbus/ctl` sends, and the device list its previous incarnation
//! left in the DDM's state store.

use ddf_vbus::command::{describe, parse_line, Command, DEVICES_MAX};
use ddf_vbus::model::{Effect, Model, STATE_MAX};

/// The bus a write is applied to: a few devices already on it, so that
/// removes, duplicates and taken addresses have something to hit.
const BUS: &str = "add vdev0 vendor=1234 device=0001\n\
                   add disk0 address=slot-3 devclass=block size=64K\n\
                   add-many v 3 class=char\n";

/// Checks that a model's saved state restores to the same model, with no
/// line refused, and saves the same again.
fn restores(model: &Model) {
    let saved = model.encode_state();
    match Model::decode_state(&saved, model.limit()) {
        Ok((back, bad)) => {
            assert!(bad.is_empty(), "the saved list has lines its own decoder refuses: {bad:?}");
            assert_eq!(&back, model, "the saved list restores to another bus");
            assert_eq!(back.encode_state(), saved, "a restored bus saves otherwise");
        }
        Err(e) => panic!("the saved list does not restore: {e}"),
    }
    assert_eq!(model.listing().lines().count(), model.len(), "a device takes other than one line of the listing");
}

/// `vbus_ctl`: one `write(2)` to `ctl`, as the driver takes it: UTF-8 text
/// (anything else is refused whole, before parsing), each line parsed, and
/// the write applied all or nothing ([`Model::run`]).
///
/// An `add` line that parses, written again from the device it describes
/// ([`describe`]), parses to the same command. A write that applies gives
/// a bus whose saved state fits the state store and restores to it, and
/// whose changes, replayed, turn the old bus into the new one. A write that
/// does not apply names a line of it.
pub fn ctl(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.split('\n') {
        if let Ok(Some(Command::Add { name, desc })) = parse_line(line) {
            let again = format!("add {}", describe(&name, &desc));
            let back = parse_line(&again);
            assert_eq!(back, Ok(Some(Command::Add { name, desc })), "{line:?} written again as {again:?}");
        }
    }
    let base = match Model::default().run(BUS) {
        Ok((m, _)) => m,
        Err(e) => panic!("the starting bus: {e}"),
    };
    match base.run(text) {
        Ok((next, effects)) => {
            if !effects.is_empty() {
                assert!(next.encode_state().len() <= STATE_MAX, "a write applied past the state store's limit");
            }
            restores(&next);
            let replay: String = effects
                .iter()
                .map(|effect| match effect {
                    Effect::Added(name, desc) => format!("add {}\n", describe(name, desc)),
                    Effect::Removed(name) => format!("remove {name}\n"),
                })
                .collect();
            match base.run(&replay) {
                Ok((replayed, again)) => {
                    assert_eq!(replayed, next, "the changes reported do not make the new bus");
                    assert_eq!(again, effects, "the changes replayed change otherwise");
                }
                Err(e) => panic!("the changes reported, replayed as {replay:?}: {e}"),
            }
        }
        Err(e) => {
            assert!(e.line >= 1 && e.line <= text.split('\n').count(), "error on line {} of {text:?}", e.line);
            let _ = e.to_string();
        }
    }
}

/// `vbus_state`: the saved device list, as a new incarnation restores it
/// ([`Model::decode_state`]) on a bus of the default size. A list that
/// restores (a bad line loses its devices, not the bus) saves as a list
/// that restores to the same bus.
pub fn state(data: &[u8]) {
    let Ok((model, bad)) = Model::decode_state(data, DEVICES_MAX) else {
        return;
    };
    let lines = data.split(|&b| b == b'\n').count();
    for e in &bad {
        assert!(e.line >= 2 && e.line <= lines, "bad line {} of {lines}", e.line);
    }
    restores(&model);
}
