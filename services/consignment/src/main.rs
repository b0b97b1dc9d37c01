//! `shippy-consignment`: the consignment service. Everything lives in the library; see
//! [`shippy_consignment`].

fn main() -> std::process::ExitCode {
    shippy_shared::runtime::main::<shippy_consignment::ConsignmentApp>()
}
