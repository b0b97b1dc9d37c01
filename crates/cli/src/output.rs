//! Rendering results as tables or JSON.

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde::Serialize;
use shippy_proto::{consignment::v1 as consignment, user::v1 as user, vessel::v1 as vessel};

use crate::args::Output;

/// A consignment as printed.
#[derive(Debug, Serialize)]
pub struct ConsignmentView {
    id: String,
    description: String,
    weight: i32,
    vessel_id: String,
    containers: Vec<ContainerView>,
}

#[derive(Debug, Serialize)]
struct ContainerView {
    id: String,
    customer_id: String,
    origin: String,
    user_id: String,
}

impl From<consignment::Consignment> for ConsignmentView {
    fn from(c: consignment::Consignment) -> Self {
        Self {
            id: c.id,
            description: c.description,
            weight: c.weight,
            vessel_id: c.vessel_id,
            containers: c
                .containers
                .into_iter()
                .map(|k| ContainerView {
                    id: k.id,
                    customer_id: k.customer_id,
                    origin: k.origin,
                    user_id: k.user_id,
                })
                .collect(),
        }
    }
}

/// A vessel as printed.
#[derive(Debug, Serialize)]
pub struct VesselView {
    id: String,
    name: String,
    capacity: i32,
    max_weight: i32,
    available: bool,
    owner_id: String,
}

impl From<vessel::Vessel> for VesselView {
    fn from(v: vessel::Vessel) -> Self {
        Self {
            id: v.id,
            name: v.name,
            capacity: v.capacity,
            max_weight: v.max_weight,
            available: v.available,
            owner_id: v.owner_id,
        }
    }
}

/// A user as printed (never with a password).
#[derive(Debug, Serialize)]
pub struct UserView {
    id: String,
    name: String,
    company: String,
    email: String,
}

impl From<user::User> for UserView {
    fn from(u: user::User) -> Self {
        Self {
            id: u.id,
            name: u.name,
            company: u.company,
            email: u.email,
        }
    }
}

/// One registered instance and its health, for `shippy status`.
#[derive(Debug, Serialize)]
pub struct InstanceView {
    /// Service name.
    pub service: String,
    /// Instance id.
    pub id: String,
    /// Address.
    pub address: String,
    /// Version.
    pub version: String,
    /// Health status.
    pub health: String,
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_header(header.to_vec());
    table
}

fn json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot render JSON: {e}"),
    }
}

/// Prints consignments; `title` goes above the table.
pub fn consignments(format: Output, title: &str, items: Vec<ConsignmentView>) {
    if format == Output::Json {
        return json(&items);
    }
    println!("{title}");
    let mut t = table(&["id", "description", "weight", "containers", "vessel_id"]);
    for c in &items {
        t.add_row(vec![
            c.id.clone(),
            c.description.clone(),
            c.weight.to_string(),
            c.containers.len().to_string(),
            c.vessel_id.clone(),
        ]);
    }
    println!("{t}");
    if let [single] = items.as_slice() {
        let mut t = table(&["container", "customer_id", "origin", "user_id"]);
        for k in &single.containers {
            t.add_row(vec![
                k.id.clone(),
                k.customer_id.clone(),
                k.origin.clone(),
                k.user_id.clone(),
            ]);
        }
        println!("{t}");
    }
}

/// Prints vessels.
pub fn vessels(format: Output, items: Vec<VesselView>) {
    if format == Output::Json {
        return json(&items);
    }
    let mut t = table(&[
        "id",
        "name",
        "capacity",
        "max_weight",
        "available",
        "owner_id",
    ]);
    for v in &items {
        t.add_row(vec![
            v.id.clone(),
            v.name.clone(),
            v.capacity.to_string(),
            v.max_weight.to_string(),
            v.available.to_string(),
            v.owner_id.clone(),
        ]);
    }
    println!("{t}");
}

/// Prints users.
pub fn users(format: Output, items: Vec<UserView>) {
    if format == Output::Json {
        return json(&items);
    }
    let mut t = table(&["id", "name", "company", "email"]);
    for u in &items {
        t.add_row(vec![
            u.id.clone(),
            u.name.clone(),
            u.company.clone(),
            u.email.clone(),
        ]);
    }
    println!("{t}");
}

/// Prints instances.
pub fn instances(format: Output, items: &[InstanceView]) {
    if format == Output::Json {
        return json(items);
    }
    let mut t = table(&["service", "instance", "address", "version", "health"]);
    for i in items {
        t.add_row(vec![
            i.service.clone(),
            i.id.clone(),
            i.address.clone(),
            i.version.clone(),
            i.health.clone(),
        ]);
    }
    println!("{t}");
}

/// Prints a message for people, or a JSON object for scripts.
pub fn message(format: Output, text: &str, value: &serde_json::Value) {
    if format == Output::Json {
        json(value)
    } else {
        println!("{text}")
    }
}
