//! The `vigie` binary.

fn main() -> std::process::ExitCode {
    vigie::cli::main()
}
