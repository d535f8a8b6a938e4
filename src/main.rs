//! The `ms` binary: the controller and its command-line client (see `ms --help`).

fn main() -> std::process::ExitCode {
    microscaler::cli::main()
}
