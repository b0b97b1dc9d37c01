//! `shippy-user`: the user service. Everything lives in the library; see [`shippy_user`].

fn main() -> std::process::ExitCode {
    shippy_shared::runtime::main::<shippy_user::UserApp>()
}
