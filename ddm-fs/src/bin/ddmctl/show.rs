//! How `ddmctl` shows what the DDM answers: tables for people, JSON for
//! scripts, one line per event of `ddmctl monitor`.

use ddf::ddm::Ddm;
use ddf::proto::{DriverStatus, Happened, MonitorEvent, NodeDetail, NodeInfo};
use serde_json::{json, Value};

/// The event's name in both formats.
pub(super) fn event_name(what: &Happened) -> &'static str {
    match what {
        Happened::DeviceAdded { .. } => "device-added",
        Happened::BusAdded { .. } => "bus-added",
        Happened::Removed { .. } => "removed",
        Happened::Bound { .. } => "bound",
        Happened::Unbound { .. } => "unbound",
        Happened::Started { .. } => "started",
        Happened::Ready { .. } => "ready",
        Happened::Restarted { .. } => "restarted",
        Happened::Died { .. } => "died",
        Happened::Quarantined { .. } => "quarantined",
        Happened::Revived { .. } => "revived",
        Happened::PermChanged { .. } => "perm-changed",
        Happened::Lost { .. } => "lost",
        _ => "other",
    }
}

/// One event as a JSON object: `seq`, `time_ms`, `event`, then its fields.
pub(super) fn event_json(e: &MonitorEvent) -> Value {
    let mut v = json!({ "seq": e.seq, "time_ms": e.unix_ms, "event": event_name(&e.what) });
    let fields = match &e.what {
        Happened::DeviceAdded { path, driver }
        | Happened::BusAdded { path, driver }
        | Happened::Bound { path, driver } => json!({ "path": path, "driver": driver }),
        Happened::Removed { path } => json!({ "path": path }),
        Happened::Unbound { path, driver, why } => json!({ "path": path, "driver": driver, "why": why }),
        Happened::Started { driver, pid } => json!({ "driver": driver, "pid": pid }),
        Happened::Ready { driver } | Happened::Revived { driver } => json!({ "driver": driver }),
        Happened::Restarted { driver, restarts } => json!({ "driver": driver, "restarts": restarts }),
        Happened::Died { driver, how, next } => json!({ "driver": driver, "how": how, "next": next.as_str() }),
        Happened::Quarantined { driver, how } => json!({ "driver": driver, "how": how }),
        Happened::PermChanged { path, mode, uid, gid } => {
            json!({ "path": path, "mode": format!("{mode:04o}"), "uid": uid, "gid": gid })
        }
        Happened::Lost { count } => json!({ "count": count }),
        other => json!({ "detail": format!("{other:?}") }),
    };
    if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), fields) {
        obj.extend(more);
    }
    v
}

/// One event as a line of text: the time (UTC), the event, what it is
/// about, and the details.
pub(super) fn event_text(e: &MonitorEvent) -> String {
    let ms = e.unix_ms % 86_400_000;
    let time = format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let (subject, detail) = match &e.what {
        Happened::DeviceAdded { path, driver } | Happened::BusAdded { path, driver } => {
            (format!("/{path}"), format!("driver {driver}"))
        }
        Happened::Removed { path } => (format!("/{path}"), String::new()),
        Happened::Bound { path, driver } => (format!("/{path}"), format!("to driver {driver}")),
        Happened::Unbound { path, driver, why } => (format!("/{path}"), format!("from driver {driver}: {why}")),
        Happened::Started { driver, pid } => (driver.clone(), pid.map(|p| format!("pid {p}")).unwrap_or_default()),
        Happened::Ready { driver } | Happened::Revived { driver } => (driver.clone(), String::new()),
        Happened::Restarted { driver, restarts } => (driver.clone(), format!("restarts {restarts}")),
        Happened::Died { driver, how, next } => (driver.clone(), format!("{how}; now {}", next.as_str())),
        Happened::Quarantined { driver, how } => {
            (driver.clone(), format!("{how}; down until `ddmctl restart {driver}`"))
        }
        Happened::PermChanged { path, mode, uid, gid } => (format!("/{path}"), format!("{mode:04o} {uid}:{gid}")),
        Happened::Lost { count } => (format!("{count} events"), "lost: this monitor fell behind".to_owned()),
        other => (String::new(), format!("{other:?}")),
    };
    format!("{time} {:<13} {subject:<24} {detail}", event_name(&e.what)).trim_end().to_owned()
}

/// A user's name and number, `root (0)`, or the number alone.
pub(super) fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("{} ({uid})", u.name),
        _ => uid.to_string(),
    }
}

/// A group's name and number, `disk (6)`, or the number alone.
pub(super) fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(g)) => format!("{} ({gid})", g.name),
        _ => gid.to_string(),
    }
}

/// `-rw-r-----` for a node (`d` for a bus).
pub(super) fn mode_string(mode: u32, bus: bool) -> String {
    let mut s = String::from(if bus { "d" } else { "-" });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// `ddmctl node --json`: the node as `tree --json` shows it, with the rest
/// of its story beside it.
pub(super) fn node_json(d: &NodeDetail) -> Value {
    let mut v = serde_json::to_value(&d.node).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("kind".into(), json!(if d.node.class.is_some() { "device" } else { "bus" }));
        let owner = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(d.node.uid)).ok().flatten();
        let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(d.node.gid)).ok().flatten();
        obj.insert("owner".into(), json!(owner.map(|u| u.name)));
        obj.insert("group".into(), json!(group.map(|g| g.name)));
        obj.insert("acl".into(), json!(d.acl));
        obj.insert("bus_driver".into(), json!(d.bus_driver));
        obj.insert("unbound".into(), json!(d.unbound));
        obj.insert("restarts".into(), json!(d.restarts));
        obj.insert("last_exit".into(), json!(d.last_exit));
        let ids: serde_json::Map<String, Value> = d.node.meta.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        obj.insert("ids".into(), Value::Object(ids));
    }
    v
}

/// `ddmctl node`: one `key  value` line per fact, as `udevadm info` lists a
/// device.
pub(super) fn print_node(d: &NodeDetail) {
    let n = &d.node;
    let dash = |v: Option<String>| v.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into());
    let mut lines: Vec<(&str, String)> = vec![
        ("path", format!("/{}", n.path)),
        ("kind", if n.class.is_some() { "device".into() } else { "bus".into() }),
    ];
    if let Some(c) = n.class {
        lines.push(("class", c.as_str().into()));
        lines.push(("size", n.size.to_string()));
    }
    lines.push(("driver", dash(n.driver.clone())));
    lines.push(("pid", dash(n.pid.map(|p| p.to_string()))));
    lines.push(("state", dash(n.state_text.clone())));
    lines.push(("restarts", dash(d.restarts.map(|r| r.to_string()))));
    lines.push(("last exit", dash(d.last_exit.clone())));
    lines.push(("bus", dash(n.bus.clone())));
    lines.push(("address", dash(n.address.clone())));
    lines.push(("bus driver", dash(d.bus_driver.clone())));
    for (k, v) in &n.meta {
        lines.push((k.as_str(), v.clone()));
    }
    lines.push(("owner", user_name(n.uid)));
    lines.push(("group", group_name(n.gid)));
    lines.push(("mode", format!("{:04o} ({})", n.mode, mode_string(n.mode, n.class.is_none()))));
    lines.push(("acl", dash(d.acl.clone())));
    lines.push(("unbound", dash(d.unbound.clone())));
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in lines {
        println!("{k:<width$}  {v}");
    }
}

pub(super) fn print_json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("ddmctl: cannot print JSON: {e}"),
    }
}

pub(super) fn print_tree(nodes: &[NodeInfo]) {
    for n in nodes {
        let depth = if n.path.is_empty() { 0 } else { n.path.matches('/').count() + 1 };
        let name = if n.path.is_empty() {
            "/ (null bus)".to_owned()
        } else {
            let leaf = n.path.rsplit('/').next().unwrap_or(&n.path);
            match n.class {
                None => format!("{leaf}/"),
                Some(_) => leaf.to_owned(),
            }
        };
        let indent = "  ".repeat(depth);
        let perm = format!("{:04o} {}:{}", n.mode, n.uid, n.gid);
        match n.class {
            None => println!("{indent}{name:<24} bus    {perm}"),
            Some(class) => {
                let pid = n.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
                let state = n.state.map(|s| s.as_str()).unwrap_or("-");
                let driver = n.driver.as_deref().unwrap_or("-");
                println!("{indent}{name:<24} {:<6} {perm}  driver {driver} pid {pid} {state}", class.as_str());
            }
        }
    }
}

/// A node path below the mount: accepts `/ddf/x`, `/x` or `x`.
pub(super) fn strip_mount(ddm: &mut Ddm, path: &str) -> String {
    if let Ok(info) = ddm.info() {
        if let Some(rest) = path.strip_prefix(&info.mountpoint) {
            return rest.trim_matches('/').to_owned();
        }
    }
    path.trim_matches('/').to_owned()
}

pub(super) fn print_found(nodes: &[NodeInfo]) {
    for n in nodes {
        let class = n.class.map(|c| c.as_str()).unwrap_or("bus");
        let driver = n.driver.as_deref().unwrap_or("-");
        let state = n.state_text.as_deref().unwrap_or("-");
        let ids: Vec<String> = n
            .meta
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "vendor" | "device" | "class"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("/{:<28} {:<6} {:<10} {:<10} {}", n.path, class, driver, state, ids.join(" "));
    }
}

pub(super) fn print_status(drivers: &[DriverStatus]) {
    println!(
        "{:<12} {:>8} {:<10} {:>10} {:>8} {:>8}  DEVICES",
        "DRIVER", "PID", "STATE", "REQUESTS", "ERRORS", "RESTARTS"
    );
    for d in drivers {
        let pid = d.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{:<12} {:>8} {:<10} {:>10} {:>8} {:>8}  {}",
            d.name,
            pid,
            d.state.as_str(),
            d.requests,
            d.errors,
            d.restarts,
            // A bus of thousands of devices: the first few and how many.
            ddm_fs::core::paths_and_count(&d.devices, d.device_count)
        );
        if !d.counters.is_empty() {
            let c: Vec<String> = d.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("{:<12} counters: {}", "", c.join(" "));
        }
        if d.state == ddf::proto::DriverState::Failed {
            let next = match d.next_try_ms {
                Some(ms) => format!("tried again in {:.1} s", ms as f64 / 1000.0),
                None => "down until `ddmctl restart`".to_owned(),
            };
            println!("{:<12} quarantined ({} in a row): {next}", "", d.quarantines.max(1));
        }
        if d.violations > 0 {
            let last = d.last_exit.as_deref().and_then(|e| e.strip_prefix("sandbox violation: "));
            let last = last.map(|l| format!(", the last: {l}")).unwrap_or_default();
            println!("{:<12} sandbox violations: {}{last}", "", d.violations);
        }
        if let Some(dma) = &d.dma {
            let size = ddf::params::Size;
            println!(
                "{:<12} dma: {} in {} segments of {}, {}",
                "",
                size(dma.bytes),
                dma.segments,
                size(dma.page_size),
                if dma.pinned { "pinned" } else { "locked, not pinned" }
            );
        }
    }
}
