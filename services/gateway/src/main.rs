//! `shippy-gateway`: the REST/JSON gateway and web console. Everything lives in the library; see
//! [`shippy_gateway`].

fn main() -> std::process::ExitCode {
    shippy_shared::runtime::main::<shippy_gateway::GatewayApp>()
}
