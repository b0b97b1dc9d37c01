//! `shippy-vessel`: the vessel service. Everything lives in the library; see [`shippy_vessel`].

fn main() -> std::process::ExitCode {
    shippy_shared::runtime::main::<shippy_vessel::VesselApp>()
}
